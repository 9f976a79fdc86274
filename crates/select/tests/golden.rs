//! Selection against the reference: indices computed by real PyTorch, and selected tensors
//! computed by the reference method in Python from teachers written by torch/transformers
//! (fixtures/gen/make_selection.py).

use illama_arch::IllamaConfig;
use illama_formats::NoProgress;
use illama_formats::TensorStore;
use illama_select::{
    select, uniform_indices, ElementSelection, LayerSelection, SelectOptions, TargetFormat,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/selection")
}

#[test]
fn indices_match_pytorch_for_every_preset_pair_and_400_random_pairs() {
    let golden: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("golden_indices.json")).unwrap())
            .unwrap();
    let pairs = golden["pairs"].as_array().unwrap();
    assert!(pairs.len() >= 40);
    for p in pairs {
        let (t, s) = (
            p["t"].as_u64().unwrap() as usize,
            p["s"].as_u64().unwrap() as usize,
        );
        let want: Vec<usize> = p["indices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let got = uniform_indices(t, s);
        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
        assert!(
            got.len() == want.len() && first_diff.is_none(),
            "{t} -> {s}: first difference at {first_diff:?}"
        );
    }
    for p in golden["random"].as_array().unwrap() {
        let (t, s) = (
            p["t"].as_u64().unwrap() as usize,
            p["s"].as_u64().unwrap() as usize,
        );
        let bytes: Vec<u8> = uniform_indices(t, s)
            .iter()
            .flat_map(|&i| (i as i64).to_le_bytes())
            .collect();
        let got: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, p["sha256"].as_str().unwrap(), "{t} -> {s}");
    }
}

fn student(dim: usize, depth: usize, heads: usize, mlp_hidden: usize) -> IllamaConfig {
    IllamaConfig {
        mlp_hidden,
        ..IllamaConfig::new(dim, depth, heads)
    }
}

fn options(teacher: &Path, s: IllamaConfig, out: &Path) -> SelectOptions {
    SelectOptions {
        teacher: teacher.to_string_lossy().into_owned(),
        student: s,
        student_name: "custom".into(),
        layers: LayerSelection::First,
        elements: ElementSelection::Uniform,
        dtype: None,
        format: TargetFormat::Safetensors,
        output: Some(out.to_path_buf()),
        force: false,
        hash_teacher: false,
    }
}

/// Asserts two files hold the same tensor names, dtypes, shapes and bytes.
fn assert_same_tensors(got: &Path, want: &Path) {
    let (g, w) = (
        TensorStore::open(got).unwrap(),
        TensorStore::open(want).unwrap(),
    );
    let mut gn: Vec<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
    let mut wn: Vec<&str> = w.tensors().iter().map(|t| t.name.as_str()).collect();
    gn.sort();
    wn.sort();
    assert_eq!(gn, wn, "{}", got.display());
    for t in w.tensors() {
        let o = g.get(&t.name).unwrap();
        assert_eq!((o.dtype, &o.shape), (t.dtype, &t.shape), "{}", t.name);
        assert!(
            g.bytes(o).unwrap() == w.bytes(t).unwrap(),
            "{}: {} differs from {}",
            t.name,
            got.display(),
            want.display()
        );
    }
}

#[test]
fn every_layout_gives_the_reference_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let students = [
        ("custom", student(40, 3, 2, 112)),
        ("first2", student(48, 2, 2, 128)),
    ];
    for (sname, s) in students {
        let f16 = fixtures().join(format!("expected_llama_{sname}_f16.safetensors"));
        let bf16 = fixtures().join(format!("expected_llama_{sname}_bf16.safetensors"));
        for (teacher, dtype, want) in [
            ("llama_hf_safetensors", None, &f16),
            ("llama_hf_bin", None, &f16),
            ("llama_meta_mp1", Some(illama_formats::DType::F16), &f16),
            ("llama_meta_mp2", Some(illama_formats::DType::F16), &f16),
            ("llama_meta_mp1", None, &bf16),
            ("llama_meta_mp2", None, &bf16),
        ] {
            let out = dir
                .path()
                .join(format!("{teacher}-{sname}-{dtype:?}.safetensors"));
            let mut o = options(&fixtures().join(teacher), s, &out);
            o.dtype = dtype;
            let report = select(&o, &NoProgress).unwrap_or_else(|e| panic!("{teacher}: {e}"));
            assert_eq!(report.tensors.len(), 7 * s.depth);
            assert_same_tensors(&out, want);
        }
    }
}

/// `--layers uniform` picks teacher layers by the element rule (4 -> 2: layers 0 and 2); the
/// expected bytes come from the Python reference selection with those layers
/// (fixtures/gen/make_selection.py, `write_uniform_layers`).
#[test]
fn uniform_layers_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let want = fixtures().join("expected_llama_uniform2_f16.safetensors");
    for teacher in ["llama_hf_safetensors", "llama_hf_bin"] {
        let out = dir.path().join(format!("{teacher}-uniform.safetensors"));
        let mut o = options(&fixtures().join(teacher), student(48, 2, 2, 128), &out);
        o.layers = LayerSelection::Uniform;
        let report = select(&o, &NoProgress).unwrap();
        assert_eq!(report.layers, vec![0, 2]);
        assert_same_tensors(&out, &want);
    }
    // And it differs from the first-N default, so the test can tell them apart.
    let first = fixtures().join("expected_llama_first2_f16.safetensors");
    let a = illama_formats::TensorStore::open(&want).unwrap();
    let b = illama_formats::TensorStore::open(&first).unwrap();
    let name = "blocks.1.mlp.fc1.weight";
    assert_ne!(
        a.bytes(a.get(name).unwrap()).unwrap(),
        b.bytes(b.get(name).unwrap()).unwrap()
    );
}

#[test]
fn grouped_query_teachers_select_q_k_v_separately() {
    let dir = tempfile::tempdir().unwrap();
    let want = fixtures().join("expected_gqa_custom_f16.safetensors");
    for (teacher, dtype) in [
        ("gqa_hf_safetensors", None),
        ("gqa_meta_mp1", Some(illama_formats::DType::F16)),
    ] {
        let out = dir.path().join(format!("{teacher}.safetensors"));
        let mut o = options(&fixtures().join(teacher), student(24, 2, 2, 100), &out);
        o.dtype = dtype;
        let report = select(&o, &NoProgress).unwrap();
        assert!(report.notes.iter().any(|n| n.contains("grouped-query")));
        assert_same_tensors(&out, &want);
    }
}

#[test]
fn pth_output_holds_the_same_tensors_in_reference_order() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ws.pth");
    let mut o = options(
        &fixtures().join("llama_hf_safetensors"),
        student(40, 3, 2, 112),
        &out,
    );
    o.format = TargetFormat::Pth;
    select(&o, &NoProgress).unwrap();
    assert_same_tensors(
        &out,
        &fixtures().join("expected_llama_custom_f16.safetensors"),
    );
    let names: Vec<String> = TensorStore::open(&out)
        .unwrap()
        .tensors()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let block0: Vec<&str> = names[..7]
        .iter()
        .map(|n| n.trim_start_matches("blocks.0."))
        .collect();
    assert_eq!(
        block0,
        [
            "norm1.weight",
            "attn.qkv.weight",
            "attn.proj.weight",
            "norm2.weight",
            "mlp.fc1.weight",
            "mlp.fc2.weight",
            "mlp.fc3.weight"
        ]
    );
}

#[test]
fn first_elements_and_explicit_layers_take_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let teacher_dir = fixtures().join("llama_hf_safetensors");
    let out = dir.path().join("first.safetensors");
    let mut o = options(&teacher_dir, student(40, 2, 2, 112), &out);
    o.elements = ElementSelection::First;
    o.layers = LayerSelection::Explicit(vec![3, 1]);
    select(&o, &NoProgress).unwrap();
    let teacher = TensorStore::open(&teacher_dir).unwrap();
    let got = TensorStore::open(&out).unwrap();
    // Block 0 <- layer 3: the leading 112 rows and 40 columns of up_proj.
    let up = teacher.get("model.layers.3.mlp.up_proj.weight").unwrap();
    let up_bytes = teacher.bytes(up).unwrap();
    let want: Vec<u8> = (0..112)
        .flat_map(|r| up_bytes[r * 96 * 2..(r * 96 + 40) * 2].to_vec())
        .collect();
    assert_eq!(
        &got.bytes(got.get("blocks.0.mlp.fc3.weight").unwrap())
            .unwrap()[..],
        &want[..]
    );
    let norm = teacher
        .get("model.layers.1.input_layernorm.weight")
        .unwrap();
    assert_eq!(
        &got.bytes(got.get("blocks.1.norm1.weight").unwrap())
            .unwrap()[..],
        &teacher.bytes(norm).unwrap()[..80]
    );
    // The metadata records the method.
    assert_eq!(got.metadata()["selection.layers"], "[3,1]");
    assert_eq!(got.metadata()["selection.element_method"], "first");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn select_error(teacher: &Path, s: IllamaConfig, out: &Path) -> String {
    let e = select(&options(teacher, s, out), &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(!out.exists(), "output written despite: {e}");
    e
}

#[test]
fn broken_teachers_and_oversized_students_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.safetensors");
    let s = student(40, 3, 2, 112);

    let missing = dir.path().join("missing_shard");
    copy_dir(&fixtures().join("llama_hf_safetensors"), &missing);
    std::fs::remove_file(missing.join("model-00003-of-00004.safetensors")).unwrap();
    assert!(select_error(&missing, s, &out).contains("model-00003-of-00004.safetensors"));

    let truncated = dir.path().join("truncated");
    copy_dir(&fixtures().join("llama_hf_safetensors"), &truncated);
    let shard = truncated.join("model-00002-of-00004.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 100]).unwrap();
    let e = select_error(&truncated, s, &out);
    assert!(
        e.contains("model-00002-of-00004.safetensors") && e.contains("corrupt"),
        "{e}"
    );

    let wrong = dir.path().join("wrong_config");
    copy_dir(&fixtures().join("llama_hf_safetensors"), &wrong);
    let cfg = std::fs::read_to_string(wrong.join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 256", "\"intermediate_size\": 300");
    std::fs::write(wrong.join("config.json"), cfg).unwrap();
    assert!(select_error(&wrong, s, &out).contains("intermediate_size is 300"));

    let meta_missing = dir.path().join("meta_missing");
    copy_dir(&fixtures().join("llama_meta_mp2"), &meta_missing);
    std::fs::rename(
        meta_missing.join("consolidated.01.pth"),
        meta_missing.join("consolidated.02.pth"),
    )
    .unwrap();
    assert!(select_error(&meta_missing, s, &out).contains("consolidated.01.pth is missing"));

    let unknown = dir.path().join("unknown");
    std::fs::create_dir_all(&unknown).unwrap();
    std::fs::copy(
        fixtures().join("../formats/state_dict.pth"),
        unknown.join("model.pth"),
    )
    .unwrap();
    assert!(select_error(&unknown, s, &out).contains("not a LLaMA checkpoint"));

    let hf = fixtures().join("llama_hf_safetensors");
    assert!(
        select_error(&hf, student(128, 3, 2, 112), &out).contains("dim 128 > teacher hidden 96")
    );
    assert!(select_error(&hf, student(40, 5, 2, 112), &out).contains("depth 5 > teacher layers 4"));
    assert!(select_error(&hf, student(40, 3, 2, 300), &out).contains("mlp hidden 300"));
    let gqa = fixtures().join("gqa_hf_safetensors");
    assert!(select_error(&gqa, student(40, 2, 2, 100), &out).contains("key/value rows 32"));

    let e = select_error(Path::new("no-such-model-xyz"), s, &out);
    assert!(
        e.contains("not found") && e.contains("no-such-model-xyz"),
        "{e}"
    );
}
