//! safetensors: header parsing (validated by the `safetensors` crate) and a streaming writer.

use crate::dtype::DType;
use crate::error::{FormatError, Result};
use crate::output::OutTensor;
use crate::source::{Location, SourceFile, Storage};
use std::collections::BTreeMap;
use std::io::Write;

/// One tensor of a safetensors file.
pub(crate) struct StTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub storage: Storage,
}

pub(crate) struct StFile {
    pub tensors: Vec<StTensor>,
    pub metadata: BTreeMap<String, String>,
}

/// Parses and validates the header of `bytes` (a whole file): size limits, JSON, dtypes, offsets
/// that tile the data buffer exactly. Reads no tensor data.
pub fn parse_header(
    bytes: &[u8],
) -> std::result::Result<(usize, safetensors::tensor::Metadata), String> {
    if bytes.len() >= 8 {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        if n > (bytes.len() - 8) as u64 {
            return Err(format!(
                "the header claims {n} bytes but the file has only {} after the length prefix",
                bytes.len() - 8
            ));
        }
    }
    safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())
}

pub(crate) fn read_safetensors(src: &SourceFile, file_index: usize) -> Result<StFile> {
    let (n, meta) = parse_header(&src.map).map_err(|why| FormatError::corrupt(&src.path, why))?;
    let data_start = 8 + n as u64;
    src.release(0, data_start);
    let mut tensors: Vec<StTensor> = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let dtype =
                DType::from_safetensors(info.dtype).ok_or_else(|| FormatError::BadTensor {
                    path: src.path.clone(),
                    tensor: name.clone(),
                    why: format!("dtype {:?} is not supported", info.dtype),
                })?;
            let (s, e) = info.data_offsets;
            Ok(StTensor {
                dtype,
                shape: info.shape.clone(),
                storage: Storage {
                    file: file_index,
                    key: name.clone(),
                    nbytes: (e - s) as u64,
                    location: Location::Mapped {
                        start: data_start + s as u64,
                    },
                },
                name,
            })
        })
        .collect::<Result<_>>()?;
    // The file's own order (by offset) is the natural listing order.
    tensors.sort_by_key(|t| t.storage.file_offset());
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(StFile { tensors, metadata })
}

/// The order of tensors in a file we write: by element size, largest first, then name.
pub(crate) fn data_order(a: (&str, DType), b: (&str, DType)) -> std::cmp::Ordering {
    b.1.size().cmp(&a.1.size()).then_with(|| a.0.cmp(b.0))
}

/// Builds the header the way the reference writer does: `__metadata__` first, tensors ordered
/// by element size (largest first) then name, padded with spaces to a multiple of 8 bytes.
/// Returns the header bytes (with the length prefix) and the tensors in data order.
pub(crate) fn header(
    tensors: &mut [OutTensor<'_>],
    metadata: &BTreeMap<String, String>,
) -> std::result::Result<Vec<u8>, String> {
    tensors.sort_by(|a, b| data_order((&a.name, a.dtype), (&b.name, b.dtype)));
    let mut json = String::from("{");
    let mut first = true;
    let mut sep = |json: &mut String| {
        if !first {
            json.push(',');
        }
        first = false;
    };
    if !metadata.is_empty() {
        sep(&mut json);
        json.push_str("\"__metadata__\":");
        json.push_str(&serde_json::to_string(metadata).map_err(|e| e.to_string())?);
    }
    let mut offset = 0u64;
    for t in tensors.iter() {
        let dtype = t
            .dtype
            .safetensors_name()
            .ok_or_else(|| format!("tensor '{}': safetensors cannot store {}", t.name, t.dtype))?;
        let expected = t
            .shape
            .iter()
            .try_fold(t.dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64));
        if expected != Some(t.nbytes) {
            return Err(format!(
                "tensor '{}': {} bytes do not match shape {:?}",
                t.name, t.nbytes, t.shape
            ));
        }
        sep(&mut json);
        json.push_str(&serde_json::to_string(&t.name).map_err(|e| e.to_string())?);
        json.push_str(&format!(
            ":{{\"dtype\":\"{dtype}\",\"shape\":{},\"data_offsets\":[{offset},{}]}}",
            serde_json::to_string(&t.shape).map_err(|e| e.to_string())?,
            offset + t.nbytes
        ));
        offset += t.nbytes;
    }
    json.push('}');
    let pad = (8 - json.len() % 8) % 8;
    json.extend(std::iter::repeat_n(' ', pad));
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    Ok(out)
}

/// Streams a safetensors file: the header, then each tensor's bytes in header order.
pub fn write_safetensors(
    out: &mut dyn Write,
    path: &std::path::Path,
    mut tensors: Vec<OutTensor<'_>>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let head = header(&mut tensors, metadata).map_err(FormatError::Invalid)?;
    out.write_all(&head).map_err(|e| FormatError::io(path, e))?;
    for t in tensors.iter_mut() {
        (t.write)(out, path)?;
    }
    Ok(())
}

/// Replaces strings in the JSON header of the safetensors file being written through `file`
/// (`path` names it in errors), each by one of the same length, so that the data offsets stay
/// valid: for values known only once the tensors are written (hashes computed meanwhile).
pub fn patch_header(
    file: &std::fs::File,
    path: &std::path::Path,
    replacements: &[(String, String)],
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let io = |e| FormatError::io(path, e);
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0).map_err(io)?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(FormatError::corrupt(path, format!("a {n}-byte header")));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact_at(&mut header, 8).map_err(io)?;
    for (from, to) in replacements {
        if from.len() != to.len() || from.is_empty() {
            return Err(FormatError::Invalid(format!(
                "header patch '{from}' -> '{to}' changes the length"
            )));
        }
        let at = header
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .ok_or_else(|| {
                FormatError::Invalid(format!("{}: '{from}' is not in the header", path.display()))
            })?;
        header[at..at + to.len()].copy_from_slice(to.as_bytes());
    }
    file.write_all_at(&header, 8).map_err(io)
}
