//! End-to-end tests of `illama-tools select`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/selection")
        .join(name)
}

fn select(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_illama-tools"));
    c.current_dir(dir).arg("select").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.env_remove("HF_HUB_CACHE");
    c.output().unwrap()
}

const CUSTOM: [&str; 10] = [
    "--to",
    "custom",
    "--dim",
    "40",
    "--depth",
    "3",
    "--heads",
    "2",
    "--mlp-hidden",
    "112",
];

#[test]
fn default_output_name_json_report_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = fixture("llama_hf_safetensors");
    let mut args = vec!["--from", teacher.to_str().unwrap(), "--json"];
    args.extend(CUSTOM);
    let out = select(dir.path(), &args, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["teacher"]["layout"], "hugging-face");
    assert_eq!(r["teacher"]["config"]["hidden"], 96);
    assert_eq!(r["layers"], serde_json::json!([0, 1, 2]));
    assert_eq!(r["tensors"].as_array().unwrap().len(), 21);
    assert_eq!(r["tensors"][1]["name"], "blocks.0.attn.qkv.weight");
    assert_eq!(
        r["tensors"][1]["indices"],
        serde_json::json!(["288->120", "96->40"])
    );
    assert!(r["index_sets"]["96->40"]["values"].is_array());
    let written = dir.path().join("illama_ws_custom.safetensors");
    assert!(written.is_file());
    let store = illama_formats::TensorStore::open(&written).unwrap();
    assert_eq!(store.metadata()["selection.element_method"], "uniform");
    assert_eq!(store.metadata()["teacher.fingerprint"].len(), 64);
    // The real digests are recorded only when asked for (--hash-teacher).
    assert!(!store.metadata().contains_key("teacher.sha256"));

    // A second run refuses to overwrite; --force replaces.
    let again = select(dir.path(), &args, &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn names_resolve_in_the_local_hub_cache_only() {
    let dir = tempfile::tempdir().unwrap();
    let hf_home = dir.path().join("hf");
    let snap = hf_home.join("hub/models--meta-llama--Llama-2-7b-hf/snapshots/0123abc");
    std::fs::create_dir_all(&snap).unwrap();
    for e in std::fs::read_dir(fixture("llama_hf_safetensors")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), snap.join(e.file_name())).unwrap();
    }
    std::fs::create_dir_all(hf_home.join("hub/models--meta-llama--Llama-2-7b-hf/refs")).unwrap();
    std::fs::write(
        hf_home.join("hub/models--meta-llama--Llama-2-7b-hf/refs/main"),
        "0123abc",
    )
    .unwrap();
    let mut args = vec!["--from", "llama2-7b", "-o", "ws.pth"];
    args.extend(CUSTOM);
    let out = select(dir.path(), &args, &[("HF_HOME", &hf_home)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("llama2-7b -> meta-llama/Llama-2-7b-hf"));
    // -o with .pth picks the .pth format.
    let store = illama_formats::TensorStore::open(dir.path().join("ws.pth")).unwrap();
    assert_eq!(store.format(), illama_formats::Format::TorchZip);

    let mut args = vec!["--from", "llama2-13b"];
    args.extend(CUSTOM);
    let out = select(dir.path(), &args, &[("HF_HOME", &hf_home)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("models--meta-llama--Llama-2-13b-hf"), "{err}");
    assert!(err.contains("looked at"), "{err}");
}

#[test]
fn bad_arguments_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = fixture("llama_hf_safetensors");
    let t = teacher.to_str().unwrap();
    for (args, want) in [
        (
            vec!["--from", t, "--to", "custom", "--dim", "40"],
            "--to custom needs",
        ),
        (vec!["--from", t, "--to", "huge"], "unknown student 'huge'"),
        (vec!["--from", t, "--to", "base"], "larger than the teacher"),
        (
            vec![
                "--from", t, "--to", "custom", "--dim", "40", "--depth", "2", "--heads", "2",
                "--layers", "0,x",
            ],
            "--layers '0,x'",
        ),
        (
            vec![
                "--from", t, "--to", "custom", "--dim", "40", "--depth", "2", "--heads", "3",
            ],
            "not divisible",
        ),
    ] {
        let out = select(dir.path(), &args, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A llama.cpp GGUF teacher end to end: `inspect` lists its tensors with their ggml types, and
/// `select --from FILE.gguf` writes what selection from the Hugging Face original writes; a
/// truncated copy is refused, naming the file, with nothing written.
#[test]
fn gguf_teachers_inspect_and_select_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = fixture("gguf/llama_mixed.gguf");
    let out = Command::new(env!("CARGO_BIN_EXE_illama-tools"))
        .args(["inspect", gguf.to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    for line in [
        "blk.0.attn_k.weight",
        "Q4_0",
        "blk.3.ffn_down.weight",
        "general.architecture: llama",
    ] {
        assert!(table.contains(line), "{line} not in:\n{table}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_illama-tools"))
        .args(["inspect", gguf.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format"], "gguf");
    let q = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "blk.0.attn_q.weight")
        .unwrap();
    assert_eq!(q["ggml_type"], "Q8_0");
    assert_eq!(q["shape"], serde_json::json!([96, 96]));

    let teacher = fixture("gguf/llama_f16.gguf");
    let mut args = vec!["--from", teacher.to_str().unwrap(), "-o", "s.safetensors"];
    args.extend(CUSTOM);
    let out = select(dir.path(), &args, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read(dir.path().join("s.safetensors")).unwrap();
    let want_store =
        illama_formats::TensorStore::open(fixture("expected_llama_custom_f16.safetensors"))
            .unwrap();
    let got_store = illama_formats::TensorStore::open(dir.path().join("s.safetensors")).unwrap();
    assert!(!got.is_empty());
    for t in want_store.tensors() {
        let g = got_store.get(&t.name).unwrap();
        assert_eq!(
            got_store.bytes(g).unwrap(),
            want_store.bytes(t).unwrap(),
            "{}",
            t.name
        );
    }

    let bytes = std::fs::read(&teacher).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut args = vec!["--from", cut.to_str().unwrap(), "-o", "cut.safetensors"];
    args.extend(CUSTOM);
    let out = select(dir.path(), &args, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cut.gguf") && err.contains("truncated"),
        "{err}"
    );
    assert!(!dir.path().join("cut.safetensors").exists());
}

/// `--hash-teacher` records what `sha256sum` prints for every teacher file (shards, index, config)
/// in the output's metadata and the report, and the tensors are those of a run without it.
#[test]
fn hash_teacher_records_the_sha256_of_every_file() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let teacher = fixture("llama_hf_safetensors");
    let mut args = vec![
        "--from",
        teacher.to_str().unwrap(),
        "--json",
        "-o",
        "h.safetensors",
        "--hash-teacher",
    ];
    args.extend(CUSTOM);
    let out = select(dir.path(), &args, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let store = illama_formats::TensorStore::open(dir.path().join("h.safetensors")).unwrap();
    let recorded: Value = serde_json::from_str(&store.metadata()["teacher.sha256"]).unwrap();
    assert_eq!(recorded, r["teacher"]["sha256"]);
    let mut names: Vec<String> = std::fs::read_dir(&teacher)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors") || n.ends_with(".json"))
        .filter(|n| n != "generation_config.json")
        .collect();
    names.sort();
    let listed: Vec<String> = recorded.as_object().unwrap().keys().cloned().collect();
    assert_eq!(listed, names);
    for n in &names {
        let want: String = Sha256::digest(std::fs::read(teacher.join(n)).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(recorded[n], want.as_str(), "{n}");
    }
    let plain = fixture("expected_llama_custom_f16.safetensors");
    let want = illama_formats::TensorStore::open(&plain).unwrap();
    for t in want.tensors() {
        let g = store.get(&t.name).unwrap();
        assert_eq!(
            store.bytes(g).unwrap(),
            want.bytes(t).unwrap(),
            "{}",
            t.name
        );
    }
}
