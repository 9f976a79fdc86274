//! The hand-written CPU training path of the blocks against candle's autograd through the same
//! model: logits and the gradient of every parameter, with a soft mask, stochastic depth and
//! several batch, token and width shapes (the PyTorch comparison is `train/tests/one_step.rs`).

mod common;
use candle_core::{DType, Device, Tensor};
use common::{max_abs, max_abs_diff};
use illama_arch::IllamaConfig;
use illama_model::{DropPath, Illama};

fn random(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Both paths on one model; every gradient within `tol` of the largest value of its autograd
/// counterpart (relative), and both paths give each parameter a gradient.
fn compare(config: IllamaConfig, batch: usize, r: f64, drop: DropPath) {
    let (model, named) = Illama::trainable(config, &Device::Cpu, 7).unwrap();
    // Larger weights than the init, so that every part of the block matters to the result.
    for (i, (name, v)) in named.iter().enumerate() {
        if name.contains("norm") {
            v.set(&random(v.dims(), i as u64).affine(0.5, 1.0).unwrap())
                .unwrap();
        } else {
            v.set(&(random(v.dims(), i as u64) * 0.2).unwrap()).unwrap();
        }
    }
    let s = config.img_size;
    let images = random(&[batch, 3, s, s], 99);
    let up = random(&[batch, config.num_classes], 5);

    let want_logits = model.forward_train(&images, r, drop).unwrap();
    let want = (&want_logits * &up)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();

    let pass = model.train_forward(&images, r, drop).unwrap();
    let logits = pass.logits.clone();
    let loss = (&logits * &up).unwrap().sum_all().unwrap();
    let got = pass.backward(&loss).unwrap();

    let d = max_abs_diff(&logits, &want_logits);
    assert!(
        d < 1e-4 * max_abs(&want_logits).max(1.0),
        "logits differ by {d}"
    );
    for (name, v) in &named {
        let w = want
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("autograd gives {name} no gradient"));
        let g = got
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("the CPU path gives {name} no gradient"));
        assert_eq!(g.dims(), w.dims(), "{name}");
        let scale = max_abs(w).max(1e-3);
        let d = max_abs_diff(g, w);
        assert!(d <= 2e-4 * scale, "{name}: max |diff| {d}, largest {scale}");
    }
}

fn config(dim: usize, depth: usize, heads: usize, img: usize, hidden: usize) -> IllamaConfig {
    IllamaConfig {
        img_size: img,
        num_classes: 7,
        mlp_hidden: hidden,
        ..IllamaConfig::new(dim, depth, heads)
    }
}

#[test]
fn soft_mask_and_drop_path() {
    let drop = DropPath {
        rate: 0.5,
        seed: 11,
    };
    compare(config(32, 3, 2, 48, 80), 4, 0.3, drop);
}

#[test]
fn causal_mask_without_drop_path() {
    compare(config(48, 2, 3, 32, 128), 3, 0.0, DropPath::default());
}

#[test]
fn no_mask_one_sample() {
    let drop = DropPath { rate: 0.2, seed: 3 };
    compare(config(64, 2, 4, 64, 96), 1, 1.0, drop);
}

#[test]
fn the_same_bits_on_every_run() {
    let c = config(32, 2, 2, 48, 80);
    let (model, _) = Illama::trainable(c, &Device::Cpu, 1).unwrap();
    let images = random(&[5, 3, 48, 48], 4);
    let run = || {
        let pass = model
            .train_forward(&images, 0.5, DropPath { rate: 0.3, seed: 2 })
            .unwrap();
        let loss = pass.logits.sqr().unwrap().sum_all().unwrap();
        let grads = pass.backward(&loss).unwrap();
        let w = &model.blocks[0].attn.qkv.weight;
        let g = grads.get(w).unwrap().to_dtype(DType::F32).unwrap();
        g.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let first = run();
    for _ in 0..3 {
        assert_eq!(run(), first);
    }
}

#[test]
fn inference_on_the_cpu_path_matches_the_graph() {
    for (r, c) in [
        (0.0, config(48, 2, 3, 32, 128)),
        (0.4, config(32, 3, 2, 48, 80)),
    ] {
        let (model, _) = Illama::trainable(c, &Device::Cpu, 3).unwrap();
        let images = random(&[3, 3, c.img_size, c.img_size], 8);
        // forward_train without stochastic depth is candle's graph of the same function.
        let want = model
            .forward_train(&images, r, DropPath::default())
            .unwrap();
        let got = model.forward_with(&images, r).unwrap();
        let d = max_abs_diff(&got, &want);
        assert!(
            d < 1e-4 * max_abs(&want).max(1.0),
            "r {r}: logits differ by {d}"
        );
        assert!(max_abs(&want) > 0.0);
    }
}

#[test]
fn one_block_is_also_the_last() {
    let drop = DropPath { rate: 0.3, seed: 1 };
    compare(config(32, 1, 2, 32, 64), 2, 0.5, drop);
}
