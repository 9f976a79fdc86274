//! Throughput of a full training step on the CPU, f32, 224 px, batch 32, 1000 classes: forward
//! with the soft mask (r = 0.5) and stochastic depth (tiny 0, small 0.1, base 0.4, as the
//! published runs), soft-target cross-entropy on Mixup targets, backward, AdamW with the
//! recipe's groups. Prints the median step time split into forward, backward and optimiser, and
//! the process's peak RSS (run one preset per process to read it per preset).
//!
//! With `ILLAMA_BENCH_TRAIN_DIR` (a folder of JPEGs, `python3 benches/make_val_images.py DIR
//! 512`), also the end-to-end rate with the recipe's input pipeline in front (RandomResizedCrop,
//! flip, RandAugment, erasing, Mixup/CutMix) on `ILLAMA_BENCH_WORKERS` loader threads.
//! Compare with `python3 benches/torch_train_step.py` right after (docs/benchmarks.md).
//!
//! ILLAMA_BENCH_PRESETS=tiny cargo bench --bench train_step

use candle_core::Device;
use illama_arch::Preset;
use illama_data::mix::Mixup;
use illama_data::train::TrainTransform;
use illama_data::{load_batches, Dataset, EpochSampler, LoaderOptions, Plan};
use illama_model::Illama;
use illama_train::epoch::{train_epoch, EpochOptions, Schedules};
use illama_train::optim::{AdamW, AdamWConfig};
use illama_train::step_timing::{synthetic_batch, time_train_steps};
use std::path::Path;
use std::time::Instant;

mod common;
use common::median;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn drop_path_of(p: Preset) -> f64 {
    match p {
        Preset::Tiny => 0.0,
        Preset::Small => 0.1,
        _ => 0.4,
    }
}

fn main() -> candle_core::Result<()> {
    illama_model::keep_freed_memory();
    let batch: usize = env_or("ILLAMA_BENCH_BATCH", 32);
    let iters: usize = env_or("ILLAMA_BENCH_ITERS", 5);
    let presets: Vec<Preset> = match std::env::var("ILLAMA_BENCH_PRESETS") {
        Ok(list) => list.split(',').filter_map(Preset::parse).collect(),
        Err(_) => vec![Preset::Tiny, Preset::Small],
    };
    println!("batch {batch} iters {iters}");
    for preset in presets {
        let (model, named) = Illama::trainable(preset.config(), &Device::Cpu, 0)?;
        let mut opt = AdamW::new(named, AdamWConfig::default())?;
        let (x, t) = synthetic_batch(batch, 224, &Device::Cpu)?;
        let drop = drop_path_of(preset);
        // One untimed step first, then `iters` timed ones.
        let times = time_train_steps(&model, &mut opt, &x, &t, drop, 1e-3, 1, iters)?;
        let (total, fwd, bwd, upd) = (
            times.steps(),
            times.forward,
            times.backward,
            times.optimiser,
        );
        let step = median(total);
        println!(
            "candle {:<5} step {step:.3} s ({:.1} images/s): forward {:.3} backward {:.3} optimiser {:.3}",
            preset.name(),
            batch as f64 / step,
            median(fwd),
            median(bwd),
            median(upd),
        );
        if let Some(dir) = std::env::var_os("ILLAMA_BENCH_TRAIN_DIR") {
            let workers: usize = env_or("ILLAMA_BENCH_WORKERS", 2);
            let rate = with_loader(&model, &mut opt, Path::new(&dir), batch, workers, drop)?;
            println!(
                "candle {:<5} with the input pipeline ({workers} workers): {rate:.1} images/s",
                preset.name()
            );
        }
    }
    println!("peak RSS {} MiB", peak_rss_kib() / 1024);
    Ok(())
}

/// Images per second of training epochs over `dir` through the recipe's loader (one warm-up
/// epoch, then the median of two).
fn with_loader(
    model: &Illama,
    opt: &mut AdamW,
    dir: &Path,
    batch: usize,
    workers: usize,
    drop: f64,
) -> candle_core::Result<f64> {
    let ds = Dataset::image_folder(dir).map_err(candle_core::Error::wrap)?;
    let sampler =
        EpochSampler::new(ds.samples.len(), batch, 0).map_err(candle_core::Error::wrap)?;
    let steps = sampler.batches_per_epoch();
    let transform = TrainTransform::recipe(224).map_err(candle_core::Error::wrap)?;
    let mixup = Mixup::new(0.8, 1.0, 1.0, 0.5, 0.1, 1000).map_err(candle_core::Error::wrap)?;
    let schedules = Schedules {
        lr: vec![1e-3; 3 * steps],
        weight_decay: vec![0.05; 3 * steps],
        soft_mask: vec![0.5; 3 * steps],
        drop_path: vec![drop; 3 * steps],
    };
    let mut rates = Vec::new();
    for epoch in 0..3u64 {
        let loader = LoaderOptions {
            batch_size: batch,
            workers,
            skip_bad: false,
            limit: None,
            prefetch: 2,
        };
        let batches = load_batches(
            &ds,
            Plan::epoch(&sampler, epoch),
            transform.clone(),
            Some(mixup),
            loader,
        )
        .map_err(candle_core::Error::wrap)?;
        let start = Instant::now();
        let stats = train_epoch(
            model,
            opt,
            None,
            batches,
            &schedules,
            &EpochOptions {
                epoch,
                start_step: epoch * steps as u64,
                update_freq: 1,
                smoothing: 0.1,
                clip_grad: None,
                ema_decay: 0.0,
                seed: 0,
                batches: steps,
            },
            &mut |_| {},
        )
        .map_err(candle_core::Error::wrap)?;
        if epoch > 0 {
            rates.push(stats.images as f64 / start.elapsed().as_secs_f64());
        }
    }
    Ok(median(rates))
}

fn peak_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u.ru_maxrss
    }
}
