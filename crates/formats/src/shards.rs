//! Sharded checkpoints (`*.index.json` + shard files) and finding the checkpoint in a directory.

use crate::error::{FormatError, Result};
use crate::store::{OpenOptions, TensorStore};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The Hugging Face index file: which shard holds each tensor.
#[derive(Debug, Deserialize)]
pub struct ShardIndex {
    #[serde(default)]
    pub metadata: serde_json::Value,
    pub weight_map: BTreeMap<String, String>,
}

/// Index names, in order of preference.
const INDEX_NAMES: [&str; 2] = [
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
];
const CHECKPOINT_EXTENSIONS: [&str; 6] = ["safetensors", "bin", "pth", "pt", "ckpt", "pkl"];

/// The most directory entries a checkpoint directory is scanned for.
pub const MAX_DIR_ENTRIES: usize = 100_000;

/// The files of `dir` (regular files, or links to them), sorted. Other entries (directories,
/// FIFOs, devices, broken links) are skipped here; they are never opened, since everything is
/// opened through [`crate::input::open_regular`].
fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (n, e) in std::fs::read_dir(dir)
        .map_err(|e| FormatError::io(dir, e))?
        .enumerate()
    {
        if n >= MAX_DIR_ENTRIES {
            return Err(FormatError::Invalid(format!(
                "{}: more than {MAX_DIR_ENTRIES} entries; name the checkpoint file",
                dir.display()
            )));
        }
        let e = e.map_err(|e| FormatError::io(dir, e))?;
        // `metadata` follows links and only stats: it never opens (or blocks on) a FIFO.
        if std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()) {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// The index json of a sharded checkpoint in `dir`, if there is one.
pub fn find_index(dir: &Path) -> Result<Option<PathBuf>> {
    // An index under its usual name that is not a regular file (a FIFO, a link to /dev/zero) is
    // named for what it is, rather than skipped in favour of some other file.
    for name in INDEX_NAMES {
        let p = dir.join(name);
        if let Ok(m) = std::fs::metadata(&p) {
            if !m.is_file() {
                return Err(crate::input::InputError::NotRegular {
                    path: p,
                    what: crate::input::kind_of(&m.file_type()),
                }
                .into());
            }
        }
    }
    let files = list_dir(dir)?;
    for name in INDEX_NAMES {
        if let Some(p) = files.iter().find(|p| file_name(p) == name) {
            return Ok(Some(p.clone()));
        }
    }
    let others: Vec<&PathBuf> = files
        .iter()
        .filter(|p| file_name(p).ends_with(".index.json"))
        .collect();
    match others.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((*one).clone())),
        many => {
            let preferred = many.iter().find(|p| file_name(p).contains("safetensors"));
            Ok(Some(preferred.unwrap_or(&many[0]).to_path_buf()))
        }
    }
}

/// The one checkpoint file in a directory without an index.
pub fn single_checkpoint_in(dir: &Path) -> Result<PathBuf> {
    let files = list_dir(dir)?;
    let candidates: Vec<&PathBuf> = files
        .iter()
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| CHECKPOINT_EXTENSIONS.contains(&e))
        })
        .collect();
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(FormatError::UnknownFormat {
            path: dir.to_path_buf(),
            why: format!(
                "no checkpoint in this directory (looked for {} and for *.{})",
                INDEX_NAMES.join(", "),
                CHECKPOINT_EXTENSIONS.join(", *.")
            ),
        }),
        many => {
            for preferred in ["model.safetensors", "pytorch_model.bin"] {
                if let Some(p) = many.iter().find(|p| file_name(p) == preferred) {
                    return Ok((*p).clone());
                }
            }
            let names: Vec<&str> = many.iter().map(|p| file_name(p)).collect();
            Err(FormatError::Invalid(format!(
                "{}: several checkpoint files and no index json; name one of: {}",
                dir.display(),
                names.join(", ")
            )))
        }
    }
}

/// The largest index json read (real ones are well under a megabyte).
pub const MAX_INDEX_BYTES: u64 = 256 << 20;

/// Reads and checks an index json: size-limited, every shard a plain file name in `dir`.
pub fn read_index(index: &Path) -> Result<ShardIndex> {
    let text = crate::input::read_bounded(index, MAX_INDEX_BYTES, "shard index")?;
    let parsed: ShardIndex = serde_json::from_slice(&text)
        .map_err(|e| FormatError::corrupt(index, format!("not a shard index json: {e}")))?;
    for shard in parsed.weight_map.values() {
        let p = Path::new(shard);
        if p.components().count() != 1 || p.is_absolute() || shard == ".." || shard == "." {
            return Err(FormatError::corrupt(
                index,
                format!(
                    "shard name '{}' is not a plain file name",
                    crate::error::excerpt(shard)
                ),
            ));
        }
    }
    Ok(parsed)
}

pub(crate) fn open_sharded(dir: &Path, index: &Path, opts: &OpenOptions) -> Result<TensorStore> {
    let parsed = read_index(index)?;
    let shards: BTreeSet<&String> = parsed.weight_map.values().collect();
    if shards.is_empty() {
        return Err(FormatError::corrupt(index, "the weight_map is empty"));
    }
    let mut store = TensorStore::empty(dir, index);
    for shard in shards {
        let path = dir.join(shard);
        // Missing means absent (or a dangling link); anything else that is there but not a regular
        // file is named for what it is when `add_file` opens it.
        if let Err(e) = std::fs::metadata(&path) {
            if e.kind() == std::io::ErrorKind::NotFound {
                return Err(FormatError::Invalid(format!(
                    "{}: the index names shard '{}', which is missing from {}",
                    index.display(),
                    crate::error::excerpt(shard),
                    dir.display()
                )));
            }
        }
        let added: BTreeSet<String> = store.add_file(&path, opts)?.into_iter().collect();
        for (name, file) in &parsed.weight_map {
            if file == shard && !added.contains(name) {
                return Err(FormatError::Invalid(format!(
                    "{}: the index puts '{}' in {}, which does not hold it",
                    index.display(),
                    crate::error::excerpt(name),
                    crate::error::excerpt(shard)
                )));
            }
        }
    }
    Ok(store)
}
