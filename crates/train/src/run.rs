//! A training run: epochs of [`train_epoch`], an evaluation after each, a JSON line per epoch in
//! `log.txt` with the reference's field names, a checkpoint per epoch (the last
//! `keep_checkpoints` kept) and `checkpoint-best` on validation top-1, and resuming from the
//! latest complete checkpoint so that an interrupted run ends with exactly the weights of an
//! uninterrupted one.

use crate::checkpoint::{self, CheckpointError, TrainerState};
use crate::epoch::{train_epoch, BatchProgress, EpochOptions, Schedules, TrainError};
use crate::optim::AdamW;
use candle_core::Var;
use illama_data::mix::Mixup;
use illama_data::train::TrainTransform;
use illama_data::{
    eval_batches, load_batches, Dataset, EpochSampler, EvalTransform, LoaderOptions, Plan,
};
use illama_formats::{AtomicFile, OutputPolicy};
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
    #[error(transparent)]
    Format(#[from] illama_formats::FormatError),
    /// The output folder would hold, or sit inside, one of the run's inputs.
    #[error("{}: the output folder would hold or sit inside the input {}; choose another output folder", dir.display(), input.display())]
    OutputOverlapsInput { dir: PathBuf, input: PathBuf },
    /// The output folder holds a file with a name the run writes, which this tool did not write.
    #[error("{}: holds {file}, which this tool did not write (no {RUN_MARKER} file); choose another output folder", dir.display())]
    OutputNotOurs { dir: PathBuf, file: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a run starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// From the latest complete checkpoint in the output folder, if there is one.
    Auto,
    /// From this checkpoint.
    From(PathBuf),
    /// From the model's current weights, whatever the output folder holds.
    Never,
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
    /// Epoch checkpoints kept (the older ones are removed); 0 keeps all.
    pub keep_checkpoints: usize,
    /// Evaluate on the validation set after each epoch (and keep `checkpoint-best`).
    pub eval: bool,
    /// Also evaluate the EMA weights each epoch (`--model-ema-eval`).
    pub eval_ema: bool,
    /// Also write each checkpoint's model weights as `.pth` in the reference's layout
    /// (`{'model': state_dict, 'epoch': N}`).
    pub pth_copies: bool,
    pub resume: Resume,
    /// What the run reads (images, initial weights): never written over, never a parent of the
    /// output folder.
    pub inputs: Vec<PathBuf>,
    pub loader: LoaderOptions,
    /// The arguments to record in checkpoints.
    pub args: serde_json::Value,
}

/// One epoch's line of `log.txt`, with the reference's field names (`train_*` are means over the
/// epoch's batches; `train_drop_path` only with stochastic depth, `train_class_acc` only without
/// Mixup, `test_*` only when evaluating, `test_*_ema` only when evaluating the EMA weights).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochLog {
    pub train_lr: f64,
    pub train_min_lr: f64,
    pub train_loss: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_class_acc: Option<f64>,
    pub train_weight_decay: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_drop_path: Option<f64>,
    pub train_soft_mask_rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_acc1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_acc5: Option<f64>,
    pub epoch: u64,
    pub n_parameters: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_loss_ema: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_acc1_ema: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_acc5_ema: Option<f64>,
}

/// What a run reports as it goes. Every method has a do-nothing default.
pub trait Observer {
    /// The run continues from `from`, at the start of epoch `state.epoch`.
    fn resumed(&mut self, _from: &Path, _state: &TrainerState) {}
    fn epoch_started(&mut self, _epoch: u64, _batches: usize) {}
    fn batch(&mut self, _epoch: u64, _progress: &BatchProgress) {}
    fn evaluating(&mut self, _epoch: u64) {}
    /// An epoch is done: its log line, and the files written for it.
    fn epoch_done(&mut self, _log: &EpochLog, _written: &[PathBuf]) {}
}

/// Observes nothing.
impl Observer for () {}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// The log lines of the epochs this call ran.
    pub logs: Vec<EpochLog>,
    /// The checkpoint the run resumed from, if any.
    pub resumed_from: Option<PathBuf>,
    /// Best validation top-1 over the whole run (resumed runs included).
    pub best_acc1: Option<f64>,
    /// The last epoch checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
}

/// The latest complete checkpoint in `dir` (`checkpoint-<epoch>.safetensors`), if any.
/// Checkpoints are written atomically, so any that exists is complete.
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

/// The log lines of `log.txt` in `dir` (lines that do not parse are skipped).
pub fn read_log(dir: &Path) -> Vec<EpochLog> {
    std::fs::read_to_string(dir.join(LOG))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

const LOG: &str = "log.txt";

/// The file that marks a folder as a training run's output: the run writes only into folders
/// it made or marked, so that it never appends to, rewrites or replaces files of another tool.
pub const RUN_MARKER: &str = ".illama-tools-run";

/// Makes `dir` a run's output folder, or checks that it is one. Refused: a folder that holds
/// (or is inside) one of `inputs` (the images, the initial weights), and an unmarked folder that
/// already holds a file with a name the run writes (`log.txt`, `curves.svg`, `checkpoint-*`).
pub fn prepare_output_dir(dir: &Path, inputs: &[&Path]) -> Result<(), RunError> {
    let io = |source| RunError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let here = std::fs::canonicalize(dir).map_err(io)?;
    for input in inputs {
        let Ok(input) = std::fs::canonicalize(input) else {
            continue;
        };
        if input.is_dir() && (here.starts_with(&input) || input.starts_with(&here)) {
            return Err(RunError::OutputOverlapsInput {
                dir: dir.to_path_buf(),
                input,
            });
        }
    }
    if here.join(RUN_MARKER).is_file() {
        return Ok(());
    }
    let ours = |name: &str| {
        name == LOG
            || name == "curves.svg"
            || (name.starts_with("checkpoint-")
                && (name.ends_with(".safetensors") || name.ends_with(".pth")))
    };
    for e in std::fs::read_dir(&here).map_err(io)?.flatten() {
        if let Some(name) = e.file_name().to_str().filter(|n| ours(n)) {
            return Err(RunError::OutputNotOurs {
                dir: dir.to_path_buf(),
                file: name.to_string(),
            });
        }
    }
    std::fs::write(
        here.join(RUN_MARKER),
        "This folder holds the output of `illama-tools finetune`.\n",
    )
    .map_err(io)
}

/// Runs (or resumes) training. `ema` holds EMA copies of the parameters when EMA is on.
///
/// Per epoch, in this order: train; evaluate; append the line to `log.txt`; write
/// `checkpoint-<epoch>` (and `checkpoint-best` on a new best top-1); remove the checkpoint that
/// fell out of the kept window; redraw `curves.svg`. A run killed anywhere in between resumes
/// from the last checkpoint written, and drops the log lines of epochs after it.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &Illama,
    opt: &mut AdamW,
    mut ema: Option<&mut [Var]>,
    train: &Dataset,
    val: Option<&Dataset>,
    transform: &TrainTransform,
    mixup: Option<&Mixup>,
    schedules: &Schedules,
    o: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<RunSummary, RunError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Io { path, source }
    };
    let inputs: Vec<&Path> = o.inputs.iter().map(PathBuf::as_path).collect();
    prepare_output_dir(&o.output_dir, &inputs)?;
    let sampler = EpochSampler::new(train.samples.len(), o.batch_size, o.seed)?;
    let steps_per_epoch = (sampler.batches_per_epoch() / o.update_freq.max(1)) as u64;
    let mut summary = RunSummary::default();
    let mut first_epoch = 0;
    let (mut best, mut best_ema) = (0.0f64, 0.0f64);
    let from = match &o.resume {
        Resume::Auto => latest_checkpoint(&o.output_dir).map(|(_, p)| p),
        Resume::From(p) => Some(p.clone()),
        Resume::Never => None,
    };
    if let Some(path) = from {
        let names: Vec<(String, Var)> = ema_names(opt, ema.as_deref());
        let state = checkpoint::load(&path, opt, ema.is_some().then_some(names.as_slice()))?;
        first_epoch = state.epoch;
        best = state.best_acc1.unwrap_or(0.0);
        best_ema = state.best_acc1_ema.unwrap_or(0.0);
        summary.best_acc1 = state.best_acc1;
        observer.resumed(&path, &state);
        summary.resumed_from = Some(path);
    }
    // Lines of epochs after the checkpoint (a run killed between its log line and its
    // checkpoint) are dropped: the resumed run writes them again.
    let mut history: Vec<EpochLog> = read_log(&o.output_dir)
        .into_iter()
        .filter(|l| l.epoch < first_epoch)
        .collect();
    rewrite_log(&o.output_dir, &history)?;
    let n_parameters = opt.params.iter().map(|p| p.var.elem_count()).sum();
    let eval_t = EvalTransform::new(transform.size())?;
    // Checkpoints of earlier epochs are replaced (a resumed run rewrites them); inputs never.
    let policy = OutputPolicy::new(true).protect(&o.inputs);
    for epoch in first_epoch..o.epochs {
        // Whole optimiser steps only, as the reference skips the batches of an incomplete step.
        let mut plan = Plan::epoch(&sampler, epoch);
        plan.batches
            .truncate(steps_per_epoch as usize * o.update_freq.max(1));
        let batches_in_epoch = plan.batches.len();
        observer.epoch_started(epoch, batches_in_epoch);
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
                seed: o.seed,
                batches: batches_in_epoch,
            },
            &mut |p| observer.batch(epoch, p),
        )?;
        let evaluate = |val: &Dataset| -> Result<crate::EvalReport, RunError> {
            Ok(crate::evaluate(
                model,
                eval_batches(val, eval_t, o.loader)?,
                transform.size(),
                |_, _| {},
            )?)
        };
        let eval = match val {
            Some(val) if o.eval => {
                observer.evaluating(epoch);
                Some(evaluate(val)?)
            }
            _ => None,
        };
        let ema_eval = match (val, ema.as_deref()) {
            (Some(val), Some(ema)) if o.eval && o.eval_ema => {
                Some(evaluate_with(opt, ema, || evaluate(val))?)
            }
            _ => None,
        };
        let line = EpochLog {
            train_lr: stats.lr,
            train_min_lr: stats.lr,
            train_loss: stats.loss,
            train_class_acc: stats.class_acc,
            train_weight_decay: stats.weight_decay,
            train_drop_path: stats.drop_path,
            train_soft_mask_rate: stats.soft_mask,
            test_loss: eval.as_ref().map(|e| e.loss),
            test_acc1: eval.as_ref().map(|e| e.top1),
            test_acc5: eval.as_ref().map(|e| e.top5),
            epoch,
            n_parameters,
            test_loss_ema: ema_eval.as_ref().map(|e| e.loss),
            test_acc1_ema: ema_eval.as_ref().map(|e| e.top1),
            test_acc5_ema: ema_eval.as_ref().map(|e| e.top5),
        };
        // The reference keeps `checkpoint-best` on a strictly better top-1.
        let new_best = eval.as_ref().is_some_and(|e| e.top1 > best);
        let new_best_ema = ema_eval.as_ref().is_some_and(|e| e.top1 > best_ema);
        if let Some(e) = &eval {
            best = best.max(e.top1);
            summary.best_acc1 = Some(best);
        }
        if let Some(e) = &ema_eval {
            best_ema = best_ema.max(e.top1);
        }
        append_log(&o.output_dir, &line)?;
        let state = TrainerState {
            epoch: epoch + 1,
            step: (epoch + 1) * steps_per_epoch,
            seed: o.seed,
            args: o.args.clone(),
            best_acc1: summary.best_acc1,
            best_acc1_ema: ema_eval.is_some().then_some(best_ema),
        };
        let names = ema_names(opt, ema.as_deref());
        let ema_ref = ema.is_some().then_some(names.as_slice());
        let mut written = Vec::new();
        let mut save = |stem: &str| -> Result<(), RunError> {
            let path = o.output_dir.join(format!("{stem}.safetensors"));
            checkpoint::save(&path, &policy, opt, ema_ref, &state)?;
            written.push(path);
            if o.pth_copies {
                let path = o.output_dir.join(format!("{stem}.pth"));
                checkpoint::save_model_pth(&path, &policy, opt, epoch)?;
                written.push(path);
            }
            Ok(())
        };
        save(&format!("checkpoint-{epoch}"))?;
        if new_best {
            save("checkpoint-best")?;
        }
        if new_best_ema {
            save("checkpoint-best-ema")?;
        }
        summary.last_checkpoint = written.first().cloned();
        if o.keep_checkpoints > 0 && epoch >= o.keep_checkpoints as u64 {
            let old = epoch - o.keep_checkpoints as u64;
            for ext in ["safetensors", "pth"] {
                let _ = std::fs::remove_file(o.output_dir.join(format!("checkpoint-{old}.{ext}")));
            }
        }
        history.push(line.clone());
        let svg = o.output_dir.join("curves.svg");
        let mut file = AtomicFile::create(&svg, &policy)?;
        file.file()
            .write_all(crate::curves::svg(&history).as_bytes())
            .map_err(io(&svg))?;
        file.commit()?;
        written.push(svg);
        observer.epoch_done(&line, &written);
        summary.logs.push(line);
    }
    Ok(summary)
}

fn append_log(dir: &Path, line: &EpochLog) -> Result<(), RunError> {
    let path = dir.join(LOG);
    let io = |source| RunError::Io {
        path: path.clone(),
        source,
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    let text = serde_json::to_string(line).expect("a log line serialises");
    writeln!(log, "{text}").map_err(io)
}

/// Replaces `log.txt` with `lines` (atomically), when it holds anything else.
fn rewrite_log(dir: &Path, lines: &[EpochLog]) -> Result<(), RunError> {
    let path = dir.join(LOG);
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let text: String = lines
        .iter()
        .map(|l| serde_json::to_string(l).expect("a log line serialises") + "\n")
        .collect();
    if existing == text || (existing.is_empty() && lines.is_empty()) {
        return Ok(());
    }
    let mut file = AtomicFile::create(&path, &OutputPolicy::new(true))?;
    file.file()
        .write_all(text.as_bytes())
        .map_err(|source| RunError::Io {
            path: path.clone(),
            source,
        })?;
    file.commit()?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_folders_over_inputs_or_with_foreign_files_are_refused_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir(&images).unwrap();
        let inside = images.join("run");
        match prepare_output_dir(&inside, &[&images]) {
            Err(RunError::OutputOverlapsInput { input, .. }) => {
                assert_eq!(input, std::fs::canonicalize(&images).unwrap())
            }
            other => panic!("{other:?}"),
        }
        let foreign = dir.path().join("old");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("log.txt"), "{}").unwrap();
        match prepare_output_dir(&foreign, &[]) {
            Err(RunError::OutputNotOurs { file, .. }) => assert_eq!(file, "log.txt"),
            other => panic!("{other:?}"),
        }
        // A fresh folder is marked, and then accepted again with files of ours in it.
        let ours = dir.path().join("ours");
        prepare_output_dir(&ours, &[&images]).unwrap();
        std::fs::write(ours.join("log.txt"), "{}").unwrap();
        prepare_output_dir(&ours, &[&images]).unwrap();
    }
}
