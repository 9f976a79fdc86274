//! A checkpoint restores a run exactly: the next step after loading equals the next step of the
//! run that wrote it, bit for bit.

use candle_core::{DType, Device, Tensor, Var};
use illama_formats::OutputPolicy;
use illama_train::checkpoint::{load, save, TrainerState};
use illama_train::optim::{AdamW, AdamWConfig};

fn params(seed: u64) -> Vec<(String, Var)> {
    let dev = Device::Cpu;
    let t = |shape: &[usize], k: u64| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| (((i as u64 * 2654435761 + seed * 97 + k) % 1000) as f32 - 500.0) / 700.0)
            .collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &dev).unwrap()).unwrap()
    };
    vec![
        ("blocks.0.attn.qkv.weight".into(), t(&[6, 4], 1)),
        ("blocks.0.norm1.weight".into(), t(&[4], 2)),
    ]
}

fn grads(k: f32) -> Vec<Option<Tensor>> {
    vec![
        Some(Tensor::full(0.3 * k, (6, 4), &Device::Cpu).unwrap()),
        Some(Tensor::full(-0.2 * k, 4, &Device::Cpu).unwrap()),
    ]
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn a_restored_run_continues_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint-1.safetensors");
    let mut run = AdamW::new(params(1), AdamWConfig::default()).unwrap();
    run.step(&grads(1.0), 1e-3, 0.05).unwrap();
    run.step(&grads(-0.5), 2e-3, 0.05).unwrap();
    let ema = params(9);
    let state = TrainerState {
        epoch: 2,
        step: 40,
        seed: 7,
        args: serde_json::json!({"lr": 4e-3, "model": "tiny"}),
        best_acc1: Some(61.5),
        best_acc1_ema: None,
    };
    save(&path, &OutputPolicy::new(false), &run, Some(&ema), &state).unwrap();
    // Without --force, the next save to the same path is refused.
    assert!(save(&path, &OutputPolicy::new(false), &run, None, &state).is_err());

    let mut restored = AdamW::new(params(2), AdamWConfig::default()).unwrap();
    let ema2 = params(3);
    let got = load(&path, &mut restored, Some(&ema2)).unwrap();
    assert_eq!(got, state);
    for (a, b) in run.params.iter().zip(&restored.params) {
        assert_eq!(bits(a.var.as_tensor()), bits(b.var.as_tensor()));
        assert_eq!(bits(&a.exp_avg), bits(&b.exp_avg));
        assert_eq!(bits(&a.exp_avg_sq), bits(&b.exp_avg_sq));
        assert_eq!(a.step, b.step);
    }
    assert_eq!(bits(ema[0].1.as_tensor()), bits(ema2[0].1.as_tensor()));
    run.step(&grads(2.0), 3e-3, 0.04).unwrap();
    restored.step(&grads(2.0), 3e-3, 0.04).unwrap();
    for (a, b) in run.params.iter().zip(&restored.params) {
        assert_eq!(bits(a.var.as_tensor()), bits(b.var.as_tensor()));
    }
    // A checkpoint of another model is refused, naming the tensor.
    let mut other = AdamW::new(
        vec![(
            "blocks.0.attn.qkv.weight".into(),
            Var::zeros((3, 4), DType::F32, &Device::Cpu).unwrap(),
        )],
        AdamWConfig::default(),
    )
    .unwrap();
    let e = load(&path, &mut other, None).unwrap_err().to_string();
    assert!(e.contains("model.blocks.0.attn.qkv.weight"), "{e}");
}
