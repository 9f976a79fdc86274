//! One training step of the Candle model against PyTorch (fixtures/gen/make_train_step.py: the
//! spec-built iLLaMA, soft mask 0.5, soft targets): the loss, the gradient of every parameter (a
//! fused op without a backward pass would leave earlier parameters without one), and the weights
//! after one AdamW step with the recipe's groups.

mod common;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use common::{golden, max_diff, trainable};
use illama_arch::IllamaConfig;
use illama_model::{DropPath, Illama};
use illama_train::loss::soft_target_cross_entropy;
use illama_train::optim::{AdamW, AdamWConfig};
use std::collections::HashMap;

/// The fixture, and the Candle model built with its weights (parameters sorted by name).
fn model_with_fixture_weights() -> (HashMap<String, Tensor>, Illama, Vec<(String, Var)>) {
    let t = golden("one_step.safetensors");
    let config = IllamaConfig {
        img_size: 32,
        num_classes: 10,
        ..IllamaConfig::new(32, 2, 2)
    };
    let (model, named) = trainable(config);
    assert_eq!(
        named.len(),
        t.keys().filter(|k| k.starts_with("weight.")).count()
    );
    for (n, v) in &named {
        v.set(&t[&format!("weight.{n}")]).unwrap();
    }
    (t, model, named)
}

/// The two ways a training step can differentiate the model: candle's autograd through the
/// whole graph, and the trainer's (`train_forward`: the blocks by hand on the CPU).
#[derive(Clone, Copy, Debug)]
enum Path {
    Autograd,
    Trainer,
}

/// The loss (divided by `divide`) and its gradients.
fn loss_and_grads(
    model: &Illama,
    x: &Tensor,
    targets: &Tensor,
    divide: f64,
    path: Path,
) -> (f32, GradStore) {
    let drop = DropPath::default();
    match path {
        Path::Autograd => {
            let logits = model.forward_train(x, 0.5, drop).unwrap();
            let loss = (soft_target_cross_entropy(&logits, targets).unwrap() / divide).unwrap();
            (loss.to_scalar::<f32>().unwrap(), loss.backward().unwrap())
        }
        Path::Trainer => {
            let pass = model.train_forward(x, 0.5, drop).unwrap();
            let loss =
                (soft_target_cross_entropy(&pass.logits, targets).unwrap() / divide).unwrap();
            (
                loss.to_scalar::<f32>().unwrap(),
                pass.backward(&loss).unwrap(),
            )
        }
    }
}

#[test]
fn loss_gradients_and_update_match_pytorch() {
    for path in [Path::Autograd, Path::Trainer] {
        one_step(path);
    }
}

fn one_step(path: Path) {
    let (t, model, named) = model_with_fixture_weights();

    let (got, grads) = loss_and_grads(&model, &t["input"], &t["targets"], 1.0, path);
    let want = t["loss"].flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
    assert!(
        ((got - want) / want).abs() < 1e-5,
        "{path:?}: loss {got} vs {want}"
    );

    let mut worst = (0f32, String::new());
    let grad_list: Vec<Option<Tensor>> = named
        .iter()
        .map(|(n, v)| {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("no gradient reaches {n}"));
            let d = max_diff(g, &t[&format!("grad.{n}")]);
            if d > worst.0 {
                worst = (d, n.clone());
            }
            assert!(d < 1e-5, "{path:?} {n}: gradient max |diff| {d}");
            Some(g.clone())
        })
        .collect();
    eprintln!("{path:?} gradients: max |diff| {:e} ({})", worst.0, worst.1);

    let mut opt = AdamW::new(named.clone(), AdamWConfig::default()).unwrap();
    opt.step(&grad_list, 1e-3, 0.05).unwrap();
    for (n, v) in &named {
        let d = max_diff(v.as_tensor(), &t[&format!("after.{n}")]);
        assert!(
            d < 1e-5,
            "{path:?} {n}: weight after the step, max |diff| {d}"
        );
    }
}

#[test]
fn accumulated_and_clipped_step_matches_pytorch() {
    for path in [Path::Autograd, Path::Trainer] {
        accumulated_step(path);
    }
}

fn accumulated_step(path: Path) {
    let (t, model, named) = model_with_fixture_weights();
    // update_freq 2: each micro-batch's loss divided by 2, gradients summed.
    let mut sum: Vec<Option<Tensor>> = vec![None; named.len()];
    for x in [&t["input"], &t["accum.input2"]] {
        let (_, grads) = loss_and_grads(&model, x, &t["targets"], 2.0, path);
        for ((_, v), acc) in named.iter().zip(sum.iter_mut()) {
            let g = grads.get(v.as_tensor()).unwrap().clone();
            *acc = Some(match acc.take() {
                Some(a) => (a + g).unwrap(),
                None => g,
            });
        }
    }
    let norm = illama_train::clip::clip_grad_norm(&mut sum, 0.5).unwrap();
    let want = t["accum.norm"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    assert!(
        ((norm as f32 - want) / want).abs() < 1e-5,
        "{path:?}: norm {norm} vs {want}"
    );
    assert!(norm > 0.5, "the case must clip ({norm})");
    let mut opt = AdamW::new(named.clone(), AdamWConfig::default()).unwrap();
    opt.step(&sum, 1e-3, 0.05).unwrap();
    for (n, v) in &named {
        let d = max_diff(v.as_tensor(), &t[&format!("accum.after.{n}")]);
        assert!(
            d < 1e-5,
            "{path:?} {n}: weight after the step, max |diff| {d}"
        );
    }
}
