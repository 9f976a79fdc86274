//! End-to-end tests of `illama-tools inspect` and `convert` as a user runs them.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_illama-tools"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn ok_json(args: &[&str]) -> Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn convert_defaults_to_the_other_format_beside_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("illama_tiny.pth");
    std::fs::copy(fixture("formats/wrapped_model.pth"), &input).unwrap();
    let report = ok_json(&["convert", input.to_str().unwrap(), "--json", "--verify"]);
    let out = dir.path().join("illama_tiny.safetensors");
    assert!(out.is_file());
    assert_eq!(report["output_format"], "safetensors");
    assert_eq!(report["tensors"], 8);
    assert_eq!(report["verified"], true);
    assert_eq!(report["files"][0]["sha256"].as_str().unwrap().len(), 64);

    // And back: safetensors -> .pth by default.
    std::fs::remove_file(&input).unwrap();
    let report = ok_json(&["convert", out.to_str().unwrap(), "--json"]);
    assert_eq!(report["output_format"], "pth");
    assert!(input.is_file());
}

#[test]
fn existing_output_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors");
    std::fs::write(&out, b"keep me").unwrap();
    let input = fixture("formats/state_dict.pth");
    let r = run(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("--force"));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let r = run(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--force",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_ne!(std::fs::read(&out).unwrap(), b"keep me");
}

#[test]
fn failures_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        "hostile/truncated.pth",
        "hostile/view_out_of_bounds.pth",
        "hostile/os_system.pth",
        "hostile/missing_shard",
    ] {
        let out = dir.path().join("out.safetensors");
        let r = run(&[
            "convert",
            fixture(bad).to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(r.status.code(), Some(1), "{bad}");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.starts_with("error: "), "{bad}: {err}");
        assert!(!err.contains("panicked"), "{bad}: {err}");
        assert!(
            entries(dir.path()).is_empty(),
            "{bad} left {:?}",
            entries(dir.path())
        );
    }
}

#[test]
fn inspect_lists_tensors_and_checkpoint_entries() {
    let r = ok_json(&[
        "inspect",
        fixture("formats/training_checkpoint.pth").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r["format"], "torch-zip");
    assert_eq!(r["tensor_count"], 8);
    assert_eq!(r["parameters"], 220);
    let others: Vec<&str> = r["other_entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        others,
        [
            "model_ema",
            "optimizer",
            "epoch",
            "scaler",
            "args",
            "max_accuracy"
        ]
    );
    assert!(r["warnings"][0]
        .as_str()
        .unwrap()
        .contains("embed.weight, lin.weight"));

    let text = run(&[
        "inspect",
        fixture("formats/sharded_safetensors").to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("safetensors, sharded (2 files)"), "{text}");
    assert!(
        text.contains("[model-00002-of-00002.safetensors]"),
        "{text}"
    );
}

#[test]
fn key_wrap_and_shards_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let ema = dir.path().join("ema.pth");
    let ckpt = fixture("formats/training_checkpoint.pth");
    ok_json(&[
        "convert",
        ckpt.to_str().unwrap(),
        "--key",
        "model_ema",
        "--wrap",
        "model",
        "-o",
        ema.to_str().unwrap(),
        "--json",
    ]);
    // The wrapped output is read back through its 'model' entry automatically.
    let r = ok_json(&["inspect", ema.to_str().unwrap(), "--json"]);
    assert_eq!(
        r["root"].as_str().unwrap().split(':').next().unwrap(),
        "'model'"
    );
    assert_eq!(r["tensor_count"], 8);

    let shards = dir.path().join("shards");
    let r = ok_json(&[
        "convert",
        ckpt.to_str().unwrap(),
        "--max-shard-size",
        "500B",
        "-o",
        shards.to_str().unwrap(),
        "--json",
    ]);
    let n = r["files"].as_array().unwrap().len();
    assert!(n >= 2);
    assert!(entries(&shards).contains(&"model.safetensors.index.json".to_string()));
    let r = ok_json(&["inspect", shards.to_str().unwrap(), "--json"]);
    assert_eq!(r["tensor_count"], 8);
}

#[test]
fn usage_errors() {
    let r = run(&["convert", "x.pth", "--max-shard-size", "lots"]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("not a size"));
    let r = run(&["convert", "/nonexistent/model.pth"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("/nonexistent/model.pth"));
    let r = run(&["quickstart", "--anything"]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--anything"));
    assert!(r.stdout.is_empty());
    let help = run(&["convert", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("Examples:"));
}

/// A checkpoint as PyTorch 0.3 wrote it under Python 2 (fixtures/formats/legacy_py2): inspect
/// finds its state dict and entries, convert writes and verifies safetensors.
#[test]
fn python2_legacy_checkpoint_inspects_and_converts() {
    let input = fixture("formats/legacy_py2/torch03_checkpoint.pth");
    let r = ok_json(&["inspect", input.to_str().unwrap(), "--json"]);
    assert_eq!(r["format"], "torch-legacy");
    assert_eq!(r["tensor_count"], 6);
    let others: Vec<&str> = r["other_entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for name in ["epoch", "arch", "desc", "note", "step"] {
        assert!(others.contains(&name), "{name} not in {others:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("resnet.safetensors");
    let report = ok_json(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
        "--verify",
    ]);
    assert_eq!(report["output_format"], "safetensors");
    assert_eq!(report["tensors"], 6);
    assert_eq!(report["verified"], true);
    let r = ok_json(&["inspect", out.to_str().unwrap(), "--json"]);
    assert_eq!(r["tensor_count"], 6);
}
