//! Our logits against PyTorch's, for a model built in PyTorch from the spec
//! (fixtures/gen/make_model.py), at several input sizes and soft-mask rates.

use candle_core::{DType, Device, Tensor};
use illama_arch::IllamaConfig;
use illama_model::{load, LoadOptions};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/model")
}

fn cases(name: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixtures().join(format!("{name}_cases.safetensors")),
        &Device::Cpu,
    )
    .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
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

fn check(weights: &Path, config: Option<IllamaConfig>, case_name: &str, sizes: &[usize]) {
    let cases = cases(case_name);
    for &size in sizes {
        let opts = LoadOptions {
            config,
            img_size: Some(size),
            ..Default::default()
        };
        let (model, report) =
            load(weights, &opts).unwrap_or_else(|e| panic!("{}: {e}", weights.display()));
        assert_eq!(report.config.img_size, size);
        let pos = model.pos_embed.to_dtype(DType::F32).unwrap();
        let diff = max_abs_diff(&pos, &cases[&format!("pos_embed_{size}")]);
        assert!(diff <= 1e-6, "pos_embed at {size}: max |diff| {diff}");
        let x = cases[&format!("input_{size}")]
            .to_dtype(DType::F32)
            .unwrap();
        for r in ["0.0", "0.5", "1.0"] {
            let want = &cases[&format!("logits_{size}_r{r}")];
            let got = model.forward_with(&x, r.parse().unwrap()).unwrap();
            let diff = max_abs_diff(&got, want);
            assert!(
                diff <= 1e-4,
                "{} at {size}, r={r}: max |diff| {diff}",
                weights.display()
            );
        }
    }
}

fn custom() -> IllamaConfig {
    IllamaConfig {
        dim: 64,
        depth: 3,
        heads: 2,
        mlp_hidden: 256,
        patch_size: 16,
        in_chans: 3,
        num_classes: 10,
        img_size: 64,
    }
}

#[test]
fn custom_model_matches_pytorch_at_three_sizes() {
    check(
        &fixtures().join("custom.safetensors"),
        Some(custom()),
        "custom",
        &[64, 96, 48],
    );
}

#[test]
fn reference_style_pth_checkpoint_loads_through_its_model_entry() {
    check(
        &fixtures().join("custom.pth"),
        Some(custom()),
        "custom",
        &[64],
    );
}

#[test]
fn tiny_preset_matches_pytorch_and_is_inferred_from_shapes() {
    let (_, report) = load(
        &fixtures().join("tiny.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(report.config, illama_arch::Preset::Tiny.config());
    check(
        &fixtures().join("tiny.safetensors"),
        None,
        "tiny",
        &[224, 256],
    );
}

#[test]
fn strict_loading_names_missing_and_unexpected_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = candle_core::safetensors::load(fixtures().join("custom.safetensors"), &Device::Cpu)
        .unwrap();
    t.remove("blocks.1.mlp.fc3.weight");
    t.insert(
        "extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let p = dir.path().join("broken.safetensors");
    candle_core::safetensors::save(&t, &p).unwrap();
    let e = load(
        &p,
        &LoadOptions {
            config: Some(custom()),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("missing: blocks.1.mlp.fc3.weight") && e.contains("unexpected: extra.weight"),
        "{e}"
    );
    // Without --model, an unknown width cannot tell its heads.
    let e = load(
        &fixtures().join("custom.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("pass --model"), "{e}");
}

#[test]
fn bf16_inference_stays_close_to_f32() {
    let cases = cases("custom");
    let x = cases["input_64"].to_dtype(DType::F32).unwrap();
    let want = &cases["logits_64_r0.0"];
    let opts = LoadOptions {
        config: Some(custom()),
        dtype: DType::BF16,
        ..Default::default()
    };
    let (model, _) = load(&fixtures().join("custom.safetensors"), &opts).unwrap();
    let got = model.forward(&x).unwrap().to_dtype(DType::F32).unwrap();
    let diff = max_abs_diff(&got, want);
    let scale = want
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        diff <= 0.05 * scale.max(1.0),
        "bf16 max |diff| {diff} (logits up to {scale})"
    );
}
