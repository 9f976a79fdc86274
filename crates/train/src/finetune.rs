//! Fine-tuning (or training from scratch) with the paper's recipe, from a [`Recipe`] to a
//! finished run: the datasets, the network and its initial weights (`init`, the reference's
//! `--finetune`), the optimiser and its groups, every per-step schedule, Mixup or label
//! smoothing, EMA, and then [`crate::run::run`]. Also the evaluation-only mode (`--eval`).

use crate::epoch::Schedules;
use crate::optim::{AdamW, AdamWConfig};
use crate::run::{latest_checkpoint, run, Observer, Resume, RunError, RunOptions, RunSummary};
use crate::schedule::{self, DropMode, EarlySchedule, MaskMode, ScheduleError};
use candle_core::{Device, Var};
use illama_arch::IllamaConfig;
use illama_data::mix::Mixup;
use illama_data::train::TrainTransform;
use illama_data::{eval_batches, Dataset, EvalTransform, LoaderOptions};
use illama_model::{init_from, Illama, InitReport, Precision};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Dataset(#[from] illama_data::DatasetError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(transparent)]
    Mix(#[from] illama_data::mix::MixError),
    #[error(transparent)]
    Transform(#[from] illama_data::TransformError),
    #[error(transparent)]
    Load(#[from] illama_model::LoadError),
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    #[error(transparent)]
    Arch(#[from] illama_arch::ArchError),
    /// A setting outside what the recipe can run.
    #[error("{name} = {value}: {rule}")]
    Setting {
        name: &'static str,
        value: f64,
        rule: &'static str,
    },
    #[error("{dir}: {images} training images cannot fill one optimiser step of {batch} x {update_freq} images")]
    TooFewImages {
        dir: PathBuf,
        images: usize,
        batch: usize,
        update_freq: usize,
    },
    #[error("evaluation needs validation images")]
    NoValidation,
    /// A checkpoint to evaluate that does not hold this model's weights.
    #[error("{path}: {why}")]
    Checkpoint { path: PathBuf, why: String },
}

fn setting(name: &'static str, value: f64, rule: &'static str) -> Result<(), FinetuneError> {
    Err(FinetuneError::Setting { name, value, rule })
}

/// Every setting of a run. Defaults are the reference's `main_soft.py` defaults.
#[derive(Debug, Clone, Serialize)]
pub struct Recipe {
    pub train_dir: PathBuf,
    /// Validation images; `None` trains without evaluation.
    pub val_dir: Option<PathBuf>,
    /// The architecture; `num_classes` and `img_size` are set from the data and `input_size`.
    pub model: IllamaConfig,
    /// Initial weights (non-strict, see [`illama_model::init_from`]) and the entry to read.
    pub init: Option<PathBuf>,
    pub init_key: Option<String>,
    pub output_dir: PathBuf,
    pub epochs: usize,
    pub batch_size: usize,
    pub update_freq: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_epochs: usize,
    pub warmup_steps: Option<usize>,
    pub weight_decay: f64,
    pub weight_decay_end: Option<f64>,
    pub clip_grad: Option<f64>,
    pub drop_path: f64,
    pub drop_mode: DropMode,
    pub drop_schedule: EarlySchedule,
    pub cutoff_epoch: usize,
    pub soft_mask: f64,
    pub mask_mode: MaskMode,
    pub mask_schedule: EarlySchedule,
    pub cutoff_soft: usize,
    pub aa: String,
    pub reprob: f64,
    pub input_size: usize,
    pub mixup: f64,
    pub cutmix: f64,
    pub mixup_prob: f64,
    pub mixup_switch_prob: f64,
    pub smoothing: f64,
    pub model_ema: bool,
    pub model_ema_decay: f64,
    pub model_ema_eval: bool,
    pub seed: u64,
    pub workers: usize,
    #[serde(skip)]
    pub resume: Resume,
    pub save_ckpt_num: usize,
    /// Also write `.pth` copies of the model weights.
    pub pth_copies: bool,
    /// f32, or bf16 mixed precision (f32 weights and optimiser, bf16 matmuls).
    pub precision: Precision,
}

impl Recipe {
    /// The reference's defaults for the given data, architecture and output folder.
    pub fn new(train_dir: PathBuf, val_dir: Option<PathBuf>, model: IllamaConfig) -> Recipe {
        Recipe {
            train_dir,
            val_dir,
            model,
            init: None,
            init_key: None,
            output_dir: PathBuf::from("output"),
            epochs: 300,
            batch_size: 64,
            update_freq: 1,
            lr: 4e-3,
            min_lr: 1e-6,
            warmup_epochs: 50,
            warmup_steps: None,
            weight_decay: 0.05,
            weight_decay_end: None,
            clip_grad: None,
            drop_path: 0.0,
            drop_mode: DropMode::Standard,
            drop_schedule: EarlySchedule::Constant,
            cutoff_epoch: 0,
            soft_mask: 1.0,
            mask_mode: MaskMode::Standard,
            mask_schedule: EarlySchedule::Constant,
            cutoff_soft: 0,
            aa: "rand-m9-mstd0.5-inc1".into(),
            reprob: 0.25,
            input_size: 224,
            mixup: 0.8,
            cutmix: 1.0,
            mixup_prob: 1.0,
            mixup_switch_prob: 0.5,
            smoothing: 0.1,
            model_ema: false,
            model_ema_decay: 0.9999,
            model_ema_eval: false,
            seed: 0,
            workers: 1,
            resume: Resume::Auto,
            save_ckpt_num: 3,
            pth_copies: true,
            precision: Precision::F32,
        }
    }

    /// Whether the reference would mix batches (`mixup > 0 or cutmix > 0`).
    pub fn mixup_active(&self) -> bool {
        self.mixup > 0.0 || self.cutmix > 0.0
    }
}

/// What was set up before the first step.
#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    pub model: IllamaConfig,
    pub train_images: usize,
    pub val_images: Option<usize>,
    pub classes: usize,
    pub n_parameters: usize,
    /// Optimiser steps per epoch (`len(train) // (batch_size * update_freq)`).
    pub steps_per_epoch: usize,
    /// What `init` loaded, when given.
    pub init: Option<InitReport>,
    pub mixup: bool,
}

/// A network, its optimiser and EMA copies, built and initialised as `recipe` says.
pub struct Trainee {
    pub model: Illama,
    pub opt: AdamW,
    pub ema: Option<Vec<Var>>,
    pub init: Option<InitReport>,
}

/// Builds the network for `config` on `device` (seeded init), loads `recipe.init` into it, and
/// makes its optimiser and (with `model_ema`) EMA copies of the initial weights.
pub fn trainee(
    recipe: &Recipe,
    config: IllamaConfig,
    device: &Device,
) -> Result<Trainee, FinetuneError> {
    let (model, named) = Illama::trainable(config, device, recipe.seed)?;
    let model = model.with_precision(recipe.precision);
    let init = match &recipe.init {
        Some(path) => {
            let vars: HashMap<String, Var> = named.iter().cloned().collect();
            Some(init_from(path, recipe.init_key.as_deref(), &vars)?)
        }
        None => None,
    };
    let opt = AdamW::new(named, AdamWConfig::default())?;
    // Copies, not `Var::from_tensor` of the parameters themselves: that would share storage.
    let ema = recipe
        .model_ema
        .then(|| {
            opt.params
                .iter()
                .map(|p| Var::from_tensor(&p.var.as_tensor().copy()?))
                .collect::<candle_core::Result<Vec<_>>>()
        })
        .transpose()?;
    Ok(Trainee {
        model,
        opt,
        ema,
        init,
    })
}

/// The per-step schedules of a run with `steps_per_epoch` optimiser steps per epoch.
pub fn schedules(recipe: &Recipe, steps_per_epoch: usize) -> Result<Schedules, FinetuneError> {
    let r = recipe;
    let lr = schedule::cosine(
        r.lr,
        r.min_lr,
        r.epochs,
        steps_per_epoch,
        r.warmup_epochs,
        0.0,
        r.warmup_steps,
    )?;
    let weight_decay = schedule::cosine(
        r.weight_decay,
        r.weight_decay_end.unwrap_or(r.weight_decay),
        r.epochs,
        steps_per_epoch,
        0,
        0.0,
        None,
    )?;
    let soft_mask = schedule::soft_mask(
        r.soft_mask,
        r.epochs,
        steps_per_epoch,
        r.cutoff_soft,
        r.mask_mode,
        r.mask_schedule,
    )?;
    // As the reference: a drop-path schedule only when drop path is on.
    let drop_path = if r.drop_path > 0.0 {
        schedule::drop_rate(
            r.drop_path,
            r.epochs,
            steps_per_epoch,
            r.cutoff_epoch,
            r.drop_mode,
            r.drop_schedule,
        )?
    } else {
        Vec::new()
    };
    Ok(Schedules {
        lr,
        weight_decay,
        soft_mask,
        drop_path,
    })
}

fn check(recipe: &Recipe) -> Result<(), FinetuneError> {
    let r = recipe;
    if r.epochs == 0 || r.batch_size == 0 || r.update_freq == 0 {
        let (name, value) = [("epochs", r.epochs), ("batch_size", r.batch_size)]
            .into_iter()
            .find(|(_, v)| *v == 0)
            .unwrap_or(("update_freq", r.update_freq));
        return setting(name, value as f64, "must be at least 1");
    }
    for (name, v) in [
        ("lr", r.lr),
        ("min_lr", r.min_lr),
        ("weight_decay", r.weight_decay),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return setting(name, v, "must be a finite number >= 0");
        }
    }
    for (name, v) in [
        ("drop_path", r.drop_path),
        ("soft_mask", r.soft_mask),
        ("smoothing", r.smoothing),
        ("model_ema_decay", r.model_ema_decay),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return setting(name, v, "must be in [0, 1]");
        }
    }
    if r.drop_path >= 1.0 {
        return setting(
            "drop_path",
            r.drop_path,
            "1 would drop every residual branch",
        );
    }
    if let Some(c) = r.clip_grad {
        if !(c.is_finite() && c > 0.0) {
            return setting("clip_grad", c, "must be a number above 0");
        }
    }
    Ok(())
}

/// The datasets of a run: train, and val unless evaluation is off.
pub fn datasets(recipe: &Recipe) -> Result<(Dataset, Option<Dataset>), FinetuneError> {
    let train = Dataset::image_folder(&recipe.train_dir)?;
    let val = match &recipe.val_dir {
        Some(dir) => {
            let val = Dataset::image_folder(dir)?;
            train.check_same_classes(&val)?;
            Some(val)
        }
        None => None,
    };
    Ok((train, val))
}

/// Trains as `recipe` says on `device`, resuming as `recipe.resume` says.
pub fn finetune(
    recipe: &Recipe,
    device: &Device,
    observer: &mut dyn FinetuneObserver,
) -> Result<RunSummary, FinetuneError> {
    check(recipe)?;
    let inputs: Vec<&Path> = [
        Some(&recipe.train_dir),
        recipe.val_dir.as_ref(),
        recipe.init.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(PathBuf::as_path)
    .collect();
    // A typo in the output folder fails now, not after listing a million images.
    crate::run::prepare_output_dir(&recipe.output_dir, &inputs)?;
    let (train, val) = datasets(recipe)?;
    let config = IllamaConfig {
        num_classes: train.classes.len(),
        img_size: recipe.input_size,
        ..recipe.model
    };
    config.validate()?;
    let per_step = recipe.batch_size * recipe.update_freq;
    let steps_per_epoch = train.samples.len() / per_step;
    if steps_per_epoch == 0 {
        return Err(FinetuneError::TooFewImages {
            dir: recipe.train_dir.clone(),
            images: train.samples.len(),
            batch: recipe.batch_size,
            update_freq: recipe.update_freq,
        });
    }
    let schedules = schedules(recipe, steps_per_epoch)?;
    let mixup = if recipe.mixup_active() {
        Some(Mixup::new(
            recipe.mixup,
            recipe.cutmix,
            recipe.mixup_prob,
            recipe.mixup_switch_prob,
            recipe.smoothing,
            config.num_classes,
        )?)
    } else {
        None
    };
    let transform = TrainTransform::new(recipe.input_size, &recipe.aa, recipe.reprob)?;
    let Trainee {
        model,
        mut opt,
        mut ema,
        init,
    } = trainee(recipe, config, device)?;
    observer.prepared(&Prepared {
        model: config,
        train_images: train.samples.len(),
        val_images: val.as_ref().map(|v| v.samples.len()),
        classes: config.num_classes,
        n_parameters: opt.params.iter().map(|p| p.var.elem_count()).sum(),
        steps_per_epoch,
        init,
        mixup: mixup.is_some(),
    });
    let options = RunOptions {
        output_dir: recipe.output_dir.clone(),
        epochs: recipe.epochs as u64,
        batch_size: recipe.batch_size,
        update_freq: recipe.update_freq,
        seed: recipe.seed,
        smoothing: recipe.smoothing,
        clip_grad: recipe.clip_grad,
        ema_decay: recipe.model_ema_decay,
        keep_checkpoints: recipe.save_ckpt_num,
        eval: val.is_some(),
        eval_ema: recipe.model_ema_eval,
        pth_copies: recipe.pth_copies,
        resume: recipe.resume.clone(),
        inputs: [
            Some(&recipe.train_dir),
            recipe.val_dir.as_ref(),
            recipe.init.as_ref(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect(),
        loader: LoaderOptions {
            batch_size: recipe.batch_size,
            workers: recipe.workers.max(1),
            skip_bad: false,
            limit: None,
            prefetch: 2,
        },
        args: serde_json::to_value(recipe).unwrap_or_default(),
    };
    Ok(run(
        &model,
        &mut opt,
        ema.as_deref_mut(),
        &train,
        val.as_ref(),
        &transform,
        mixup.as_ref(),
        &schedules,
        &options,
        observer.as_run_observer(),
    )?)
}

/// What [`finetune`] reports: the set-up, then everything [`Observer`] sees.
pub trait FinetuneObserver: Observer {
    fn prepared(&mut self, _prepared: &Prepared) {}
    /// `self` as the run's observer.
    fn as_run_observer(&mut self) -> &mut dyn Observer;
}

/// The checkpoint `--eval` evaluates: `resume`'s, or the latest in `output_dir`.
pub fn checkpoint_to_evaluate(resume: &Resume, output_dir: &Path) -> Option<PathBuf> {
    match resume {
        Resume::From(p) => Some(p.clone()),
        Resume::Auto => latest_checkpoint(output_dir).map(|(_, p)| p),
        Resume::Never => None,
    }
}

/// Evaluates the model (`ema`: the EMA weights) of a training checkpoint on the validation
/// images of `recipe`, as `--eval` does.
pub fn evaluate_checkpoint(
    recipe: &Recipe,
    checkpoint: &Path,
    ema: bool,
    device: &Device,
) -> Result<crate::EvalReport, FinetuneError> {
    let Some(val_dir) = &recipe.val_dir else {
        return Err(FinetuneError::NoValidation);
    };
    let val = Dataset::image_folder(val_dir)?;
    let config = IllamaConfig {
        num_classes: val.classes.len(),
        img_size: recipe.input_size,
        ..recipe.model
    };
    let model = load_for_eval(checkpoint, config, ema, device)?.with_precision(recipe.precision);
    let batches = eval_batches(
        &val,
        EvalTransform::new(recipe.input_size)?,
        LoaderOptions {
            batch_size: recipe.batch_size,
            workers: recipe.workers.max(1),
            skip_bad: false,
            limit: None,
            prefetch: 2,
        },
    )
    .map_err(|e| FinetuneError::Run(e.into()))?;
    crate::evaluate(&model, batches, recipe.input_size, |_, _| {})
        .map_err(|e| FinetuneError::Run(e.into()))
}

/// The model (or EMA) weights of `checkpoint`: a training checkpoint of ours (`model.*`,
/// `ema.*`), else any checkpoint the inference loader reads (`.pth` with `model`/`model_ema`).
fn load_for_eval(
    checkpoint: &Path,
    config: IllamaConfig,
    ema: bool,
    device: &Device,
) -> Result<Illama, FinetuneError> {
    let store = illama_formats::TensorStore::open(checkpoint)
        .map_err(|e| FinetuneError::Run(RunError::Checkpoint(e.into())))?;
    if !store.metadata().contains_key("trainer.state") {
        let opts = illama_model::LoadOptions {
            config: Some(config),
            img_size: Some(config.img_size),
            device: device.clone(),
            dtype: candle_core::DType::F32,
            key: ema.then(|| "model_ema".to_string()),
        };
        return Ok(illama_model::load(checkpoint, &opts)?.0);
    }
    let prefix = if ema { "ema." } else { "model." };
    let (model, named) = Illama::trainable(config, device, 0)?;
    for (name, var) in &named {
        let full = format!("{prefix}{name}");
        let t = store.get(&full).ok_or_else(|| FinetuneError::Checkpoint {
            path: checkpoint.to_path_buf(),
            why: format!(
                "no tensor '{full}'{}",
                if ema {
                    " (the run had no EMA weights)"
                } else {
                    ""
                }
            ),
        })?;
        if t.shape != var.dims() || t.dtype != illama_formats::DType::F32 {
            return Err(FinetuneError::Checkpoint {
                path: checkpoint.to_path_buf(),
                why: format!(
                    "'{full}' is {} {:?}, the model's is f32 {:?} (check the architecture and the input size)",
                    t.dtype,
                    t.shape,
                    var.dims()
                ),
            });
        }
        let bytes = store
            .bytes(t)
            .map_err(|e| FinetuneError::Run(RunError::Checkpoint(e.into())))?;
        let v = candle_core::Tensor::from_raw_buffer(
            &bytes,
            candle_core::DType::F32,
            &t.shape,
            &Device::Cpu,
        )?;
        var.set(&v.to_device(device)?)?;
    }
    Ok(model)
}

/// The settings whose recorded value (in a checkpoint's arguments) differs from `now`'s, other
/// than those that do not change the result (workers, resume, output folder).
pub fn changed_settings(recorded: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
    let (Some(a), Some(b)) = (recorded.as_object(), now.as_object()) else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !matches!(k.as_str(), "workers" | "output_dir"))
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show =
                |v: Option<&serde_json::Value>| v.map_or("(unset)".into(), |v| v.to_string());
            format!("{k}: {} -> {}", show(a.get(k)), show(b.get(k)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_settings_name_what_differs_but_not_the_worker_count() {
        let a = serde_json::json!({"lr": 4e-3, "workers": 8, "epochs": 300});
        let b = serde_json::json!({"lr": 2e-3, "workers": 2, "epochs": 300, "seed": 1});
        assert_eq!(
            changed_settings(&a, &b),
            vec![
                "lr: 0.004 -> 0.002".to_string(),
                "seed: (unset) -> 1".to_string()
            ]
        );
    }

    #[test]
    fn schedules_follow_the_recipe_and_skip_drop_path_when_off() {
        let mut r = Recipe::new("t".into(), None, IllamaConfig::new(32, 2, 2));
        (r.epochs, r.warmup_epochs) = (4, 1);
        (r.mask_mode, r.mask_schedule, r.cutoff_soft) = (MaskMode::Soft, EarlySchedule::Linear, 2);
        let s = schedules(&r, 5).unwrap();
        assert_eq!(s.lr.len(), 20);
        assert_eq!(s.lr[0], 0.0);
        assert_eq!(s.lr[5], 4e-3);
        assert_eq!(s.weight_decay, vec![0.05; 20]);
        assert_eq!(s.soft_mask[0], 1.0);
        assert_eq!(s.soft_mask[9], 0.0);
        assert_eq!(s.soft_mask[10..], [0.0; 10]);
        assert!(s.drop_path.is_empty());
        r.drop_path = 0.1;
        assert_eq!(schedules(&r, 5).unwrap().drop_path, vec![0.1; 20]);
    }
}

#[cfg(test)]
mod setting_tests {
    use super::*;

    #[test]
    fn settings_outside_the_recipe_are_named() {
        let base = Recipe::new("t".into(), None, IllamaConfig::new(32, 2, 2));
        let mut r = base.clone();
        r.batch_size = 0;
        assert!(matches!(
            check(&r),
            Err(FinetuneError::Setting {
                name: "batch_size",
                ..
            })
        ));
        let mut r = base.clone();
        r.drop_path = 1.0;
        assert!(matches!(
            check(&r),
            Err(FinetuneError::Setting {
                name: "drop_path",
                ..
            })
        ));
        let mut r = base.clone();
        r.lr = f64::NAN;
        let e = check(&r).unwrap_err().to_string();
        assert!(e.starts_with("lr = NaN"), "{e}");
        let mut r = base;
        r.clip_grad = Some(0.0);
        assert!(check(&r).is_err());
    }
}
