//! `--device` on every command that runs the model: a clear error for an unknown device and,
//! in a build without the `cuda` feature, for any CUDA device (the GPU's own errors are checked
//! by scripts/gpu-check.sh, on a GPU); `--precision` refuses what it does not know.

mod common;

use common::{bin, fixture};

/// The arguments of each model-running command up to its device, with real inputs where the
/// command reads them before choosing the device.
fn commands(dir: &std::path::Path) -> Vec<Vec<String>> {
    let weights = fixture("model/custom.safetensors").display().to_string();
    let data = dir.display().to_string();
    let out = dir.join("run").display().to_string();
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let input = dir.join("x.safetensors");
    let x = candle_core::Tensor::zeros(
        (1, 3, 64, 64),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let map: std::collections::HashMap<String, candle_core::Tensor> =
        [("pixel_values".to_string(), x)].into();
    candle_core::safetensors::save(&map, &input).unwrap();
    vec![
        s(&[
            "logits",
            "--weights",
            &weights,
            "--model",
            "custom:64,3,2",
            "--input",
            &input.display().to_string(),
            "--output",
            &dir.join("l.safetensors").display().to_string(),
        ]),
        s(&["verify", "--weights", &weights, "--imagenet", &data]),
        s(&[
            "predict",
            "--weights",
            &weights,
            &fixture("images/val").display().to_string(),
        ]),
        s(&[
            "finetune",
            "--train-dir",
            &data,
            "--disable-eval",
            "--model",
            "tiny",
            "--output-dir",
            &out,
        ]),
        s(&[
            "bench-train",
            "--model",
            "custom:32,2,2",
            "--input-size",
            "32",
        ]),
    ]
}

fn stderr_of(args: &[String]) -> String {
    let o = bin().args(args).output().unwrap();
    assert!(!o.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn an_unknown_device_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for mut args in commands(dir.path()) {
        args.extend(["--device".into(), "gpu0".into()]);
        let e = stderr_of(&args);
        assert!(
            e.contains("unknown device 'gpu0': use cpu or cuda:N"),
            "{}: {e}",
            args[0]
        );
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_cuda_build_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    for device in ["cuda", "cuda:1"] {
        for mut args in commands(dir.path()) {
            args.extend(["--device".into(), device.into()]);
            let e = stderr_of(&args);
            assert!(
                e.contains(&format!(
                    "device {device}: this build has no CUDA support (build with --features cuda"
                )),
                "{} --device {device}: {e}",
                args[0]
            );
        }
    }
}

#[test]
fn an_unknown_precision_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for mut args in commands(dir.path()) {
        args.extend(["--precision".into(), "fp8".into()]);
        let e = stderr_of(&args);
        assert!(
            e.contains("'fp8': expected f32 or bf16"),
            "{}: {e}",
            args[0]
        );
    }
}

/// The hidden `bench-train` (what scripts/gpu-check.sh times) runs a step in both precisions and
/// reports it as JSON.
#[test]
fn bench_train_reports_a_step() {
    for precision in ["f32", "bf16"] {
        let o = bin()
            .args([
                "bench-train",
                "--model",
                "custom:32,2,2",
                "--input-size",
                "32",
                "--batch-size",
                "2",
                "--steps",
                "1",
                "--warmup",
                "0",
                "--precision",
                precision,
                "--json",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["precision"], precision);
        assert!(r["images_per_second"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["last_loss"].as_f64().unwrap().is_finite(), "{r}");
    }
}
