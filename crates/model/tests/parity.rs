//! Our logits against PyTorch's, for a model built in PyTorch from the spec
//! (fixtures/gen/make_model.py), at several input sizes and soft-mask rates.

mod common;
use candle_core::{DType, Device, Tensor};
use common::max_abs_diff;
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
    assert!(
        e.contains("number of heads is unknown: give the architecture"),
        "{e}"
    );
}

/// bf16 logits of `weights` against PyTorch's f32 logits of the custom model, as a fraction of
/// the largest |logit| of the case, for every size and soft-mask rate of custom_cases.
fn bf16_errors(weights: &Path) -> Vec<(String, f32)> {
    let cases = cases("custom");
    let mut out = Vec::new();
    for size in [64usize, 96, 48] {
        let opts = LoadOptions {
            config: Some(custom()),
            img_size: Some(size),
            dtype: DType::BF16,
            ..Default::default()
        };
        let (model, _) = load(weights, &opts).unwrap();
        let x = cases[&format!("input_{size}")]
            .to_dtype(DType::F32)
            .unwrap();
        for r in ["0.0", "0.5", "1.0"] {
            let want = &cases[&format!("logits_{size}_r{r}")];
            let got = model
                .forward_with(&x, r.parse().unwrap())
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let scale = want
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            out.push((format!("{size}, r={r}"), max_abs_diff(&got, want) / scale));
        }
    }
    out
}

/// bf16 inference may differ from PyTorch's f32 logits by 2.5% of the largest |logit|.
///
/// Measured (`cargo test -p illama-model --test parity bf16 -- --nocapture`): 0.49% to 1.00% over
/// the 9 cases (the largest at 96, r=0.5); the logits reach 0.27 to 0.30. Rounding the weights
/// alone to bf16 costs 0.36% in PyTorch. This bound cannot see the soft-mask rate on this model
/// (r=0 against r=1 moves its f32 logits by only 0.5-0.7%); f32 parity above checks that at 1e-4.
const BF16_TOLERANCE: f32 = 0.025;

#[test]
fn bf16_inference_stays_close_to_f32() {
    let errors = bf16_errors(&fixtures().join("custom.safetensors"));
    assert_eq!(errors.len(), 9);
    for (case, err) in &errors {
        eprintln!(
            "bf16 {case}: max |diff| {:.3}% of the largest |logit|",
            err * 100.0
        );
    }
    for (case, err) in &errors {
        assert!(
            *err <= BF16_TOLERANCE,
            "bf16 at {case}: max |diff| {:.3}% of the largest |logit| (bound {}%)",
            err * 100.0,
            BF16_TOLERANCE * 100.0
        );
    }
}

/// The bound is tight enough to see a wrong model: the final RMSNorm's weights 10% off (which
/// moves PyTorch's f32 logits by 8-9% of the largest) fails it at every size and rate.
#[test]
fn bf16_bound_rejects_slightly_wrong_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = candle_core::safetensors::load(fixtures().join("custom.safetensors"), &Device::Cpu)
        .unwrap();
    let w = (t["norm.weight"].clone() * 1.1).unwrap();
    t.insert("norm.weight".into(), w);
    let p = dir.path().join("norm_off.safetensors");
    candle_core::safetensors::save(&t, &p).unwrap();
    for (case, err) in bf16_errors(&p) {
        eprintln!("bf16, norm 10% off, {case}: {:.3}%", err * 100.0);
        assert!(
            err > BF16_TOLERANCE,
            "bf16 at {case} with wrong weights: {:.3}% passes the {}% bound",
            err * 100.0,
            BF16_TOLERANCE * 100.0
        );
    }
}

/// Mixed-precision (f32 weights, bf16 matmuls) logits of `weights` against PyTorch's f32
/// logits of the custom model, as a fraction of the case's largest |logit|, for every size and
/// soft-mask rate, through the inference path and the training path (the fused CPU kernels);
/// with each, whether the logits equal our f32 logits bit for bit.
fn mixed_errors(weights: &Path) -> Vec<(String, f32, bool)> {
    use illama_model::{DropPath, Precision};
    let cases = cases("custom");
    let mut out = Vec::new();
    for size in [64usize, 96, 48] {
        let opts = LoadOptions {
            config: Some(custom()),
            img_size: Some(size),
            ..Default::default()
        };
        let (f32_model, _) = load(weights, &opts).unwrap();
        let model = f32_model.clone().with_precision(Precision::Bf16);
        assert_eq!(model.dtype(), DType::F32, "the weights stay f32");
        let x = &cases[&format!("input_{size}")];
        for r in ["0.0", "0.5", "1.0"] {
            let want = &cases[&format!("logits_{size}_r{r}")];
            let rate: f64 = r.parse().unwrap();
            let scale = want
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            for train in [false, true] {
                let run = |m: &illama_model::Illama| {
                    if train {
                        m.forward_train(x, rate, DropPath::default()).unwrap()
                    } else {
                        m.forward_with(x, rate).unwrap()
                    }
                };
                let got = run(&model);
                assert_eq!(got.dtype(), DType::F32, "logits come back in f32");
                let identical = max_abs_diff(&got, &run(&f32_model)) == 0.0;
                let path = if train { "train" } else { "inference" };
                out.push((
                    format!("{size}, r={r}, {path}"),
                    max_abs_diff(&got, want) / scale,
                    identical,
                ));
            }
        }
    }
    out
}

/// `--precision bf16` may differ from PyTorch's f32 logits by 1.5% of the largest |logit|.
///
/// Measured (`cargo test -p illama-model --test parity mixed -- --nocapture`): 0.41% to 0.89%
/// over the 18 cases (9 sizes and rates, each through the inference and the training path, which
/// agree to the printed digits; the largest at 64, r=1.0). Pure bf16 (`--dtype bf16`) measures
/// 0.49% to 1.00%: the matmul inputs rounded to bf16 dominate both.
const MIXED_BF16_TOLERANCE: f32 = 0.015;

#[test]
fn mixed_precision_bf16_stays_close_to_pytorch_f32_and_is_not_f32() {
    let errors = mixed_errors(&fixtures().join("custom.safetensors"));
    assert_eq!(errors.len(), 18);
    for (case, err, _) in &errors {
        eprintln!(
            "mixed bf16 {case}: max |diff| {:.3}% of the largest |logit|",
            err * 100.0
        );
    }
    for (case, err, identical) in &errors {
        assert!(
            !identical,
            "mixed bf16 at {case}: the logits equal the f32 ones bit for bit, bf16 was not used"
        );
        assert!(
            *err <= MIXED_BF16_TOLERANCE,
            "mixed bf16 at {case}: max |diff| {:.3}% of the largest |logit| (bound {}%)",
            err * 100.0,
            MIXED_BF16_TOLERANCE * 100.0
        );
    }
}

/// The bound sees a wrong model: the final RMSNorm's weights 10% off fail it in every case.
#[test]
fn mixed_precision_bound_rejects_slightly_wrong_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = candle_core::safetensors::load(fixtures().join("custom.safetensors"), &Device::Cpu)
        .unwrap();
    let w = (t["norm.weight"].clone() * 1.1).unwrap();
    t.insert("norm.weight".into(), w);
    let p = dir.path().join("norm_off.safetensors");
    candle_core::safetensors::save(&t, &p).unwrap();
    for (case, err, _) in mixed_errors(&p) {
        assert!(
            err > MIXED_BF16_TOLERANCE,
            "mixed bf16 at {case} with wrong weights: {:.3}% passes the {}% bound",
            err * 100.0,
            MIXED_BF16_TOLERANCE * 100.0
        );
    }
}
