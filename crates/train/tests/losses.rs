//! The recipe's losses (values and gradients), gradient clipping and EMA against timm 0.5.4 and
//! torch (fixtures/gen/make_losses.py).

mod common;

use candle_core::{Tensor, Var};
use common::{golden, max_diff};
use illama_train::clip::{clip_grad_norm, update_ema};
use illama_train::loss::{label_smoothing_cross_entropy, soft_target_cross_entropy};

#[test]
fn losses_and_their_gradients_match_timm() {
    let t = golden("losses.safetensors");
    for name in ["soft", "smooth"] {
        let x = Var::from_tensor(&t["logits"]).unwrap();
        let loss = match name {
            "soft" => soft_target_cross_entropy(x.as_tensor(), &t["targets"]).unwrap(),
            _ => label_smoothing_cross_entropy(x.as_tensor(), &t["labels"], 0.1).unwrap(),
        };
        let want = t[&format!("{name}.loss")].flatten_all().unwrap();
        let got = loss.reshape(1).unwrap();
        let rel = max_diff(&got, &want)
            / want
                .abs()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
        assert!(rel < 1e-6, "{name}: loss relative difference {rel}");
        let grads = loss.backward().unwrap();
        let g = grads
            .get(x.as_tensor())
            .expect("a gradient reaches the logits");
        let d = max_diff(g, &t[&format!("{name}.grad")]);
        assert!(d < 1e-7, "{name}: gradient max |diff| {d}");
    }
}

#[test]
fn clipping_and_ema_match_torch_and_timm() {
    let t = golden("losses.safetensors");
    for (name, max_norm) in [("clip_small", 1.0), ("clip_large", 1000.0)] {
        let mut grads: Vec<Option<Tensor>> = (0..3)
            .map(|i| Some(t[&format!("clip.input.{i}")].clone()))
            .collect();
        let norm = clip_grad_norm(&mut grads, max_norm).unwrap();
        let want = t[&format!("{name}.norm")]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        assert!(
            (norm as f32 - want).abs() < 1e-5,
            "{name}: norm {norm} vs {want}"
        );
        for (i, g) in grads.iter().enumerate() {
            let d = max_diff(g.as_ref().unwrap(), &t[&format!("{name}.grad.{i}")]);
            assert!(d < 1e-6, "{name} grad {i}: max |diff| {d}");
        }
    }
    let ema: Vec<Var> = ["weight", "bias"]
        .iter()
        .map(|n| Var::from_tensor(&t[&format!("ema.before.{n}")]).unwrap())
        .collect();
    let model: Vec<Var> = ["weight", "bias"]
        .iter()
        .map(|n| Var::from_tensor(&t[&format!("ema.model.{n}")]).unwrap())
        .collect();
    update_ema(&ema, &model, 0.9999).unwrap();
    for (e, n) in ema.iter().zip(["weight", "bias"]) {
        let d = max_diff(e.as_tensor(), &t[&format!("ema.after.{n}")]);
        assert!(d < 1e-7, "ema {n}: max |diff| {d}");
    }
}
