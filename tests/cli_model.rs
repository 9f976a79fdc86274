//! End-to-end tests of `illama-tools logits`.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/model")
        .join(name)
}

#[test]
fn logits_command_matches_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let cases =
        candle_core::safetensors::load(fixture("custom_cases.safetensors"), &Device::Cpu).unwrap();
    for size in [64usize, 96] {
        let x = cases[&format!("input_{size}")]
            .to_dtype(DType::F32)
            .unwrap();
        let input = dir.path().join(format!("x{size}.safetensors"));
        let map: HashMap<String, Tensor> = [("pixel_values".to_string(), x)].into();
        candle_core::safetensors::save(&map, &input).unwrap();
        let output = dir.path().join(format!("l{size}.safetensors"));
        let out = Command::new(env!("CARGO_BIN_EXE_illama-tools"))
            .args(["logits", "--weights"])
            .arg(fixture("custom.pth"))
            .args([
                "--model",
                "custom:64,3,2",
                "--soft-mask-rate",
                "0.5",
                "--input",
            ])
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = candle_core::safetensors::load(&output, &Device::Cpu).unwrap()["logits"].clone();
        let want = &cases[&format!("logits_{size}_r0.5")];
        let diff: f32 = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff <= 1e-4, "{size}: {diff}");
    }
}

#[test]
fn logits_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_illama-tools"))
        .args(["logits", "--weights"])
        .arg(fixture("custom.safetensors"))
        .arg("--input")
        .arg(fixture("custom_cases.safetensors"))
        .arg("--output")
        .arg(dir.path().join("l.safetensors"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tensor 'pixel_values'"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
