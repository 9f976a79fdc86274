//! Provenance of written files: the sha256 of every source file, recorded in a safetensors
//! header as a same-length placeholder while the sources are hashed on another thread, then
//! patched in place.

use crate::error::{FormatError, Result};
use crate::store::TensorStore;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

const PLACEHOLDER_PREFIX: &str = "pending-sha256-";

pub(crate) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `source.sha256` before the hashes are known: same length as the final value, so that the
/// header can be patched in place once hashing finishes.
pub(crate) fn placeholder_json(store: &TensorStore) -> String {
    let n = store.files().count();
    if n == 1 && store.index_file().is_none() {
        return placeholder(0);
    }
    let map: BTreeMap<String, String> = store
        .files()
        .enumerate()
        .map(|(i, f)| (file_name(f), placeholder(i)))
        .collect();
    serde_json::to_string(&map).expect("a map of strings serialises")
}

fn placeholder(i: usize) -> String {
    format!("{PLACEHOLDER_PREFIX}{i:0>49}")
}

pub(crate) fn hash_sources(store: &TensorStore) -> Result<BTreeMap<String, String>> {
    store
        .files()
        .map(|f| Ok((file_name(f), sha256_file(f)?)))
        .collect()
}

/// The sha256 of a file, as `sha256sum` prints it.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = crate::input::open_regular(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| FormatError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn patch_placeholders(
    path: &Path,
    hashes: &BTreeMap<String, String>,
    store: &TensorStore,
) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| FormatError::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact_at(&mut len, 0)
        .map_err(|e| FormatError::io(path, e))?;
    let mut head = vec![0u8; u64::from_le_bytes(len) as usize];
    f.read_exact_at(&mut head, 8)
        .map_err(|e| FormatError::io(path, e))?;
    for (i, name) in store.files().map(file_name).enumerate() {
        let needle = placeholder(i);
        if let Some(at) = find(&head, needle.as_bytes()) {
            f.write_all_at(hashes[&name].as_bytes(), 8 + at as u64)
                .map_err(|e| FormatError::io(path, e))?;
        }
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
