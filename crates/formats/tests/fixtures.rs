//! Checks the readers and writers against files written by real torch and safetensors
//! (fixtures/gen/make_formats.py, make_hostile.py) and the digests torch computed for them.

use illama_formats::convert::{convert, ConvertOptions, NoProgress, TargetFormat};
use illama_formats::torch::UnpickleError;
use illama_formats::tree::TreeError;
use illama_formats::{FormatError, OpenOptions, TensorStore};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// name -> (dtype, shape, sha256) as the store reads them.
fn digest(store: &TensorStore) -> BTreeMap<String, (String, Vec<usize>, String)> {
    store
        .tensors()
        .iter()
        .map(|t| {
            let bytes = store.bytes(t).unwrap();
            assert_eq!(bytes.len() as u64, t.nbytes(), "{}", t.name);
            (
                t.name.clone(),
                (t.dtype.to_string(), t.shape.clone(), sha(&bytes)),
            )
        })
        .collect()
}

fn expected(tensors: &Value) -> BTreeMap<String, (String, Vec<usize>, String)> {
    tensors
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, d)| {
            let shape = d["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            (
                name.clone(),
                (
                    d["dtype"].as_str().unwrap().to_string(),
                    shape,
                    d["sha256"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

/// The fixtures make_formats.py writes, each with `X.expected.json` beside it.
const FORMAT_FIXTURES: [&str; 13] = [
    "casts.safetensors",
    "compressed.pth",
    "dtypes.pth",
    "dtypes.safetensors",
    "layouts.pth",
    "legacy.pth",
    "protocol4.pth",
    "sharded_bin",
    "sharded_safetensors",
    "state_dict.pth",
    "subclass.pth",
    "training_checkpoint.pth",
    "wrapped_model.pth",
];

/// Every listed fixture `X` with its `X.expected.json`: a missing one fails, and so does an
/// expectation file the list does not name (a fixture no test would read).
fn expectation_files() -> Vec<(PathBuf, Value)> {
    let dir = fixtures().join("formats");
    let regenerate = "run fixtures/gen/make_formats.py";
    let out: Vec<(PathBuf, Value)> = FORMAT_FIXTURES
        .iter()
        .map(|name| {
            let fixture = dir.join(name);
            assert!(
                fixture.exists(),
                "fixture {} missing: {regenerate}",
                fixture.display()
            );
            let p = dir.join(format!("{name}.expected.json"));
            let bytes =
                std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}: {regenerate}", p.display()));
            (fixture, serde_json::from_slice(&bytes).unwrap())
        })
        .collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".expected.json").map(String::from))
        .collect();
    on_disk.sort();
    assert_eq!(
        on_disk,
        FORMAT_FIXTURES,
        "expectation files in {}",
        dir.display()
    );
    out
}

#[test]
fn every_fixture_reads_as_torch_wrote_it() {
    for (fixture, json) in expectation_files() {
        let store =
            TensorStore::open(&fixture).unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
        assert_eq!(
            digest(&store),
            expected(&json["tensors"]),
            "{}",
            fixture.display()
        );
    }
}

#[test]
fn formats_are_detected_from_content() {
    use illama_formats::Format::*;
    for (name, format) in [
        ("dtypes.pth", TorchZip),
        ("legacy.pth", TorchLegacy),
        ("dtypes.safetensors", Safetensors),
        ("sharded_bin", TorchZip),
        ("sharded_safetensors", Safetensors),
    ] {
        let store = TensorStore::open(fixtures().join("formats").join(name)).unwrap();
        assert_eq!(store.format(), format, "{name}");
    }
    // A safetensors file named .pth is still safetensors.
    let dir = tempfile::tempdir().unwrap();
    let renamed = dir.path().join("weights.pth");
    std::fs::copy(fixtures().join("formats/dtypes.safetensors"), &renamed).unwrap();
    assert_eq!(TensorStore::open(&renamed).unwrap().format(), Safetensors);
}

#[test]
fn training_checkpoint_keys_and_non_tensor_entries() {
    let path = fixtures().join("formats/training_checkpoint.pth");
    let json: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("formats/training_checkpoint.pth.expected.json")).unwrap(),
    )
    .unwrap();
    let store = TensorStore::open(&path).unwrap();
    assert_eq!(store.root_choice().key(), Some("model"));
    let skipped: BTreeMap<&str, &illama_formats::NonTensor> = store
        .other_entries()
        .iter()
        .map(|e| (e.name.as_str(), e))
        .collect();
    assert_eq!(skipped["epoch"].value, json["non_tensor"]["epoch"]);
    assert_eq!(
        skipped["max_accuracy"].value,
        json["non_tensor"]["max_accuracy"]
    );
    assert_eq!(skipped["args"].kind, "argparse.Namespace");
    assert_eq!(skipped["args"].value, json["non_tensor"]["args"]);
    assert_eq!(skipped["model_ema"].tensors, 8);
    assert!(skipped["optimizer"].tensors > 0);

    let ema = TensorStore::open_with(
        &path,
        &OpenOptions {
            key: Some("model_ema".into()),
            strip_prefix: None,
        },
    )
    .unwrap();
    assert_eq!(digest(&ema), expected(&json["by_key"]["model_ema"]));

    let stripped = TensorStore::open_with(
        &path,
        &OpenOptions {
            key: None,
            strip_prefix: Some("bn.".into()),
        },
    )
    .unwrap();
    assert!(stripped.get("running_mean").is_some() && stripped.get("lin.weight").is_some());

    let err = TensorStore::open_with(
        &path,
        &OpenOptions {
            key: Some("nope".into()),
            strip_prefix: None,
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("model, model_ema, optimizer"),
        "{err}"
    );
    // A caller tells a missing entry from a broken file by the variant.
    match &err {
        FormatError::Tree {
            why: TreeError::NoEntry { key, .. },
            ..
        } => assert_eq!(key, "nope"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn shared_storages_and_strides_are_reported() {
    let store = TensorStore::open(fixtures().join("formats/layouts.pth")).unwrap();
    let groups = store.shared_storage_groups();
    assert_eq!(
        groups,
        vec![vec![
            "weight",
            "weight_t",
            "rows_2_to_4",
            "column_3",
            "tied",
            "flat_tail"
        ]]
    );
    let t = store.get("weight_t").unwrap();
    assert!(!t.is_contiguous());
    assert_eq!(t.strides, vec![1, 7]);
    assert_eq!(store.get("rows_2_to_4").unwrap().storage_offset, 14);
    assert!(store
        .warnings()
        .iter()
        .any(|w| w.contains("not contiguous")));
}

#[test]
fn mapped_tensors_are_borrowed_not_copied() {
    let store = TensorStore::open(fixtures().join("formats/dtypes.safetensors")).unwrap();
    let t = store.get("f32").unwrap();
    assert!(matches!(
        store.bytes(t).unwrap(),
        std::borrow::Cow::Borrowed(_)
    ));
    let store = TensorStore::open(fixtures().join("formats/layouts.pth")).unwrap();
    assert!(matches!(
        store.bytes(store.get("rows_2_to_4").unwrap()).unwrap(),
        std::borrow::Cow::Borrowed(_)
    ));
    assert!(matches!(
        store.bytes(store.get("weight_t").unwrap()).unwrap(),
        std::borrow::Cow::Owned(_)
    ));
}

fn convert_to(input: &Path, output: &Path, to: TargetFormat) {
    let opts = ConvertOptions {
        output: Some(output.to_path_buf()),
        to: Some(to),
        verify: true,
        ..Default::default()
    };
    convert(input, &opts, &NoProgress)
        .unwrap_or_else(|e| panic!("{} -> {}: {e}", input.display(), output.display()));
}

#[test]
fn round_trips_keep_names_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for (fixture, json) in expectation_files() {
        let want = expected(&json["tensors"]);
        let stem = fixture
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "_");
        let st1 = dir.path().join(format!("{stem}-1.safetensors"));
        let pth = dir.path().join(format!("{stem}-2.pth"));
        let st2 = dir.path().join(format!("{stem}-3.safetensors"));
        convert_to(&fixture, &st1, TargetFormat::Safetensors);
        convert_to(&st1, &pth, TargetFormat::Pth);
        convert_to(&pth, &st2, TargetFormat::Safetensors);
        for p in [&st1, &pth, &st2] {
            let got = digest(&TensorStore::open(p).unwrap());
            assert_eq!(got, want, "{} via {}", fixture.display(), p.display());
        }
        // The safetensors outputs are valid for the reference parser too.
        for p in [&st1, &st2] {
            let files: Vec<PathBuf> = if p.is_dir() {
                std::fs::read_dir(p)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|f| f.extension().is_some_and(|e| e == "safetensors"))
                    .collect()
            } else {
                vec![p.clone()]
            };
            let count: usize = files
                .iter()
                .map(|f| {
                    safetensors::SafeTensors::deserialize(&std::fs::read(f).unwrap())
                        .unwrap()
                        .len()
                })
                .sum();
            assert_eq!(count, want.len(), "{}", p.display());
        }
    }
}

#[test]
fn sharded_output_mirrors_input_and_respects_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixtures().join("formats/sharded_bin");
    let out = dir.path().join("st");
    convert_to(&input, &out, TargetFormat::Safetensors);
    assert!(out.join("model.safetensors.index.json").is_file());
    assert!(out.join("model-00002-of-00002.safetensors").is_file());
    let want = digest(&TensorStore::open(&input).unwrap());
    assert_eq!(digest(&TensorStore::open(&out).unwrap()), want);

    let out = dir.path().join("small-shards");
    let opts = ConvertOptions {
        output: Some(out.clone()),
        to: Some(TargetFormat::Pth),
        max_shard_size: Some(400),
        verify: true,
        ..Default::default()
    };
    let report = convert(&input, &opts, &NoProgress).unwrap();
    assert!(report.files.len() >= 3, "{report:?}");
    assert!(report
        .files
        .iter()
        .all(|f| f.sha256.as_ref().is_some_and(|h| h.len() == 64)));
    assert_eq!(digest(&TensorStore::open(&out).unwrap()), want);
}

#[test]
fn metadata_records_provenance_and_small_entries() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixtures().join("formats/training_checkpoint.pth");
    let out = dir.path().join("ckpt.safetensors");
    let report = convert(
        &input,
        &ConvertOptions {
            output: Some(out.clone()),
            ..Default::default()
        },
        &NoProgress,
    )
    .unwrap();
    let store = TensorStore::open(&out).unwrap();
    let md = store.metadata();
    assert_eq!(md["format"], "pt");
    assert_eq!(md["source.file"], "training_checkpoint.pth");
    assert_eq!(md["source.sha256"], sha(&std::fs::read(&input).unwrap()));
    assert_eq!(md["epoch"], "299");
    let args: Value = serde_json::from_str(&md["args"]).unwrap();
    assert_eq!(args["model"], "illama_tiny");
    assert!(report.not_converted.iter().any(|n| n.name == "optimizer"));
    assert!(report
        .not_converted
        .iter()
        .any(|n| n.name == "model_ema" && n.why.contains("convert entry 'model_ema'")));
}

/// The float dtypes of fixtures/formats/casts.safetensors: tensor `SRC` holds awkward values of
/// dtype SRC (ties, subnormals, values that overflow, signed zeros, inf, NaNs with payloads) and
/// `SRC_to_DST` is torch's own `SRC.to(DST)` of them (make_formats.py, `casts()`).
const CAST_DTYPES: [(&str, illama_formats::DType); 4] = [
    ("f32", illama_formats::DType::F32),
    ("f64", illama_formats::DType::F64),
    ("f16", illama_formats::DType::F16),
    ("bf16", illama_formats::DType::BF16),
];

fn element_as_f64(d: illama_formats::DType, b: &[u8]) -> f64 {
    use illama_formats::DType::*;
    match d {
        F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f64(),
        BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f64(),
        F32 => f32::from_le_bytes(b.try_into().unwrap()) as f64,
        F64 => f64::from_le_bytes(b.try_into().unwrap()),
        _ => unreachable!(),
    }
}

/// Elements of `got` that differ in any bit from torch's `want`, as readable lines.
///
/// One exception: a NaN cast to bf16 need only be a NaN. torch's bf16 NaN bits depend on its code
/// path, not on the value (2.15 on CPU: f32 and f64 sources give 0xffff from the vectorised
/// kernel, f16 sources give the canonical 0x7fc0), while ours keeps the sign and the top payload
/// bits, as `half::bf16::from_f32` does. Every f16 NaN, payload included, matches torch exactly.
fn bit_differences(
    from: illama_formats::DType,
    to: illama_formats::DType,
    src: &[u8],
    got: &[u8],
    want: &[u8],
) -> Vec<String> {
    assert_eq!(got.len(), want.len(), "{from} -> {to}: output length");
    let (fs, ts) = (from.size(), to.size());
    let mut out = Vec::new();
    for (i, (g, w)) in got.chunks(ts).zip(want.chunks(ts)).enumerate() {
        let nan_to_bf16 = to == illama_formats::DType::BF16
            && element_as_f64(to, g).is_nan()
            && element_as_f64(to, w).is_nan();
        if g != w && !nan_to_bf16 {
            let s = &src[i * fs..(i + 1) * fs];
            let hex = |b: &[u8]| {
                b.iter()
                    .rev()
                    .map(|x| format!("{x:02x}"))
                    .collect::<String>()
            };
            out.push(format!(
                "[{i}] {:e} (0x{}): ours 0x{} ({:e}), torch 0x{} ({:e})",
                element_as_f64(from, s),
                hex(s),
                hex(g),
                element_as_f64(to, g),
                hex(w),
                element_as_f64(to, w)
            ));
        }
    }
    out
}

#[test]
fn cast_bytes_matches_torch_bit_for_bit() {
    let store = TensorStore::open(fixtures().join("formats/casts.safetensors")).unwrap();
    let mut pairs = 0;
    let mut failures = Vec::new();
    for (s, from) in CAST_DTYPES {
        let src = store.bytes(store.get(s).unwrap()).unwrap();
        for (d, to) in CAST_DTYPES {
            if s == d {
                continue;
            }
            let want = store.get(&format!("{s}_to_{d}")).unwrap();
            assert_eq!(want.dtype, to);
            let want = store.bytes(want).unwrap();
            let got = illama_formats::cast::cast_bytes(from, to, &src).unwrap();
            for line in bit_differences(from, to, &src, &got, &want) {
                failures.push(format!("{s} -> {d} {line}"));
            }
            pairs += 1;
        }
    }
    assert_eq!(pairs, 12);
    assert!(
        failures.is_empty(),
        "{} elements differ from torch:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn convert_dtype_casts_like_torch() {
    use illama_formats::DType::{BF16, F16};
    let input = fixtures().join("formats/casts.safetensors");
    let src = TensorStore::open(&input).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (d, to) in [("f16", F16), ("bf16", BF16)] {
        for target in [TargetFormat::Safetensors, TargetFormat::Pth] {
            let out = dir.path().join(format!("{d}-{target:?}"));
            let opts = ConvertOptions {
                output: Some(out.clone()),
                to: Some(target),
                dtype: Some(to),
                verify: true,
                ..Default::default()
            };
            convert(&input, &opts, &NoProgress).unwrap();
            let dst = TensorStore::open(&out).unwrap();
            let mut failures = Vec::new();
            for (s, from) in CAST_DTYPES {
                // Tensor `s` (every float tensor of the file) is cast; torch's casts of it sit
                // beside it in the input, under `s_to_d`.
                let got = dst.get(s).unwrap();
                assert_eq!(got.dtype, to, "{s} in {}", out.display());
                let want = if s == d {
                    src.bytes(src.get(s).unwrap()).unwrap()
                } else {
                    src.bytes(src.get(&format!("{s}_to_{d}")).unwrap()).unwrap()
                };
                let input_bytes = src.bytes(src.get(s).unwrap()).unwrap();
                let got = dst.bytes(got).unwrap();
                for line in bit_differences(from, to, &input_bytes, &got, &want) {
                    failures.push(format!("{s} -> {d} {line}"));
                }
            }
            assert!(
                failures.is_empty(),
                "{}: {} elements differ from torch:\n{}",
                out.display(),
                failures.len(),
                failures.join("\n")
            );
        }
    }
}

#[test]
fn dtype_cast_keeps_integer_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixtures().join("formats/dtypes.pth");
    let out = dir.path().join("half.safetensors");
    let opts = ConvertOptions {
        output: Some(out.clone()),
        dtype: Some(illama_formats::DType::F16),
        verify: true,
        ..Default::default()
    };
    convert(&input, &opts, &NoProgress).unwrap();
    let src = TensorStore::open(&input).unwrap();
    let dst = TensorStore::open(&out).unwrap();
    use illama_formats::DType::*;
    for t in src.tensors() {
        let got = dst.get(&t.name).unwrap();
        let want = if matches!(t.dtype, F32 | F64 | BF16 | F16) {
            F16
        } else {
            t.dtype
        };
        assert_eq!(got.dtype, want, "{}", t.name);
        assert_eq!(got.shape, t.shape, "{}", t.name);
        if want == t.dtype {
            assert_eq!(dst.bytes(got).unwrap(), src.bytes(t).unwrap(), "{}", t.name);
        }
    }
}

/// Opens a file and reads every tensor; Err on the first failure.
fn read_everything(path: &Path) -> Result<usize, String> {
    let store = TensorStore::open(path).map_err(|e| e.to_string())?;
    for t in store.tensors() {
        store.bytes(t).map_err(|e| e.to_string())?;
    }
    Ok(store.tensors().len())
}

#[test]
fn hostile_inputs_get_clear_errors() {
    let dir = fixtures().join("hostile");
    let cases: Value =
        serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
    let canary = Path::new(cases["canary"].as_str().unwrap());
    let _ = std::fs::remove_file(canary);
    let out = tempfile::tempdir().unwrap();
    for case in cases["cases"].as_array().unwrap() {
        let file = dir.join(case["file"].as_str().unwrap());
        let want = case["error"].as_str().unwrap();
        // An empty substring would match every message: each case must name its error.
        assert!(
            want.trim().len() >= 4,
            "{}: cases.json needs a specific error substring, not '{want}'",
            file.display()
        );
        let err = match read_everything(&file) {
            Err(e) => e,
            // Readable but nothing convertible (the os.system pickle): convert must refuse.
            Ok(_) => {
                let opts = ConvertOptions {
                    output: Some(out.path().join("x.safetensors")),
                    ..Default::default()
                };
                convert(&file, &opts, &NoProgress).unwrap_err().to_string()
            }
        };
        assert!(
            err.contains(want),
            "{}: error '{err}' lacks '{want}'",
            file.display()
        );
        // Messages quote input text only as short excerpts (long_text_2mb.pth holds 2 MiB of
        // digits).
        assert!(
            err.len() < 1024,
            "{}: a {}-byte error message",
            file.display(),
            err.len()
        );
        assert!(
            err.contains(case["file"].as_str().unwrap()) || err.contains("no tensors"),
            "{}: error does not name the file: {err}",
            file.display()
        );
    }
    assert!(!canary.exists(), "a pickle's command was executed");
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "partial output left behind"
    );
}

/// Objects a reader refuses for a reason a caller can act on (a bound reached, a storage class
/// that is not torch's) come as typed variants, the tensor's rebuild call around them.
#[test]
fn unpickle_refusals_are_typed() {
    let dir = fixtures().join("hostile");
    let why = |file: &str| match TensorStore::open(dir.join(file)) {
        Err(FormatError::Unpickle { why, .. }) => why,
        other => panic!("{file}: {other:?}"),
    };
    let storage_class = |module: &str, name: &str| UnpickleError::UnsupportedStorageType {
        module: module.into(),
        name: name.into(),
    };
    assert_eq!(
        why("py2_os_system_storage_class.pth").innermost(),
        &storage_class("os", "system")
    );
    assert_eq!(
        why("py2_unknown_storage_class.pth").innermost(),
        &storage_class("torch", "EvilStorage")
    );
    assert_eq!(
        why("py2_storage_key_not_utf8.pth").innermost(),
        &UnpickleError::StorageKeyNotUtf8
    );
    assert_eq!(
        why("bigint_size.pth").innermost(),
        &UnpickleError::WideInt { what: "size" }
    );
    assert!(matches!(
        why("memo_reuse_1000.pth"),
        UnpickleError::TooLarge { max_bytes } if max_bytes == 64 << 20
    ));
}

#[test]
fn truncated_and_corrupted_files_never_panic() {
    let dir = fixtures().join("formats");
    for name in [
        "dtypes.pth",
        "legacy.pth",
        "dtypes.safetensors",
        "compressed.pth",
        "protocol4.pth",
        "training_checkpoint.pth",
    ] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(name);
        // Every truncation must fail cleanly.
        let step = (bytes.len() / 97).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let r = read_everything(&path);
            assert!(
                r.is_err(),
                "{name} cut at {cut} of {} read as {r:?}",
                bytes.len()
            );
        }
        // Corrupted bytes may or may not be detected, but must never panic.
        let mut state = 0x9e3779b97f4a7c15u64;
        for _ in 0..300 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut b = bytes.clone();
            let at = (state % b.len() as u64) as usize;
            b[at] ^= (state >> 32) as u8 | 1;
            std::fs::write(&path, &b).unwrap();
            let _ = read_everything(&path);
        }
    }
}

/// Found by `cargo fuzz` (fuzz/README.md): an empty tensor whose storage offset lies past its
/// (empty) storage. torch accepts it; reading it must give no bytes, not a panic.
#[test]
fn empty_tensor_with_offset_past_its_storage() {
    let mut bytes = std::fs::read(fixtures().join("formats/dtypes.pth")).unwrap();
    // data.pkl's storage offset of `empty` (BININT1 0 -> 16), as the fuzzer mutated it.
    assert_eq!(&bytes[0x67b..0x67d], b"K\x00");
    bytes[0x67c] = 0x10;
    fix_pickle_crc(&mut bytes);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.pth");
    std::fs::write(&path, &bytes).unwrap();
    let store = TensorStore::open(&path).unwrap();
    let t = store.get("empty").unwrap();
    assert_eq!(t.storage_offset, 16);
    assert!(store.bytes(t).unwrap().is_empty());
}

/// Recomputes the CRC-32 of the first entry (data.pkl) in the central directory after an edit.
fn fix_pickle_crc(zip: &mut [u8]) {
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as usize;
    let data_start = 30 + u16_at(zip, 26) + u16_at(zip, 28);
    let cd = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    let size = u32::from_le_bytes(zip[cd + 24..cd + 28].try_into().unwrap()) as usize;
    let crc = crc32fast::hash(&zip[data_start..data_start + size]);
    zip[cd + 16..cd + 20].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn a_pickle_with_a_wrong_crc_is_refused() {
    let mut bytes = std::fs::read(fixtures().join("formats/dtypes.pth")).unwrap();
    bytes[0x67c] = 0x10;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.pth");
    std::fs::write(&path, &bytes).unwrap();
    let e = TensorStore::open(&path).unwrap_err().to_string();
    assert!(e.contains("CRC-32 mismatch") && e.contains("x.pth"), "{e}");
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

fn write_index(dir: &Path, shard: &str) -> PathBuf {
    let index = dir.join("model.safetensors.index.json");
    let json = format!(r#"{{"metadata": {{}}, "weight_map": {{"a": "{shard}"}}}}"#);
    std::fs::write(&index, json).unwrap();
    index
}

/// FIFOs, devices, directories and link loops, as inputs or as shards an index names, are named
/// for what they are (and never block or read forever); a shard that is truly absent is missing.
/// Made here, in a temporary directory: git cannot hold FIFOs or links to devices.
#[test]
fn non_regular_inputs_are_named_for_what_they_are() {
    let err = |p: &Path| TensorStore::open(p).unwrap_err().to_string();
    let tmp = tempfile::tempdir().unwrap();

    // An index naming a shard that is a FIFO, a link loop, a link to /dev/zero.
    let d = tmp.path().join("fifo_shard");
    std::fs::create_dir(&d).unwrap();
    mkfifo(&d.join("s.safetensors"));
    let e = err(&write_index(&d, "s.safetensors"));
    assert!(
        e.contains("is a FIFO (named pipe), not a regular file"),
        "{e}"
    );
    assert!(e.contains("s.safetensors") && !e.contains("missing"), "{e}");

    let d = tmp.path().join("loop_shard");
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::symlink(d.join("s.safetensors"), d.join("s.safetensors")).unwrap();
    let e = err(&write_index(&d, "s.safetensors"));
    assert!(e.contains("symbolic links"), "{e}");
    assert!(!e.contains("missing"), "{e}");

    let d = tmp.path().join("zero_shard");
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::symlink("/dev/zero", d.join("s.safetensors")).unwrap();
    let e = err(&write_index(&d, "s.safetensors"));
    assert!(
        e.contains("is a character device, not a regular file"),
        "{e}"
    );

    // ...and one that is absent is still missing.
    let d = tmp.path().join("absent_shard");
    std::fs::create_dir(&d).unwrap();
    let e = err(&write_index(&d, "s.safetensors"));
    assert!(e.contains("which is missing"), "{e}");

    // The index itself a link to /dev/zero, or a FIFO: given by path or found in its directory.
    let d = tmp.path().join("zero_index");
    std::fs::create_dir(&d).unwrap();
    let index = d.join("model.safetensors.index.json");
    std::os::unix::fs::symlink("/dev/zero", &index).unwrap();
    for p in [&index, &d] {
        let e = err(p);
        assert!(
            e.contains("is a character device, not a regular file"),
            "{e}"
        );
        assert!(e.contains("model.safetensors.index.json"), "{e}");
    }
    let d = tmp.path().join("fifo_index");
    std::fs::create_dir(&d).unwrap();
    let index = d.join("model.safetensors.index.json");
    mkfifo(&index);
    for p in [&index, &d] {
        let e = err(p);
        assert!(
            e.contains("is a FIFO (named pipe), not a regular file"),
            "{e}"
        );
    }

    // A checkpoint path that is a device or a FIFO.
    let e = err(Path::new("/dev/zero"));
    assert!(e.contains("/dev/zero: is a character device"), "{e}");
    let fifo = tmp.path().join("x.pth");
    mkfifo(&fifo);
    assert!(err(&fifo).contains("is a FIFO (named pipe)"));
}
