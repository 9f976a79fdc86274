use super::unpickle::interpret;
use super::TorchFile;
use crate::error::{excerpt, FormatError, Result};
use crate::pickle;
use crate::source::{inflate, Location, SourceFile, Storage};
use std::collections::{BTreeMap, HashMap};
use zip::CompressionMethod;

struct Entry {
    index: usize,
    method: CompressionMethod,
    data_start: u64,
    compressed: u64,
    size: u64,
    crc: u32,
}

/// Reads the archive's directory and `data.pkl`; tensor bytes stay in the file.
pub(crate) fn read_zip(src: &SourceFile, file_index: usize) -> Result<TorchFile> {
    let corrupt = |why: String| FormatError::corrupt(&src.path, why);
    let mut archive = super::open_zip(src)?;
    refuse_duplicate_names(src, archive.central_directory_start(), archive.len())?;
    let mut entries: HashMap<String, Entry> = HashMap::new();
    for index in 0..archive.len() {
        let f = archive
            .by_index_raw(index)
            .map_err(|e| corrupt(format!("zip entry {index}: {e}")))?;
        let name = f
            .name()
            .map_err(|e| corrupt(format!("zip entry {index}: {e}")))?
            .to_string();
        let data_start = f
            .data_start()
            .ok_or_else(|| corrupt(format!("zip entry {name}: no data offset")))?;
        let (compressed, size, crc) = (f.compressed_size(), f.size(), f.crc32());
        if data_start
            .checked_add(compressed)
            .is_none_or(|end| end > src.len())
        {
            return Err(corrupt(format!(
                "zip entry {name} claims {compressed} bytes at offset {data_start}, past the end of the {}-byte file",
                src.len()
            )));
        }
        if entries.contains_key(&name) {
            return Err(duplicate(src, &name));
        }
        entries.insert(
            name,
            Entry {
                index,
                method: f.compression(),
                data_start,
                compressed,
                size,
                crc,
            },
        );
    }

    let mut pickles: Vec<&String> = entries
        .keys()
        .filter(|n| {
            n.as_str() == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        })
        .collect();
    pickles.sort();
    let pkl_name = match pickles.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(FormatError::UnknownFormat {
                path: src.path.clone(),
                why: "a zip archive without data.pkl, so not a torch.save file".into(),
            })
        }
        more => return Err(corrupt(format!("several pickles in one archive: {more:?}"))),
    };
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];
    let pkl = entry_bytes(src, &entries[&pkl_name], &pkl_name)?;
    let parsed = pickle::parse(&pkl).map_err(|e| FormatError::Pickle {
        path: src.path.clone(),
        why: format!("{pkl_name}: {e}"),
    })?;
    let it = interpret(&parsed).map_err(|why| FormatError::Unpickle {
        path: src.path.clone(),
        entry: Some(pkl_name.clone()),
        why,
    })?;

    let mut storages = BTreeMap::new();
    for (key, decl) in &it.storages {
        let k = excerpt(key);
        let name = format!("{prefix}data/{key}");
        let entry = entries.get(&name).ok_or_else(|| {
            corrupt(format!(
                "the pickle names storage '{k}' but there is no entry {name}"
            ))
        })?;
        let nbytes = decl
            .nbytes()
            .ok_or_else(|| corrupt(format!("storage '{k}' claims an impossible size")))?;
        if decl.view_of.is_some() {
            return Err(corrupt(format!(
                "storage '{k}' is a legacy storage view inside a zip file"
            )));
        }
        if entry.size < nbytes {
            return Err(corrupt(format!(
                "storage '{k}' claims {nbytes} bytes but entry {name} holds {}",
                entry.size
            )));
        }
        let location = match entry.method {
            CompressionMethod::Stored if entry.compressed == entry.size => Location::Mapped {
                start: entry.data_start,
            },
            CompressionMethod::Stored => {
                return Err(corrupt(format!("stored entry {name} has two different sizes")))
            }
            CompressionMethod::Deflated => Location::Deflated { entry: entry.index },
            other => {
                return Err(FormatError::Unsupported {
                    path: src.path.clone(),
                    why: format!("entry {name} uses compression {other:?}; only stored and deflated entries are read"),
                })
            }
        };
        storages.insert(
            key.clone(),
            Storage {
                file: file_index,
                key: key.clone(),
                nbytes,
                location,
            },
        );
    }
    Ok(TorchFile {
        root: it.root,
        tensors: it.tensors,
        storages,
    })
}

fn duplicate(src: &SourceFile, name: &str) -> FormatError {
    FormatError::corrupt(
        &src.path,
        format!(
            "zip entry '{}' occurs twice; torch.load would read the first copy, other readers the last, so the archive is ambiguous",
            excerpt(name)
        ),
    )
}

/// Walks the central directory (from `start`, at most `len + 1` headers) and refuses a name that
/// occurs twice. The zip crate keeps one entry per name (the last), while `torch.load` reads the
/// first, so a duplicate would let two readers see different tensors.
fn refuse_duplicate_names(src: &SourceFile, start: u64, len: usize) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    let mut pos = start;
    for _ in 0..=len {
        let mut header = [0u8; 46];
        if pos.checked_add(46).is_none_or(|end| end > src.len()) {
            break;
        }
        src.read_at(pos, &mut header)?;
        if header[..4] != *b"PK\x01\x02" {
            break;
        }
        let u16_at = |i: usize| u16::from_le_bytes([header[i], header[i + 1]]) as u64;
        let (name_len, extra_len, comment_len) = (u16_at(28), u16_at(30), u16_at(32));
        if pos + 46 + name_len > src.len() {
            break;
        }
        let mut name = vec![0u8; name_len as usize];
        src.read_at(pos + 46, &mut name)?;
        if seen.contains(&name) {
            return Err(duplicate(src, &String::from_utf8_lossy(&name)));
        }
        seen.insert(name);
        pos += 46 + name_len + extra_len + comment_len;
    }
    Ok(())
}

/// The pickle itself is never larger than this; a bigger claim is refused before allocating.
const MAX_PICKLE_BYTES: u64 = 1 << 31;

fn entry_bytes(src: &SourceFile, e: &Entry, name: &str) -> Result<Vec<u8>> {
    match e.method {
        CompressionMethod::Stored if e.compressed <= MAX_PICKLE_BYTES => {
            let mut buf = vec![0u8; e.compressed as usize];
            src.read_at(e.data_start, &mut buf)?;
            // The pickle is small and decides everything else: check it. (Tensor storages are
            // not CRC-checked on read; that would mean reading every byte up front.)
            if crc32fast::hash(&buf) != e.crc {
                return Err(FormatError::corrupt(
                    &src.path,
                    format!("{name}: CRC-32 mismatch"),
                ));
            }
            Ok(buf)
        }
        CompressionMethod::Deflated if e.size <= MAX_PICKLE_BYTES => inflate(src, e.index, e.size),
        CompressionMethod::Stored | CompressionMethod::Deflated => Err(FormatError::corrupt(
            &src.path,
            format!("{name} claims {} bytes", e.size),
        )),
        other => Err(FormatError::Unsupported {
            path: src.path.clone(),
            why: format!("{name} uses compression {other:?}"),
        }),
    }
}
