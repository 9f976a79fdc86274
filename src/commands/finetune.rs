use crate::commands::{parse_input_size, parse_model, parse_positive, parse_unit_rate};
use anyhow::Context;
use illama_model::{config_of, parse_device};
use illama_train::checkpoint::TrainerState;
use illama_train::epoch::BatchProgress;
use illama_train::finetune::{
    changed_settings, checkpoint_to_evaluate, evaluate_checkpoint, finetune, FinetuneObserver,
    Prepared, Recipe,
};
use illama_train::run::{EpochLog, Observer, Resume};
use illama_train::schedule::{DropMode, EarlySchedule, MaskMode};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

const EXAMPLES: &str = "\
Examples (the published runs, on 8 GPUs x batch 128 x update-freq 4 = 4096 images per step;
with fewer GPUs, raise --update-freq to keep 4096):
  # iLLaMA-T, 75.0% top-1
  illama-tools finetune --data ~/imagenet --model tiny --output-dir runs/tiny \\
      --epochs 300 --warmup-epochs 5 --mixup 0.1 --cutmix 0.1 --batch-size 128 --lr 4e-3 \\
      --update-freq 32 --dropout 0 --drop-mode standard \\
      --mask-mode soft --mask-schedule constant --cutoff-soft 50
  # iLLaMA-S, 79.9%
  illama-tools finetune --data ~/imagenet --model small --output-dir runs/small \\
      --epochs 300 --warmup-epochs 5 --mixup 0.5 --cutmix 0.5 --batch-size 128 --lr 4e-3 \\
      --update-freq 32 --drop-path 0.1 --drop-mode standard \\
      --mask-mode soft --mask-schedule linear --cutoff-soft 50
  # iLLaMA-B, 81.6% (from LLaMA2-7B weights: add --init illama_ws_base.safetensors)
  illama-tools finetune --data ~/imagenet --model base --output-dir runs/base \\
      --epochs 300 --mixup 0.95 --cutmix 1.0 --batch-size 128 --lr 4e-3 --update-freq 32 \\
      --drop-path 0.4 --drop-mode standard \\
      --mask-mode soft --mask-schedule linear --cutoff-soft 25

  # Evaluate a run's latest checkpoint, or a given one (EMA weights with --model-ema)
  illama-tools finetune --data ~/imagenet --model tiny --output-dir runs/tiny --eval
  illama-tools finetune --data ~/imagenet --model tiny --resume runs/tiny/checkpoint-best.safetensors --eval

A run resumes from the latest checkpoint in --output-dir (--resume auto, the default); killed at
any moment and started again with the same command, it ends with exactly the weights of an
uninterrupted run. --output-dir receives log.txt (a JSON line per epoch), curves.svg,
checkpoint-<epoch>.safetensors (weights, EMA, optimiser state) and .pth copies of the weights,
and checkpoint-best.";

/// Fine-tune (or train from scratch) iLLaMA on ImageNet with the paper's recipe.
///
/// Flag names and defaults are the reference's (main_soft.py), with dashes for underscores.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    // --- data
    /// ImageNet root holding train/ and val/ (ImageFolder layout: <split>/<wnid>/*.JPEG).
    #[arg(long, help_heading = "Data", required_unless_present = "train_dir")]
    data: Option<PathBuf>,
    /// Training images, instead of DATA/train.
    #[arg(long, help_heading = "Data")]
    train_dir: Option<PathBuf>,
    /// Validation images, instead of DATA/val.
    #[arg(long, help_heading = "Data")]
    val_dir: Option<PathBuf>,
    /// Decoding and augmentation threads. Default: all cores.
    #[arg(long, help_heading = "Data", value_parser = parse_positive)]
    workers: Option<usize>,

    // --- model
    /// tiny, small, base, large or custom:DIM,DEPTH,HEADS[,MLP]. Default: the architecture of
    /// --init (select's output records it), else tiny.
    #[arg(long, help_heading = "Model")]
    model: Option<String>,
    /// Initial weights (the reference's --finetune): select's output, a published or training
    /// checkpoint (.pth or .safetensors). Loaded non-strictly; the rest keeps the random init.
    #[arg(long, help_heading = "Model")]
    init: Option<PathBuf>,
    /// Entry of --init to read (model, module, model_ema). Default: automatic.
    #[arg(long, help_heading = "Model")]
    init_key: Option<String>,
    /// Training resolution (pos_embed of --init is interpolated when it differs).
    #[arg(long, default_value_t = 224, value_parser = parse_input_size, help_heading = "Model")]
    input_size: usize,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu", help_heading = "Model")]
    device: String,
    /// f32, or bf16 mixed precision: f32 weights and optimiser state, bf16 matmuls and
    /// attention, f32 RMSNorm, softmax and loss (the reference's AMP; docs/training.md).
    #[arg(long, default_value = "f32", value_parser = crate::commands::parse_precision, help_heading = "Model")]
    precision: illama_model::Precision,

    // --- optimiser
    #[arg(long, default_value_t = 300, value_parser = parse_positive, help_heading = "Optimiser")]
    epochs: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 64, value_parser = parse_positive, help_heading = "Optimiser")]
    batch_size: usize,
    /// Batches per optimiser step (gradient accumulation).
    #[arg(long, default_value_t = 1, value_parser = parse_positive, help_heading = "Optimiser")]
    update_freq: usize,
    #[arg(long, default_value_t = 4e-3, help_heading = "Optimiser")]
    lr: f64,
    #[arg(long, default_value_t = 1e-6, help_heading = "Optimiser")]
    min_lr: f64,
    #[arg(long, default_value_t = 0.05, help_heading = "Optimiser")]
    weight_decay: f64,
    /// Final weight decay of its cosine schedule. Default: --weight-decay (constant).
    #[arg(long, help_heading = "Optimiser")]
    weight_decay_end: Option<f64>,
    /// Layer-wise LR decay; the reference supports it for ConvNeXt only, so only 1.0 here.
    #[arg(long, default_value_t = 1.0, help_heading = "Optimiser")]
    layer_decay: f64,
    /// Clip the global gradient norm to this value.
    #[arg(long, help_heading = "Optimiser")]
    clip_grad: Option<f64>,

    // --- schedules
    #[arg(long, default_value_t = 50, help_heading = "Schedules")]
    warmup_epochs: usize,
    /// Warmup length in optimiser steps (overrides --warmup-epochs' length).
    #[arg(long, help_heading = "Schedules")]
    warmup_steps: Option<usize>,
    /// Stochastic depth of the deepest block.
    #[arg(long, default_value_t = 0.0, value_parser = parse_unit_rate, help_heading = "Schedules")]
    drop_path: f64,
    /// Dropout (unused by the published recipes; only 0 is supported).
    #[arg(long, default_value_t = 0.0, help_heading = "Schedules")]
    dropout: f64,
    #[arg(long, value_enum, default_value_t = DropModeArg::Standard, help_heading = "Schedules")]
    drop_mode: DropModeArg,
    #[arg(long, value_enum, default_value_t = ScheduleArg::Constant, help_heading = "Schedules")]
    drop_schedule: ScheduleArg,
    /// Epoch where the early/late drop modes switch.
    #[arg(long, default_value_t = 0, help_heading = "Schedules")]
    cutoff_epoch: usize,
    /// standard: the soft-mask rate all run; soft: for --cutoff-soft epochs, then 0 (causal).
    #[arg(long, value_enum, default_value_t = MaskModeArg::Standard, help_heading = "Schedules")]
    mask_mode: MaskModeArg,
    #[arg(long, value_enum, default_value_t = ScheduleArg::Constant, help_heading = "Schedules")]
    mask_schedule: ScheduleArg,
    /// Soft-mask rate r (1 = bidirectional attention, 0 = causal).
    #[arg(long, default_value_t = 1.0, value_parser = parse_unit_rate, help_heading = "Schedules")]
    soft_mask: f64,
    #[arg(long, default_value_t = 0, help_heading = "Schedules")]
    cutoff_soft: usize,

    // --- augmentation
    /// RandAugment policy, or none.
    #[arg(
        long,
        default_value = "rand-m9-mstd0.5-inc1",
        help_heading = "Augmentation"
    )]
    aa: String,
    /// RandomErasing probability.
    #[arg(long, default_value_t = 0.25, value_parser = parse_unit_rate, help_heading = "Augmentation")]
    reprob: f64,
    /// Mixup alpha (0: off).
    #[arg(long, default_value_t = 0.8, help_heading = "Augmentation")]
    mixup: f64,
    /// CutMix alpha (0: off).
    #[arg(long, default_value_t = 1.0, help_heading = "Augmentation")]
    cutmix: f64,
    #[arg(long, default_value_t = 1.0, value_parser = parse_unit_rate, help_heading = "Augmentation")]
    mixup_prob: f64,
    #[arg(long, default_value_t = 0.5, value_parser = parse_unit_rate, help_heading = "Augmentation")]
    mixup_switch_prob: f64,
    /// Label smoothing.
    #[arg(long, default_value_t = 0.1, value_parser = parse_unit_rate, help_heading = "Augmentation")]
    smoothing: f64,

    // --- checkpoints
    /// Run folder: log.txt, curves.svg, checkpoints.
    #[arg(long, short = 'o', help_heading = "Checkpoints")]
    output_dir: PathBuf,
    /// auto (the latest checkpoint in --output-dir, if any), none, or a checkpoint file.
    #[arg(long, default_value = "auto", help_heading = "Checkpoints")]
    resume: String,
    /// Epoch checkpoints kept (older ones are removed); 0 keeps all.
    #[arg(long, default_value_t = 3, help_heading = "Checkpoints")]
    save_ckpt_num: usize,
    /// Do not write .pth copies of the checkpoints' weights.
    #[arg(long, help_heading = "Checkpoints")]
    no_pth: bool,
    /// Keep an exponential moving average of the weights.
    #[arg(long, help_heading = "Checkpoints")]
    model_ema: bool,
    #[arg(long, default_value_t = 0.9999, value_parser = parse_unit_rate, help_heading = "Checkpoints")]
    model_ema_decay: f64,
    /// Also evaluate the EMA weights each epoch.
    #[arg(long, help_heading = "Checkpoints")]
    model_ema_eval: bool,
    /// Only evaluate the checkpoint of --resume (the latest one with auto) on the validation set.
    #[arg(long, help_heading = "Checkpoints")]
    eval: bool,
    /// Train without evaluating each epoch (no checkpoint-best).
    #[arg(long, help_heading = "Checkpoints")]
    disable_eval: bool,

    // --- run
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print a JSON line per epoch and a summary on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DropModeArg {
    Standard,
    Early,
    Late,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScheduleArg {
    Constant,
    Linear,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MaskModeArg {
    Standard,
    Soft,
}

impl From<ScheduleArg> for EarlySchedule {
    fn from(s: ScheduleArg) -> Self {
        match s {
            ScheduleArg::Constant => EarlySchedule::Constant,
            ScheduleArg::Linear => EarlySchedule::Linear,
        }
    }
}

fn recipe(a: &Args) -> anyhow::Result<Recipe> {
    if a.layer_decay != 1.0 {
        anyhow::bail!(
            "--layer-decay {}: the reference implements layer decay for ConvNeXt only; iLLaMA runs use 1.0",
            a.layer_decay
        );
    }
    if a.dropout != 0.0 {
        anyhow::bail!(
            "--dropout {}: dropout is not implemented (the published recipes use 0); use --drop-path",
            a.dropout
        );
    }
    let train_dir = match (&a.train_dir, &a.data) {
        (Some(t), _) => t.clone(),
        (None, Some(d)) => d.join("train"),
        (None, None) => anyhow::bail!("give --data DIR (with train/ and val/) or --train-dir"),
    };
    let val_dir = if a.disable_eval && !a.eval {
        None
    } else {
        match (&a.val_dir, &a.data) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(d)) => Some(d.join("val")),
            (None, None) => anyhow::bail!(
                "give --val-dir (or --data DIR with val/), or --disable-eval to train without evaluation"
            ),
        }
    };
    let model = match (&a.model, &a.init) {
        (Some(m), _) => parse_model(m)?,
        (None, Some(init)) => {
            let (c, from) = config_of(init, a.init_key.as_deref())
                .with_context(|| format!("reading {}", init.display()))?
                .with_context(|| {
                    format!(
                        "{}: the file does not say its architecture; pass --model",
                        init.display()
                    )
                })?;
            eprintln!("model: {} (from {from})", describe(&c));
            c
        }
        (None, None) => parse_model("tiny")?,
    };
    let resume = match a.resume.as_str() {
        "auto" => Resume::Auto,
        "none" | "" => Resume::Never,
        path => Resume::From(PathBuf::from(path)),
    };
    let workers = a
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut r = Recipe::new(train_dir, val_dir, model);
    r.init = a.init.clone();
    r.init_key = a.init_key.clone();
    r.output_dir = a.output_dir.clone();
    (r.epochs, r.batch_size, r.update_freq) = (a.epochs, a.batch_size, a.update_freq);
    (r.lr, r.min_lr, r.warmup_epochs, r.warmup_steps) =
        (a.lr, a.min_lr, a.warmup_epochs, a.warmup_steps);
    (r.weight_decay, r.weight_decay_end, r.clip_grad) =
        (a.weight_decay, a.weight_decay_end, a.clip_grad);
    r.drop_path = a.drop_path;
    r.drop_mode = match a.drop_mode {
        DropModeArg::Standard => DropMode::Standard,
        DropModeArg::Early => DropMode::Early,
        DropModeArg::Late => DropMode::Late,
    };
    r.drop_schedule = a.drop_schedule.into();
    r.cutoff_epoch = a.cutoff_epoch;
    r.mask_mode = match a.mask_mode {
        MaskModeArg::Standard => MaskMode::Standard,
        MaskModeArg::Soft => MaskMode::Soft,
    };
    (r.mask_schedule, r.soft_mask, r.cutoff_soft) =
        (a.mask_schedule.into(), a.soft_mask, a.cutoff_soft);
    (r.aa, r.reprob, r.input_size) = (a.aa.clone(), a.reprob, a.input_size);
    (
        r.mixup,
        r.cutmix,
        r.mixup_prob,
        r.mixup_switch_prob,
        r.smoothing,
    ) = (
        a.mixup,
        a.cutmix,
        a.mixup_prob,
        a.mixup_switch_prob,
        a.smoothing,
    );
    (r.model_ema, r.model_ema_decay, r.model_ema_eval) = (
        a.model_ema,
        a.model_ema_decay,
        a.model_ema && a.model_ema_eval,
    );
    (r.seed, r.workers, r.resume, r.save_ckpt_num, r.pth_copies) =
        (a.seed, workers, resume, a.save_ckpt_num, !a.no_pth);
    r.precision = a.precision;
    Ok(r)
}

fn describe(c: &illama_arch::IllamaConfig) -> String {
    format!(
        "dim {}, depth {}, heads {}, mlp {}",
        c.dim, c.depth, c.heads, c.mlp_hidden
    )
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let recipe = recipe(&a)?;
    let device = parse_device(&a.device)?;
    if a.eval {
        let checkpoint =
            checkpoint_to_evaluate(&recipe.resume, &recipe.output_dir).with_context(|| {
                format!(
                    "--eval: no checkpoint in {} (give --resume FILE)",
                    recipe.output_dir.display()
                )
            })?;
        let report = evaluate_checkpoint(&recipe, &checkpoint, a.model_ema, &device)?;
        if a.json {
            let out = serde_json::json!({
                "checkpoint": checkpoint,
                "ema": a.model_ema,
                "acc1": report.top1,
                "acc5": report.top5,
                "loss": report.loss,
                "images": report.images,
            });
            println!("{}", serde_json::to_string(&out)?);
        } else {
            println!(
                "{}{}: top-1 {:.3}%  top-5 {:.3}%  loss {:.4}  ({} images)",
                checkpoint.display(),
                if a.model_ema { " (EMA)" } else { "" },
                report.top1,
                report.top5,
                report.loss,
                report.images
            );
        }
        return Ok(());
    }
    let started = Instant::now();
    let mut observer = Console::new(
        a.json,
        serde_json::to_value(&recipe).unwrap_or_default(),
        recipe.epochs as u64,
    );
    let summary = finetune(&recipe, &device, &mut observer)?;
    let seconds = started.elapsed().as_secs_f64();
    let last = summary.logs.last();
    if a.json {
        let out = serde_json::json!({
            "event": "done",
            "output_dir": recipe.output_dir,
            "epochs_run": summary.logs.len(),
            "resumed_from": summary.resumed_from,
            "best_acc1": summary.best_acc1,
            "last": last,
            "last_checkpoint": summary.last_checkpoint,
            "seconds": seconds,
        });
        println!("{}", serde_json::to_string(&out)?);
    } else {
        match last {
            Some(_) => println!(
                "done: {} epochs in {:.1} s; best top-1 {}; outputs in {}",
                summary.logs.len(),
                seconds,
                summary
                    .best_acc1
                    .map_or("not evaluated".into(), |b| format!("{b:.2}%")),
                recipe.output_dir.display()
            ),
            None => println!(
                "nothing to do: the run in {} already finished its {} epochs",
                recipe.output_dir.display(),
                recipe.epochs
            ),
        }
    }
    Ok(())
}

/// Reports a run on the terminal: a bar per epoch on a terminal, plain lines otherwise; JSON
/// lines on stdout with --json.
struct Console {
    json: bool,
    args: serde_json::Value,
    epochs: u64,
    bar: Option<ProgressBar>,
    interactive: bool,
    epoch_start: Instant,
    last_line: Instant,
}

impl Console {
    fn new(json: bool, args: serde_json::Value, epochs: u64) -> Console {
        Console {
            json,
            args,
            epochs,
            bar: None,
            interactive: std::io::stderr().is_terminal(),
            epoch_start: Instant::now(),
            last_line: Instant::now(),
        }
    }
}

impl Observer for Console {
    fn resumed(&mut self, from: &Path, state: &TrainerState) {
        eprintln!(
            "resuming from {} at epoch {} (step {})",
            from.display(),
            state.epoch,
            state.step
        );
        for change in changed_settings(&state.args, &self.args) {
            eprintln!("note: changed since the checkpoint: {change}");
        }
    }

    fn epoch_started(&mut self, epoch: u64, batches: usize) {
        self.epoch_start = Instant::now();
        self.last_line = Instant::now();
        if self.interactive {
            let bar = ProgressBar::new(batches as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30.cyan/blue}] {pos}/{len} {msg} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{}", self.epochs));
            self.bar = Some(bar);
        }
    }

    fn batch(&mut self, epoch: u64, p: &BatchProgress) {
        let rate = p.images as f64 / self.epoch_start.elapsed().as_secs_f64().max(1e-9);
        let msg = format!(
            "loss {:.4} ({:.4}) lr {:.2e} {:.1} img/s",
            p.loss, p.mean_loss, p.lr, rate
        );
        if let Some(bar) = &self.bar {
            bar.set_position(p.batch as u64);
            bar.set_message(msg);
        } else if p.batch == p.batches || self.last_line.elapsed().as_secs() >= 30 {
            let eta = (p.batches - p.batch) as f64 * self.epoch_start.elapsed().as_secs_f64()
                / p.batch as f64;
            eprintln!(
                "epoch {epoch}/{} batch {}/{} {msg} eta {eta:.0} s",
                self.epochs, p.batch, p.batches
            );
            self.last_line = Instant::now();
        }
    }

    fn evaluating(&mut self, _epoch: u64) {
        if let Some(bar) = &self.bar {
            bar.set_message("evaluating");
        }
    }

    fn epoch_done(&mut self, log: &EpochLog, written: &[PathBuf]) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.json {
            let mut line = serde_json::to_value(log).unwrap_or_default();
            if let Some(o) = line.as_object_mut() {
                o.insert("event".into(), "epoch".into());
                o.insert("written".into(), serde_json::json!(written));
            }
            println!("{line}");
            return;
        }
        let eval = match (log.test_acc1, log.test_acc5, log.test_loss) {
            (Some(a1), Some(a5), Some(l)) => {
                format!("  val top-1 {a1:.2}% top-5 {a5:.2}% loss {l:.4}")
            }
            _ => String::new(),
        };
        let ema = log
            .test_acc1_ema
            .map_or(String::new(), |a| format!("  EMA top-1 {a:.2}%"));
        eprintln!(
            "epoch {}: train loss {:.4}  lr {:.3e}  soft mask {:.3}{eval}{ema}  ({:.0} s)",
            log.epoch,
            log.train_loss,
            log.train_lr,
            log.train_soft_mask_rate,
            self.epoch_start.elapsed().as_secs_f64()
        );
    }
}

impl FinetuneObserver for Console {
    fn prepared(&mut self, p: &Prepared) {
        if let Some(init) = &p.init {
            print_init(init);
        }
        let line = format!(
            "training {} ({} parameters, {} classes) on {} images{}: {} steps per epoch, {}",
            describe(&p.model),
            p.n_parameters,
            p.classes,
            p.train_images,
            p.val_images
                .map_or(String::new(), |v| format!(", validating on {v}")),
            p.steps_per_epoch,
            if p.mixup {
                "Mixup/CutMix with soft-target cross-entropy"
            } else {
                "label-smoothing cross-entropy"
            }
        );
        if self.json {
            let out = serde_json::json!({"event": "prepared", "setup": p});
            println!("{out}");
        } else {
            eprintln!("{line}");
        }
    }

    fn as_run_observer(&mut self) -> &mut dyn Observer {
        self
    }
}

/// The table of what `--init` loaded.
fn print_init(r: &illama_model::InitReport) {
    eprintln!(
        "init: {} parameters from the file, {} at the random init, {} file tensors unused",
        r.loaded.len(),
        r.random.len(),
        r.unused.len()
    );
    let group = |names: &[String]| -> Vec<(String, usize)> {
        // blocks.3.attn.qkv.weight -> blocks.*.attn.qkv.weight, counted.
        let mut out: Vec<(String, usize)> = Vec::new();
        for n in names {
            let parts: Vec<&str> = n.split('.').collect();
            let key = match parts.as_slice() {
                ["blocks", i, rest @ ..] if i.parse::<usize>().is_ok() => {
                    format!("blocks.*.{}", rest.join("."))
                }
                _ => n.clone(),
            };
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, c)) => *c += 1,
                None => out.push((key, 1)),
            }
        }
        out
    };
    eprintln!("  {:<34} {:>6}  source", "parameter", "count");
    for (name, count) in group(&r.loaded) {
        eprintln!("  {name:<34} {count:>6}  file");
    }
    for (name, count) in group(&r.random) {
        eprintln!("  {name:<34} {count:>6}  random init");
    }
    if let Some(h) = &r.head_dropped {
        eprintln!("  head dropped: {h}");
    }
    if let Some(g) = r.pos_embed_from_grid {
        eprintln!("  pos_embed interpolated from a {g}x{g} grid");
    }
    for name in r.unused.iter().take(8) {
        eprintln!("  unused: {}", crate::commands::printable(name));
    }
    if r.unused.len() > 8 {
        eprintln!("  ... and {} more unused", r.unused.len() - 8);
    }
}
