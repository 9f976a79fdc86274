use super::unpickle::interpret;
use super::{TorchFile, LEGACY_MAGIC};
use crate::error::{excerpt, FormatError, Result};
use crate::pickle::{self, Pickle, Value};
use crate::source::{Location, SourceFile, Storage};
use std::collections::BTreeMap;

/// Reads a pre-1.6 `torch.save` file: five pickles in a row (magic number, protocol version,
/// system info, the object, the storage keys), then each storage as a u64 element count followed
/// by its raw bytes. PyTorch 0.3/0.4 under Python 2 wrote the same layout with Python 2 pickles
/// (the pickle reader decodes their `str`s) and storage views (`view_of`), read from the root
/// storage's bytes.
pub(crate) fn read_legacy(src: &SourceFile, file_index: usize) -> Result<TorchFile> {
    let data = &src.map[..];
    let corrupt = |why: String| FormatError::corrupt(&src.path, why);
    let mut pos = 0usize;
    let mut next = |what: &str| -> Result<Pickle> {
        let p = pickle::parse(&data[pos..]).map_err(|e| FormatError::Pickle {
            path: src.path.clone(),
            why: format!("{what} (pickle at byte {pos}): {e}"),
        })?;
        pos += p.consumed;
        Ok(p)
    };

    let magic = next("magic number")?;
    if magic.get(magic.root) != &Value::BigInt(LEGACY_MAGIC.to_vec()) {
        return Err(FormatError::UnknownFormat {
            path: src.path.clone(),
            why: "a pickle, but not a torch.save file (wrong magic number)".into(),
        });
    }
    let proto = next("protocol version")?;
    if proto.get(proto.root) != &Value::Int(1001) {
        return Err(FormatError::Unsupported {
            path: src.path.clone(),
            why: format!(
                "legacy protocol version {}, expected 1001",
                excerpt(&format!("{:?}", proto.get(proto.root)))
            ),
        });
    }
    let sys_info = next("system info")?;
    if let Value::Dict(pairs) = sys_info.get(sys_info.root) {
        for &(k, v) in pairs {
            if sys_info.get(k) == &Value::Str("little_endian".into())
                && sys_info.get(v) == &Value::Bool(false)
            {
                return Err(FormatError::Unsupported {
                    path: src.path.clone(),
                    why: "written on a big-endian machine".into(),
                });
            }
        }
    }
    let main = next("checkpoint object")?;
    let it = interpret(&main).map_err(|why| FormatError::Unpickle {
        path: src.path.clone(),
        entry: None,
        why,
    })?;
    let keys_pickle = next("storage key list")?;
    let keys: Vec<String> = match keys_pickle.get(keys_pickle.root) {
        Value::List(items) | Value::Tuple(items) => items
            .iter()
            .map(|&i| match keys_pickle.get(i) {
                Value::Str(s) => Ok(s.clone()),
                other => Err(corrupt(format!("storage key is {}", other.a_kind()))),
            })
            .collect::<Result<_>>()?,
        other => return Err(corrupt(format!("storage key list is {}", other.a_kind()))),
    };

    src.release(0, pos as u64);
    // Walk the raw storage records that follow the pickles.
    let mut roots: BTreeMap<String, (u64, u64)> = BTreeMap::new(); // key -> (start, nbytes)
    let mut at = pos as u64;
    for key in &keys {
        let k = excerpt(key);
        let decl = it
            .storages
            .get(key)
            .ok_or_else(|| corrupt(format!("storage '{k}' is listed but never used")))?;
        if at + 8 > src.len() {
            return Err(corrupt(format!("truncated before storage '{k}'")));
        }
        let mut header = [0u8; 8];
        src.read_at(at, &mut header)?;
        let count = u64::from_le_bytes(header);
        // torch.load refuses a record whose size differs from the declared one; so do we, before
        // a wrong count misplaces every record after it.
        if decl.view_of.is_some() {
            return Err(corrupt(format!(
                "storage '{k}' is listed with the stored storages but declared as a view"
            )));
        }
        if count != decl.numel {
            return Err(corrupt(format!(
                "storage '{k}' holds {count} elements in the file but its persistent id declares {}",
                decl.numel
            )));
        }
        let nbytes = count
            .checked_mul(decl.dtype.size() as u64)
            .ok_or_else(|| corrupt(format!("storage '{k}' claims {count} elements")))?;
        let start = at + 8;
        if start.checked_add(nbytes).is_none_or(|end| end > src.len()) {
            return Err(corrupt(format!(
                "storage '{k}' claims {nbytes} bytes at offset {start}, past the end of the {}-byte file",
                src.len()
            )));
        }
        roots.insert(key.clone(), (start, nbytes));
        at = start + nbytes;
    }

    let mut storages = BTreeMap::new();
    for (key, decl) in &it.storages {
        let k = excerpt(key);
        let nbytes = decl
            .nbytes()
            .ok_or_else(|| corrupt(format!("storage '{k}' claims an impossible size")))?;
        let (root_key, offset_bytes) = match &decl.view_of {
            None => (key.as_str(), 0),
            Some((root, offset)) => (
                root.as_str(),
                offset
                    .checked_mul(decl.dtype.size() as u64)
                    .ok_or_else(|| {
                        corrupt(format!("storage view '{k}' has an impossible offset"))
                    })?,
            ),
        };
        let &(start, available) = roots.get(root_key).ok_or_else(|| {
            corrupt(format!(
                "storage '{}' is used but has no data (it is not in the storage key list)",
                excerpt(root_key)
            ))
        })?;
        if offset_bytes
            .checked_add(nbytes)
            .is_none_or(|end| end > available)
        {
            return Err(corrupt(match &decl.view_of {
                None => {
                    format!("storage '{k}' claims {nbytes} bytes but its data holds {available}")
                }
                Some(_) => format!(
                    "storage view '{k}' of {nbytes} bytes at byte {offset_bytes} of storage '{}' \
                     reaches past the {available} bytes that storage holds",
                    excerpt(root_key)
                ),
            }));
        }
        storages.insert(
            key.clone(),
            Storage {
                file: file_index,
                key: key.clone(),
                nbytes,
                location: Location::Mapped {
                    start: start + offset_bytes,
                },
            },
        );
    }
    Ok(TorchFile {
        root: it.root,
        tensors: it.tensors,
        storages,
    })
}
