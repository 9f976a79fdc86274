//! A training run: epochs of [`train_epoch`], an evaluation after each, a JSON line per epoch in
//! `log.txt` with the reference's field names, a checkpoint per epoch (the last
//! `keep_checkpoints` kept) and `checkpoint-best` on validation top-1, and resuming from the
//! latest complete checkpoint so that an interrupted run ends with exactly the weights of an
//! uninterrupted one.

use crate::checkpoint::{self, CheckpointError, TrainerState};
use crate::epoch::{train_epoch, EpochOptions, Schedules, TrainError};
use crate::optim::AdamW;
use candle_core::Var;
use illama_data::mix::Mixup;
use illama_data::train::TrainTransform;
use illama_data::{
    eval_batches, load_batches, Dataset, EpochSampler, EvalTransform, LoaderOptions, Plan,
};
use illama_formats::OutputPolicy;
use illama_model::Illama;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Eval(#[from] crate::EvalError),
    #[error(transparent)]
    Loader(#[from] illama_data::LoaderError),
    #[error(transparent)]
    Transform(#[from] illama_data::TransformError),
    #[error(transparent)]
    Sampler(#[from] illama_data::SamplerError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Everything a run needs besides the model, its optimiser and the data.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub output_dir: PathBuf,
    pub epochs: u64,
    pub batch_size: usize,
    pub update_freq: usize,
    pub seed: u64,
    pub smoothing: f64,
    pub clip_grad: Option<f64>,
    pub ema_decay: f64,
    pub keep_checkpoints: usize,
    /// Also evaluate the EMA weights each epoch (`--model-ema-eval`).
    pub eval_ema: bool,
    pub loader: LoaderOptions,
    /// The arguments to record in checkpoints.
    pub args: serde_json::Value,
}

/// One epoch's line of `log.txt`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochLog {
    pub train_lr: f64,
    pub train_min_lr: f64,
    pub train_loss: f64,
    pub train_weight_decay: f64,
    pub train_soft_mask_rate: f64,
    pub test_loss: f64,
    pub test_acc1: f64,
    pub test_acc5: f64,
    pub epoch: u64,
    pub n_parameters: usize,
    /// The EMA weights' numbers, when they are evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_loss_ema: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_acc1_ema: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_acc5_ema: Option<f64>,
}

/// The latest complete checkpoint in `dir` (`checkpoint-<epoch>.safetensors`), if any.
pub fn latest_checkpoint(dir: &Path) -> Option<(u64, PathBuf)> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let epoch = name
                .strip_prefix("checkpoint-")?
                .strip_suffix(".safetensors")?
                .parse::<u64>()
                .ok()?;
            Some((epoch, e.path()))
        })
        .max_by_key(|(e, _)| *e)
}

/// Runs (or resumes) training. `ema` holds EMA copies of the parameters when EMA is on.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &Illama,
    opt: &mut AdamW,
    mut ema: Option<&mut [Var]>,
    train: &Dataset,
    val: &Dataset,
    transform: &TrainTransform,
    mixup: Option<&Mixup>,
    schedules: &Schedules,
    o: &RunOptions,
    mut on_epoch: impl FnMut(&EpochLog),
) -> Result<Vec<EpochLog>, RunError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Io { path, source }
    };
    std::fs::create_dir_all(&o.output_dir).map_err(io(&o.output_dir))?;
    let sampler = EpochSampler::new(train.samples.len(), o.batch_size, o.seed)?;
    let steps_per_epoch = (sampler.batches_per_epoch() / o.update_freq.max(1)) as u64;
    let mut first_epoch = 0;
    let mut best = f64::MIN;
    if let Some((_, path)) = latest_checkpoint(&o.output_dir) {
        let names: Vec<(String, Var)> = ema_names(opt, ema.as_deref());
        let state = checkpoint::load(&path, opt, ema.is_some().then_some(names.as_slice()))?;
        first_epoch = state.epoch;
        best = state.best_acc1.unwrap_or(f64::MIN);
    }
    let n_parameters = opt.params.iter().map(|p| p.var.elem_count()).sum();
    let eval_t = EvalTransform::new(transform.size())?;
    let mut logs = Vec::new();
    for epoch in first_epoch..o.epochs {
        // Whole optimiser steps only, as the reference skips the batches of an incomplete step.
        let mut plan = Plan::epoch(&sampler, epoch);
        plan.batches
            .truncate(steps_per_epoch as usize * o.update_freq.max(1));
        let batches = load_batches(train, plan, transform.clone(), mixup.cloned(), o.loader)?;
        let stats = train_epoch(
            model,
            opt,
            ema.as_deref_mut(),
            batches,
            schedules,
            &EpochOptions {
                epoch,
                start_step: epoch * steps_per_epoch,
                update_freq: o.update_freq,
                smoothing: o.smoothing,
                clip_grad: o.clip_grad,
                ema_decay: o.ema_decay,
            },
        )?;
        let eval = crate::evaluate(
            model,
            eval_batches(val, eval_t, o.loader)?,
            transform.size(),
            |_, _| {},
        )?;
        let ema_eval = match ema.as_deref() {
            Some(ema) if o.eval_ema => Some(evaluate_with(opt, ema, || {
                crate::evaluate(
                    model,
                    eval_batches(val, eval_t, o.loader)?,
                    transform.size(),
                    |_, _| {},
                )
                .map_err(RunError::from)
            })?),
            _ => None,
        };
        let line = EpochLog {
            train_lr: stats.lr,
            train_min_lr: stats.lr,
            train_loss: stats.loss,
            train_weight_decay: stats.weight_decay,
            train_soft_mask_rate: stats.soft_mask,
            test_loss: eval.loss,
            test_acc1: eval.top1,
            test_acc5: eval.top5,
            epoch,
            n_parameters,
            test_loss_ema: ema_eval.as_ref().map(|e| e.loss),
            test_acc1_ema: ema_eval.as_ref().map(|e| e.top1),
            test_acc5_ema: ema_eval.as_ref().map(|e| e.top5),
        };
        best = best.max(eval.top1);
        let state = TrainerState {
            epoch: epoch + 1,
            step: (epoch + 1) * steps_per_epoch,
            seed: o.seed,
            args: o.args.clone(),
            best_acc1: Some(best),
        };
        let names = ema_names(opt, ema.as_deref());
        let ema_ref = ema.is_some().then_some(names.as_slice());
        let force = OutputPolicy::new(true);
        let ckpt = o.output_dir.join(format!("checkpoint-{epoch}.safetensors"));
        checkpoint::save(&ckpt, &force, opt, ema_ref, &state)?;
        if eval.top1 >= best {
            let best_path = o.output_dir.join("checkpoint-best.safetensors");
            checkpoint::save(&best_path, &force, opt, ema_ref, &state)?;
        }
        if o.keep_checkpoints > 0 && epoch >= o.keep_checkpoints as u64 {
            let old = epoch - o.keep_checkpoints as u64;
            let _ =
                std::fs::remove_file(o.output_dir.join(format!("checkpoint-{old}.safetensors")));
        }
        let log_path = o.output_dir.join("log.txt");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        writeln!(log, "{}", serde_json::to_string(&line).expect("serialises"))
            .map_err(io(&log_path))?;
        on_epoch(&line);
        logs.push(line);
    }
    Ok(logs)
}

/// Runs `f` with the model's parameters holding the EMA weights, then puts the trained weights
/// back (also when `f` fails).
fn evaluate_with<T>(
    opt: &AdamW,
    ema: &[Var],
    f: impl FnOnce() -> Result<T, RunError>,
) -> Result<T, RunError> {
    let saved: Vec<candle_core::Tensor> = opt
        .params
        .iter()
        .map(|p| p.var.as_tensor().copy())
        .collect::<Result<_, _>>()
        .map_err(|e| RunError::Train(e.into()))?;
    let swap = |from: &[candle_core::Tensor]| -> Result<(), RunError> {
        for (p, t) in opt.params.iter().zip(from) {
            p.var.set(t).map_err(|e| RunError::Train(e.into()))?;
        }
        Ok(())
    };
    let ema_values: Vec<candle_core::Tensor> = ema
        .iter()
        .map(|v| v.as_tensor().copy())
        .collect::<Result<_, _>>()
        .map_err(|e| RunError::Train(e.into()))?;
    swap(&ema_values)?;
    let result = f();
    swap(&saved)?;
    result
}

/// The EMA variables paired with the parameters' names, for checkpoints.
fn ema_names(opt: &AdamW, ema: Option<&[Var]>) -> Vec<(String, Var)> {
    match ema {
        Some(vars) => opt
            .params
            .iter()
            .zip(vars)
            .map(|(p, v)| (p.name.clone(), v.clone()))
            .collect(),
        None => Vec::new(),
    }
}
