//! Checkpoints as PyTorch 0.3 / 0.4 wrote them under Python 2 (fixtures/formats/legacy_py2,
//! assembled byte by byte by fixtures/gen/make_legacy_py2.py), against what today's
//! `torch.load(map_location='cpu')` reads from them (the `.expected.json` beside each file).

use illama_formats::convert::{convert, ConvertOptions, NoProgress, TargetFormat};
use illama_formats::{Format, TensorStore};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every fixture of the directory; a file there that is not listed fails the test.
const PY2_FIXTURES: [&str; 2] = ["torch03_checkpoint.pth", "torch04_state_dict.pth"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/formats/legacy_py2")
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

type Digests = BTreeMap<String, (String, Vec<usize>, String)>;

/// name -> (dtype, shape, sha256 of the C-order bytes) as the store reads them.
fn digest(store: &TensorStore) -> Digests {
    store
        .tensors()
        .iter()
        .map(|t| {
            let bytes = store.bytes(t).unwrap();
            (
                t.name.clone(),
                (t.dtype.to_string(), t.shape.clone(), sha(&bytes)),
            )
        })
        .collect()
}

/// The same, as torch read them.
fn expected(json: &Value) -> Digests {
    json["tensors"]
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
            let text = |k: &str| d[k].as_str().unwrap().to_string();
            (name.clone(), (text("dtype"), shape, text("sha256")))
        })
        .collect()
}

/// (fixture, its expectations) for every listed fixture; the directory holds nothing else.
fn fixtures() -> Vec<(PathBuf, Value)> {
    let regenerate = "run fixtures/gen/make_legacy_py2.py";
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .unwrap_or_else(|e| panic!("{}: {e}: {regenerate}", dir().display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = PY2_FIXTURES
        .iter()
        .flat_map(|f| [f.to_string(), format!("{f}.expected.json")])
        .collect();
    listed.sort();
    assert_eq!(on_disk, listed, "files in {}", dir().display());
    PY2_FIXTURES
        .iter()
        .map(|name| {
            let json = std::fs::read(dir().join(format!("{name}.expected.json"))).unwrap();
            (dir().join(name), serde_json::from_slice(&json).unwrap())
        })
        .collect()
}

#[test]
fn python2_checkpoints_read_as_torch_reads_them() {
    for (path, json) in fixtures() {
        let store = TensorStore::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(store.format(), Format::TorchLegacy, "{}", path.display());
        assert_eq!(digest(&store), expected(&json), "{}", path.display());
        // The order of the state dict is the file's (an OrderedDict), as torch keeps it.
        let order: Vec<&str> = store.tensors().iter().map(|t| t.name.as_str()).collect();
        let first = match path.file_name().unwrap().to_str().unwrap() {
            "torch03_checkpoint.pth" => "layer0.weight",
            _ => "conv.weight",
        };
        assert_eq!(order[0], first, "{}", path.display());
    }
}

/// The entries beside the state dict: Python 2 `str` (UTF-8, including one longer than 255
/// bytes), `unicode`, an int wider than 32 bits, a float.
#[test]
fn python2_strings_and_numbers_read_as_torch_reads_them() {
    let (path, json) = fixtures()
        .into_iter()
        .find(|(p, _)| p.ends_with("torch03_checkpoint.pth"))
        .unwrap();
    let store = TensorStore::open(&path).unwrap();
    assert_eq!(store.root_choice().key(), json["key"].as_str());
    let got: BTreeMap<&str, &Value> = store
        .other_entries()
        .iter()
        .map(|e| (e.name.as_str(), &e.value))
        .collect();
    let want: BTreeMap<&str, &Value> = json["non_tensor"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    assert_eq!(got, want);
    assert_eq!(got["desc"], "réseau résiduel");
}

/// A storage that is a slice of another (view metadata in the persistent id): the tensors on it
/// read from the root storage at the view's offset; two of them share one view.
#[test]
fn storage_views_read_from_their_root() {
    let store = TensorStore::open(dir().join("torch03_checkpoint.pth")).unwrap();
    let f32s = |name: &str| -> Vec<f32> {
        let t = store.get(name).unwrap();
        store
            .bytes(t)
            .unwrap()
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    // make_legacy_py2.py: the root holds values(12, 0.5, 0.25), element i being
    // 0.25 + 0.5 * (i - 6) * (-1)^i; views at elements 4 (6 long) and 10 (2 long).
    let root: Vec<f32> = (0..12)
        .map(|i| 0.25 + 0.5 * (i as f32 - 6.0) * if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    assert_eq!(f32s("layer0.weight"), root[0..4]);
    assert_eq!(f32s("layer1.weight"), root[4..8]);
    assert_eq!(f32s("layer1.bias"), root[8..10]);
    assert_eq!(f32s("layer2.bias"), root[10..12]);
    assert_eq!(
        store.shared_storage_groups(),
        vec![vec!["layer1.weight", "layer1.bias"]]
    );
    let t = store.get("layer3.weight").unwrap();
    assert!(!t.is_contiguous());
    assert_eq!((t.storage_offset, t.strides.clone()), (1, vec![1, 2]));
}

#[test]
fn python2_checkpoints_convert_to_safetensors_and_back() {
    let tmp = tempfile::tempdir().unwrap();
    for (path, json) in fixtures() {
        let want = expected(&json);
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let st = tmp.path().join(format!("{stem}.safetensors"));
        let pth = tmp.path().join(format!("{stem}.pth"));
        for (input, output, to) in [
            (&path, &st, TargetFormat::Safetensors),
            (&st, &pth, TargetFormat::Pth),
        ] {
            let opts = ConvertOptions {
                output: Some(output.clone()),
                to: Some(to),
                verify: true,
                ..Default::default()
            };
            convert(input, &opts, &NoProgress)
                .unwrap_or_else(|e| panic!("{} -> {}: {e}", input.display(), output.display()));
            assert_eq!(
                digest(&TensorStore::open(output).unwrap()),
                want,
                "{}",
                output.display()
            );
        }
        // The reference parser reads the output too.
        let raw = std::fs::read(&st).unwrap();
        let parsed = safetensors::SafeTensors::deserialize(&raw).unwrap();
        assert_eq!(parsed.len(), want.len());
    }
}

/// Opens a file and reads every tensor; the first error.
fn read_everything(path: &Path) -> Result<usize, String> {
    let store = TensorStore::open(path).map_err(|e| e.to_string())?;
    for t in store.tensors() {
        store.bytes(t).map_err(|e| e.to_string())?;
    }
    Ok(store.tensors().len())
}

/// Every prefix of the files is refused with a message naming the file; flipped bytes are
/// refused or read, never a panic.
#[test]
fn truncated_and_corrupted_python2_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    for (fixture, _) in fixtures() {
        let bytes = std::fs::read(&fixture).unwrap();
        let path = tmp.path().join("cut.pth");
        // Shortened in place, longest first (one write, then only truncations).
        std::fs::write(&path, &bytes).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for cut in (0..bytes.len()).rev() {
            file.set_len(cut as u64).unwrap();
            match read_everything(&path) {
                Ok(n) => panic!(
                    "{} cut at {cut} of {} read as {n} tensors",
                    fixture.display(),
                    bytes.len()
                ),
                Err(e) => assert!(
                    e.contains("cut.pth") && e.len() < 1024,
                    "{} cut at {cut}: {e}",
                    fixture.display()
                ),
            }
        }
        let mut state = 0x2545f4914f6cdd1du64;
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
