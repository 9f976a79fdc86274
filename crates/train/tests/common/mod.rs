//! Helpers shared by the train crate's tests: golden files and tensor comparison.
#![allow(dead_code)]

use candle_core::{Device, Tensor, Var};
use illama_arch::IllamaConfig;
use illama_model::Illama;
use std::collections::HashMap;
use std::path::Path;

/// The tensors of `fixtures/train/<name>`.
pub fn golden(name: &str) -> HashMap<String, Tensor> {
    let path = format!("{}/../../fixtures/train/{name}", env!("CARGO_MANIFEST_DIR"));
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap()
}

/// max |a - b| over all elements.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Class 0: horizontal stripes, 1: vertical, 2: diagonal, 3: checkerboard; random period,
/// phase and colours, plus noise.
pub fn make_images(root: &Path, per_class: usize, seed: u64) {
    let mut s = seed;
    let mut rnd = move |n: u64| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) % n
    };
    for class in 0..4 {
        let dir = root.join(format!("c{class}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let period = 4 + rnd(5) as u32;
            let phase = rnd(8) as u32;
            let a = [rnd(128) as u8, rnd(128) as u8, rnd(128) as u8];
            let b = [
                128 + rnd(128) as u8,
                128 + rnd(128) as u8,
                128 + rnd(128) as u8,
            ];
            let img = image::RgbImage::from_fn(40, 40, |x, y| {
                let on = match class {
                    0 => (y + phase) / period % 2 == 0,
                    1 => (x + phase) / period % 2 == 0,
                    2 => (x + y + phase) / period % 2 == 0,
                    _ => ((x + phase) / period + (y + phase) / period) % 2 == 0,
                };
                let c = if on { a } else { b };
                let noise = (x * 7 + y * 13 + i as u32) % 9;
                image::Rgb(c.map(|v| v.saturating_add(noise as u8)))
            });
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
}

/// Weights from a fixed stream, so that the run is the same every time (candle's CPU generator
/// cannot be seeded): norms 1, biases 0, everything else N(0, 0.02).
pub fn deterministic_init(named: &[(String, Var)], seed: u64) {
    let mut s = seed;
    let mut uniform = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut sorted: Vec<&(String, Var)> = named.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, var) in sorted {
        let n = var.elem_count();
        let values: Vec<f32> = if name.contains("norm") {
            vec![1.0; n]
        } else if name.ends_with("bias") {
            vec![0.0; n]
        } else {
            (0..n)
                .map(|_| {
                    let (u, v) = (uniform(), uniform());
                    (0.02 * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
                })
                .collect()
        };
        let t = Tensor::from_vec(values, var.dims(), &Device::Cpu).unwrap();
        var.set(&t).unwrap();
    }
}

/// A trainable model and its parameters, sorted by name.
pub fn trainable(config: IllamaConfig) -> (Illama, Vec<(String, Var)>) {
    Illama::trainable(config, &Device::Cpu, 0).unwrap()
}
