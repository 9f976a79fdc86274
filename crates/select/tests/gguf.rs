//! Selection from llama.cpp GGUF teachers written by the `gguf` Python package as llama.cpp's
//! converter lays them out (fixtures/gen/make_gguf.py): F16 files give exactly the students of
//! the Hugging Face checkpoints they were converted from; quantised files give the reference
//! selection of the tensors as the `gguf` package dequantises them.

use illama_arch::IllamaConfig;
use illama_formats::gguf::{GgmlType, GgufFile};
use illama_formats::{DType, NoProgress, TensorStore};
use illama_select::{select, ElementSelection, LayerSelection, SelectOptions, TargetFormat};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/selection")
}

fn student(dim: usize, depth: usize, heads: usize, mlp_hidden: usize) -> IllamaConfig {
    IllamaConfig {
        mlp_hidden,
        ..IllamaConfig::new(dim, depth, heads)
    }
}

fn run(
    teacher: &Path,
    s: IllamaConfig,
    out: &Path,
    dtype: Option<DType>,
) -> illama_select::SelectReport {
    let o = SelectOptions {
        teacher: teacher.to_string_lossy().into_owned(),
        student: s,
        student_name: "custom".into(),
        layers: LayerSelection::First,
        elements: ElementSelection::Uniform,
        dtype,
        format: TargetFormat::Safetensors,
        output: Some(out.to_path_buf()),
        force: false,
        hash_teacher: false,
    };
    select(&o, &NoProgress).unwrap_or_else(|e| panic!("{}: {e}", teacher.display()))
}

fn assert_same_tensors(got: &Path, want: &Path) {
    let (g, w) = (
        TensorStore::open(got).unwrap(),
        TensorStore::open(want).unwrap(),
    );
    assert_eq!(g.tensors().len(), w.tensors().len(), "{}", got.display());
    for t in w.tensors() {
        let o = g
            .get(&t.name)
            .unwrap_or_else(|| panic!("{} lacks {}", got.display(), t.name));
        assert_eq!((o.dtype, &o.shape), (t.dtype, &t.shape), "{}", t.name);
        let (a, b) = (g.bytes(o).unwrap(), w.bytes(t).unwrap());
        if a != b {
            let first = a.iter().zip(b.iter()).position(|(x, y)| x != y).unwrap();
            panic!(
                "{}: {} differs from {} first at byte {first}",
                t.name,
                got.display(),
                want.display()
            );
        }
    }
}

#[test]
fn f16_gguf_gives_the_students_of_the_hugging_face_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let g = fixtures().join("gguf");
    for (teacher, s, want) in [
        (
            "llama_f16.gguf",
            student(40, 3, 2, 112),
            "expected_llama_custom_f16.safetensors",
        ),
        (
            "llama_f16.gguf",
            student(48, 2, 2, 128),
            "expected_llama_first2_f16.safetensors",
        ),
        (
            "gqa_f16.gguf",
            student(24, 2, 2, 100),
            "expected_gqa_custom_f16.safetensors",
        ),
    ] {
        let out = dir.path().join(format!("{teacher}-{}.safetensors", s.dim));
        let report = run(&g.join(teacher), s, &out, None);
        assert_eq!(report.teacher.dtype, DType::F16, "{teacher}");
        assert!(report.notes.iter().any(|n| n.contains("interleaved")));
        assert_same_tensors(&out, &fixtures().join(want));
    }
}

#[test]
fn quantised_gguf_gives_the_selection_of_the_dequantised_weights() {
    let dir = tempfile::tempdir().unwrap();
    let g = fixtures().join("gguf");
    for (teacher, s, types) in [
        ("gqa_q8_0", student(24, 2, 2, 100), "Q8_0"),
        (
            "llama_mixed",
            student(40, 3, 2, 112),
            "Q8_0, Q4_0, Q4_1, Q5_0, Q5_1",
        ),
        ("kquant", student(64, 1, 1, 128), "Q4_K, Q5_K, Q6_K"),
    ] {
        let out = dir.path().join(format!("{teacher}.safetensors"));
        let report = run(&g.join(format!("{teacher}.gguf")), s, &out, None);
        assert_eq!(report.dtype, DType::F32, "{teacher}");
        assert!(
            report.notes.iter().any(|n| n.contains(types)),
            "{teacher}: {:?}",
            report.notes
        );
        assert_same_tensors(&out, &g.join(format!("expected_{teacher}.safetensors")));
    }
}

#[test]
fn gguf_headers_are_read_as_the_gguf_package_wrote_them() {
    let f = GgufFile::open(&fixtures().join("gguf/kquant.gguf")).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.metadata["general.architecture"].as_str(), Some("llama"));
    assert_eq!(f.get_u64("llama.embedding_length").unwrap(), Some(256));
    let types: Vec<(String, GgmlType, Vec<usize>)> = f
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ggml_type, t.shape.clone()))
        .collect();
    assert_eq!(
        types[0],
        ("token_embd.weight".into(), GgmlType::BF16, vec![8, 256])
    );
    assert_eq!(types[3].1, GgmlType::Q6K);
    assert_eq!(f.tensors.len(), 11);
}

fn select_error(teacher: &Path, out: &Path) -> String {
    let o = SelectOptions {
        teacher: teacher.to_string_lossy().into_owned(),
        student: student(24, 1, 2, 100),
        student_name: "custom".into(),
        layers: LayerSelection::First,
        elements: ElementSelection::Uniform,
        dtype: None,
        format: TargetFormat::Safetensors,
        output: Some(out.to_path_buf()),
        force: false,
        hash_teacher: false,
    };
    match select(&o, &NoProgress) {
        Ok(_) => panic!("{}: selected", teacher.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_folder_holding_one_gguf_is_that_file_and_other_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let g = fixtures().join("gguf");
    let one = dir.path().join("one");
    std::fs::create_dir(&one).unwrap();
    std::fs::copy(g.join("gqa_f16.gguf"), one.join("model.gguf")).unwrap();
    let out = dir.path().join("s.safetensors");
    run(&one, student(24, 2, 2, 100), &out, None);
    assert_same_tensors(
        &out,
        &fixtures().join("expected_gqa_custom_f16.safetensors"),
    );

    std::fs::copy(g.join("gqa_q8_0.gguf"), one.join("other.gguf")).unwrap();
    let err = select_error(&one, &dir.path().join("x.safetensors"));
    assert!(
        err.contains("2 .gguf files (model.gguf, other.gguf)"),
        "{err}"
    );
    for (file, want) in [
        ("refuse_split_part.gguf", "split into 2 files"),
        ("refuse_qwen2.gguf", "general.architecture is 'qwen2'"),
    ] {
        let err = select_error(&g.join(file), &dir.path().join("x.safetensors"));
        assert!(err.contains(want) && err.contains(file), "{file}: {err}");
    }
    assert!(!dir.path().join("x.safetensors").exists());
}

/// An F16 file with F32 norms f16 cannot hold: `--dtype f32` keeps them exact (rows decoded
/// straight into the output's type), the default F16 rounds them once, as torch's `.half()`.
#[test]
fn f32_norms_of_an_f16_file_are_rounded_at_most_once() {
    let dir = tempfile::tempdir().unwrap();
    let g = fixtures().join("gguf");
    for (dtype, want) in [
        (Some(DType::F32), "expected_f16_f32norms_f32.safetensors"),
        (None, "expected_f16_f32norms_f16.safetensors"),
    ] {
        let out = dir.path().join(format!("{dtype:?}.safetensors"));
        run(
            &g.join("f16_f32norms.gguf"),
            student(32, 1, 1, 96),
            &out,
            dtype,
        );
        assert_same_tensors(&out, &g.join(want));
    }
}

/// A small file claiming more layers than it holds is refused before any loop over them.
#[test]
fn a_block_count_beyond_the_tensors_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(fixtures().join("gguf/gqa_f16.gguf")).unwrap();
    // llama.block_count is a u32 value right after its key.
    let key = b"llama.block_count";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4;
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let path = dir.path().join("huge.gguf");
    std::fs::write(&path, bytes).unwrap();
    let start = std::time::Instant::now();
    let err = select_error(&path, &dir.path().join("x.safetensors"));
    assert!(err.contains("llama.block_count is 4294967295"), "{err}");
    assert!(
        start.elapsed().as_secs() < 30,
        "a hostile header must not cost this long"
    );
}
