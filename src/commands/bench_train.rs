//! `bench-train` (hidden): training steps on synthetic data, for scripts/gpu-check.sh, which
//! carries only the binary to the GPU machine. The step is benches/train_step.rs's: forward with
//! the soft mask (r = 0.5) and the preset's stochastic depth, soft-target cross-entropy on Mixup
//! targets, backward, AdamW with the recipe's groups.

use crate::commands::{parse_model, parse_positive};
use illama_arch::IllamaConfig;
use illama_model::{parse_device, Illama, Precision};
use illama_train::optim::{AdamW, AdamWConfig};
use illama_train::step_timing::{synthetic_batch, time_train_steps};
use std::time::Instant;

/// Time training steps on random images (no data loading).
#[derive(clap::Args)]
#[command(
    hide = true,
    after_help = "Examples:\n  illama-tools bench-train --model tiny --device cuda:0 --precision bf16 --batch-size 128 --json"
)]
pub struct Args {
    /// tiny, small, base, large or custom:DIM,DEPTH,HEADS[,MLP].
    #[arg(long, default_value = "tiny")]
    model: String,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, or bf16 mixed precision.
    #[arg(long, default_value = "f32", value_parser = super::parse_precision)]
    precision: Precision,
    #[arg(long, default_value_t = 32, value_parser = parse_positive)]
    batch_size: usize,
    #[arg(long, default_value_t = 224, value_parser = super::parse_input_size)]
    input_size: usize,
    /// Timed steps (after the warm-up steps).
    #[arg(long, default_value_t = 10, value_parser = parse_positive)]
    steps: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Stochastic depth of the deepest block. Default: the published run's (tiny 0, small 0.1,
    /// base and large 0.4).
    #[arg(long)]
    drop_path: Option<f64>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let device = parse_device(&a.device)?;
    let config = IllamaConfig {
        num_classes: 1000,
        img_size: a.input_size,
        ..parse_model(&a.model)?
    };
    config.validate()?;
    let drop = a.drop_path.unwrap_or(match a.model.as_str() {
        "tiny" => 0.0,
        "small" => 0.1,
        "base" | "large" => 0.4,
        _ => 0.0,
    });
    let (model, named) = Illama::trainable(config, &device, 0)?;
    let model = model.with_precision(a.precision);
    let parameters: usize = named.iter().map(|(_, v)| v.elem_count()).sum();
    let mut opt = AdamW::new(named, AdamWConfig::default())?;
    let b = a.batch_size;
    let s = a.input_size;
    let (x, t) = synthetic_batch(b, s, &device)?;
    let started = Instant::now();
    let times = time_train_steps(&model, &mut opt, &x, &t, drop, 1e-4, a.warmup, a.steps)?;
    let step = median(times.steps());
    let (fwd, bwd, upd, last_loss) = (
        times.forward,
        times.backward,
        times.optimiser,
        times.last_loss,
    );
    let rate = b as f64 / step;
    if a.json {
        let out = serde_json::json!({
            "model": a.model,
            "parameters": parameters,
            "device": a.device,
            "precision": a.precision,
            "batch_size": b,
            "input_size": s,
            "drop_path": drop,
            "steps": a.steps,
            "warmup": a.warmup,
            "step_seconds": step,
            "forward_seconds": median(fwd),
            "backward_seconds": median(bwd),
            "optimiser_seconds": median(upd),
            "images_per_second": rate,
            "last_loss": last_loss,
            "wall_seconds": started.elapsed().as_secs_f64(),
        });
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "{} {} batch {b}: step {step:.4} s ({rate:.1} images/s): forward {:.4} backward {:.4} optimiser {:.4}",
            a.model,
            a.precision,
            median(fwd),
            median(bwd),
            median(upd)
        );
    }
    Ok(())
}
