//! Our AdamW against torch.optim.AdamW (fixtures/gen/make_adamw.py): four steps with the recipe's
//! two parameter groups, changing lr and weight decay, and a parameter without a gradient.

mod common;

use candle_core::Var;
use common::{golden, max_diff};
use illama_train::optim::{AdamW, AdamWConfig};

#[test]
fn four_steps_match_pytorch() {
    let t = golden("adamw.safetensors");
    let names = [
        "blocks.0.attn.qkv.weight",
        "blocks.0.attn.proj.bias",
        "blocks.0.norm1.weight",
        "pos_embed",
        "cls_token",
        "head.weight",
    ];
    let named: Vec<(String, Var)> = names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                Var::from_tensor(&t[&format!("init.{n}")]).unwrap(),
            )
        })
        .collect();
    let mut opt = AdamW::new(named, AdamWConfig::default()).unwrap();
    let decaying: Vec<&str> = opt
        .params
        .iter()
        .filter(|p| p.decay)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(decaying, ["blocks.0.attn.qkv.weight", "head.weight"]);
    let schedule = [(1e-3, 0.05), (2e-3, 0.05), (4e-3, 0.04), (3e-3, 0.03)];
    let mut worst = 0f32;
    for (step, (lr, wd)) in schedule.into_iter().enumerate() {
        let grads: Vec<_> = names
            .iter()
            .map(|n| t.get(&format!("grad.{step}.{n}")).cloned())
            .collect();
        assert_eq!(
            grads.iter().filter(|g| g.is_none()).count(),
            usize::from(step == 2)
        );
        opt.step(&grads, lr, wd).unwrap();
        for (p, n) in opt.params.iter().zip(names) {
            let want = &t[&format!("after.{step}.{n}")];
            let diff = max_diff(p.var.as_tensor(), want);
            worst = worst.max(diff);
            assert!(diff < 1e-6, "step {step} {n}: max |diff| {diff}");
        }
    }
    eprintln!("AdamW vs torch: max |diff| {worst:e} over 4 steps");
}
