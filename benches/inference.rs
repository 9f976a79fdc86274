//! Inference throughput of the Candle model: images/s at batch 32, 224px, f32, on the CPU with all
//! cores, for the tiny and base presets (random weights; speed does not depend on values).
//! Compare with `python benches/torch_inference.py` run right after on the same machine
//! (docs/benchmarks.md).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use illama_arch::Preset;
use illama_model::Illama;
use std::time::Instant;

mod common;

fn main() -> candle_core::Result<()> {
    if std::env::var_os("ILLAMA_BENCH_DEFAULT_MALLOC").is_none() {
        illama_model::keep_freed_memory();
    }
    let batch: usize = std::env::var("ILLAMA_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let iters: usize = std::env::var("ILLAMA_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let presets: Vec<Preset> = match std::env::var("ILLAMA_BENCH_PRESETS") {
        Ok(list) => list.split(',').filter_map(Preset::parse).collect(),
        Err(_) => vec![Preset::Tiny, Preset::Base],
    };
    println!("threads {} batch {batch} iters {iters}", rayon_threads());
    for preset in presets {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = Illama::new(preset.config(), vb)?;
        let x = Tensor::randn(0f32, 1f32, (batch, 3, 224, 224), &Device::Cpu)?;
        model.forward(&x)?.to_vec2::<f32>()?; // warm-up
        let mut times = Vec::new();
        for _ in 0..iters {
            let t = Instant::now();
            model.forward(&x)?.to_vec2::<f32>()?;
            times.push(t.elapsed().as_secs_f64());
        }
        let median = common::median(times);
        println!(
            "candle {:<5} median {median:.3} s/batch  {:.1} images/s",
            preset.name(),
            batch as f64 / median
        );
    }
    Ok(())
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .to_string()
    })
}
