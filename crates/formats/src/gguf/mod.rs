//! GGUF (llama.cpp's checkpoint format, versions 2 and 3): a strict header reader and row access.
//!
//! A GGUF file is a little-endian header (magic `GGUF`, version, tensor and key/value counts), the
//! key/value metadata, one info record per tensor (name, dimensions fastest-first, ggml type,
//! offset into the data section) and then the data section, aligned to `general.alignment`.
//! Every count, length and offset is checked against the file's size before anything is
//! allocated, so a small hostile file costs little. Tensor data is read with `pread`, a row at a
//! time, never through a mapping: selection reads a few rows of each tensor, and reading them
//! this way touches nothing else.

mod quant;

pub use quant::{dequantize, GgmlType};

use crate::error::{excerpt, FormatError, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The first four bytes of every GGUF file.
pub const MAGIC: &[u8; 4] = b"GGUF";

/// ggml's limit on the number of dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays nested deeper than this are refused (real files nest none).
const MAX_NESTING: usize = 4;
const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum GgufValue {
    Uint(u64),
    Int(i64),
    /// Kept as f32 so that listings print what was stored (`1e-5`, not `9.99999974e-6`).
    Float32(f32),
    Float(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    /// An array longer than [`KEPT_ARRAY_LEN`]: its element kind and length only.
    LongArray {
        element: &'static str,
        len: u64,
    },
}

/// Arrays longer than this keep their length only ([`GgufValue::LongArray`]).
pub const KEPT_ARRAY_LEN: u64 = 1024;

/// Bytes of one element of a fixed-size metadata type.
fn fixed_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// Fixed-size elements are skipped in one run; strings and arrays one at a time.
fn element_runs(ty: u32, count: u64) -> u64 {
    if fixed_size(ty).is_some() {
        1
    } else {
        count
    }
}

fn run_len(ty: u32, count: u64) -> u64 {
    if fixed_size(ty).is_some() {
        count
    } else {
        1
    }
}

fn element_name(ty: u32) -> &'static str {
    match ty {
        0..=5 | 10 | 11 => "integers",
        6 | 12 => "floats",
        7 => "bools",
        8 => "strings",
        9 => "arrays",
        _ => "values",
    }
}

impl GgufValue {
    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::Uint(v) => Some(v),
            GgufValue::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
    /// Short text for listings: arrays longer than a few items are summarised.
    pub fn summary(&self) -> String {
        match self {
            GgufValue::Array(items) if items.len() > 8 => {
                let kind = match items.first() {
                    Some(GgufValue::String(_)) => "strings",
                    Some(GgufValue::Float(_) | GgufValue::Float32(_)) => "floats",
                    Some(GgufValue::Bool(_)) => "bools",
                    Some(GgufValue::Array(_)) => "arrays",
                    _ => "integers",
                };
                format!("[{} {kind}]", items.len())
            }
            GgufValue::LongArray { element, len } => format!("[{len} {element}]"),
            GgufValue::String(s) => excerpt(s),
            v => serde_json::to_string(v).unwrap_or_default(),
        }
    }
}

/// One tensor of a GGUF file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GgufTensor {
    pub name: String,
    pub ggml_type: GgmlType,
    /// Dimensions in PyTorch order (slowest first): a `[rows, cols]` weight as in the Hugging
    /// Face checkpoint it was converted from. GGUF stores them fastest first.
    pub shape: Vec<usize>,
    /// Absolute file offset of the first byte.
    pub offset: u64,
    pub nbytes: u64,
}

impl GgufTensor {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
    /// Elements of one row (the fastest dimension); blocks never straddle rows.
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }
    pub fn rows(&self) -> usize {
        self.shape.iter().rev().skip(1).product()
    }
    pub fn row_bytes(&self) -> usize {
        self.ggml_type
            .bytes_for(self.row_len() as u64)
            .expect("checked when the file was opened") as usize
    }
}

/// An opened GGUF file: its metadata and tensor list, read and checked; data read on demand.
#[derive(Debug)]
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub len: u64,
    pub alignment: u64,
    /// Offset of the data section.
    pub data_start: u64,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensor>,
    /// Index into `tensors` by name.
    by_name: std::collections::HashMap<String, usize>,
    file: File,
}

/// Whether `head` (the file's first bytes) starts a GGUF file.
pub fn is_gguf(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

/// Whether the regular file at `path` starts with the GGUF magic.
pub fn is_gguf_file(path: &Path) -> Result<bool> {
    let mut head = [0u8; 4];
    let n = crate::input::open_regular(path)?
        .read(&mut head)
        .map_err(|e| FormatError::io(path, e))?;
    Ok(is_gguf(&head[..n]))
}

/// Reads the header, counting bytes and refusing anything longer than what is left of the file.
struct Header<'p> {
    path: &'p Path,
    r: BufReader<File>,
    pos: u64,
    len: u64,
}

impl Header<'_> {
    fn corrupt(&self, why: impl Into<String>) -> FormatError {
        FormatError::corrupt(self.path, why)
    }
    fn left(&self) -> u64 {
        self.len - self.pos
    }
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>> {
        if n > self.left() {
            return Err(self.corrupt(format!(
                "{what} at byte {} needs {n} bytes, only {} are left",
                self.pos,
                self.left()
            )));
        }
        let mut buf = vec![0u8; n as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|e| FormatError::io(self.path, e))?;
        self.pos += n;
        Ok(buf)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self
            .bytes(N as u64, what)?
            .try_into()
            .expect("N bytes read"))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let at = self.pos;
        let b = self.bytes(n, what)?;
        String::from_utf8(b).map_err(|_| self.corrupt(format!("{what} at byte {at} is not UTF-8")))
    }

    /// Every element takes at least its fixed size (strings and arrays at least their 8-byte
    /// length), so a count the rest of the file cannot hold is refused before anything is
    /// allocated or looped over.
    fn check_array_fits(&self, elem: u32, count: u64, key: &str) -> Result<()> {
        if count.saturating_mul(fixed_size(elem).unwrap_or(8)) > self.left() {
            return Err(self.corrupt(format!(
                "'{}': an array of {count} elements does not fit in the {} bytes left",
                excerpt(key),
                self.left()
            )));
        }
        Ok(())
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<()> {
        if n > self.left() {
            return Err(self.corrupt(format!(
                "{what} at byte {} needs {n} bytes, only {} are left",
                self.pos,
                self.left()
            )));
        }
        self.r
            .seek_relative(n as i64)
            .map_err(|e| FormatError::io(self.path, e))?;
        self.pos += n;
        Ok(())
    }

    /// Checks and skips `count` values of type `ty` (one string or array when `ty` is one).
    fn skip_value(&mut self, ty: u32, key: &str, depth: usize, count: u64) -> Result<()> {
        if let Some(size) = fixed_size(ty) {
            return self.skip(count.saturating_mul(size), key);
        }
        match ty {
            8 => {
                let n = self.u64(key)?;
                self.skip(n, key)
            }
            9 => {
                if depth >= MAX_NESTING {
                    return Err(self.corrupt(format!(
                        "'{}': arrays nested more than {MAX_NESTING} deep",
                        excerpt(key)
                    )));
                }
                let elem = self.u32(key)?;
                let n = self.u64(key)?;
                self.check_array_fits(elem, n, key)?;
                for _ in 0..element_runs(elem, n) {
                    self.skip_value(elem, key, depth + 1, run_len(elem, n))?;
                }
                Ok(())
            }
            t => Err(self.corrupt(format!(
                "'{}': unknown metadata value type {t}",
                excerpt(key)
            ))),
        }
    }

    /// A value of GGUF type `ty`.
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<GgufValue> {
        use GgufValue::*;
        Ok(match ty {
            0 => Uint(u8::from_le_bytes(self.array(key)?) as u64),
            1 => Int(i8::from_le_bytes(self.array(key)?) as i64),
            2 => Uint(u16::from_le_bytes(self.array(key)?) as u64),
            3 => Int(i16::from_le_bytes(self.array(key)?) as i64),
            4 => Uint(u32::from_le_bytes(self.array(key)?) as u64),
            5 => Int(i32::from_le_bytes(self.array(key)?) as i64),
            6 => Float32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => Bool(false),
                1 => Bool(true),
                b => return Err(self.corrupt(format!("'{}': bool byte {b}", excerpt(key)))),
            },
            8 => String(self.string(key)?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(self.corrupt(format!(
                        "'{}': arrays nested more than {MAX_NESTING} deep",
                        excerpt(key)
                    )));
                }
                let elem = self.u32(key)?;
                let count = self.u64(key)?;
                self.check_array_fits(elem, count, key)?;
                if count > KEPT_ARRAY_LEN {
                    // Vocabularies and the like: checked and skipped, only their length kept,
                    // so that memory does not grow with them (a value is 32 bytes here).
                    for _ in 0..element_runs(elem, count) {
                        self.skip_value(elem, key, depth + 1, run_len(elem, count))?;
                    }
                    return Ok(LongArray {
                        element: element_name(elem),
                        len: count,
                    });
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                Array(items)
            }
            10 => Uint(u64::from_le_bytes(self.array(key)?)),
            11 => Int(i64::from_le_bytes(self.array(key)?)),
            12 => Float(f64::from_le_bytes(self.array(key)?)),
            t => {
                return Err(self.corrupt(format!(
                    "'{}': unknown metadata value type {t}",
                    excerpt(key)
                )))
            }
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = crate::input::open_regular(path)?;
        let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        let reader = file.try_clone().map_err(|e| FormatError::io(path, e))?;
        let mut h = Header {
            path,
            r: BufReader::with_capacity(64 << 10, reader),
            pos: 0,
            len,
        };
        let magic = h.array::<4>("the magic number")?;
        if &magic != MAGIC {
            return Err(FormatError::UnknownFormat {
                path: path.into(),
                why: format!("not GGUF: starts with bytes {magic:02x?}"),
            });
        }
        let version = h.u32("the version")?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(FormatError::Unsupported {
                    path: path.into(),
                    why: "GGUF version 1 (2023's first llama.cpp files) is not read; convert it again with a current llama.cpp".into(),
                })
            }
            v if v != 0 && v.swap_bytes() <= 3 => {
                return Err(FormatError::Unsupported {
                    path: path.into(),
                    why: "a big-endian GGUF file; only little-endian files are read".into(),
                })
            }
            v => {
                return Err(FormatError::Unsupported {
                    path: path.into(),
                    why: format!("GGUF version {v}; versions 2 and 3 are read"),
                })
            }
        }
        let n_tensors = h.u64("the tensor count")?;
        let n_kv = h.u64("the metadata count")?;
        // A key/value pair takes at least 13 bytes, a tensor record at least 24.
        if n_kv.saturating_mul(13) > h.left() || n_tensors.saturating_mul(24) > h.left() {
            return Err(h.corrupt(format!(
                "{n_tensors} tensors and {n_kv} metadata entries cannot fit in a {len}-byte file"
            )));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = h.string("a metadata key")?;
            let ty = h.u32(&key)?;
            let value = h.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(h.corrupt(format!("metadata key '{}' appears twice", excerpt(&key))));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => {
                    return Err(h.corrupt(format!(
                        "general.alignment is {}, not a power of two",
                        v.summary()
                    )))
                }
            },
        };
        let mut records = Vec::with_capacity(n_tensors as usize);
        let mut names = std::collections::HashSet::new();
        for _ in 0..n_tensors {
            let name = h.string("a tensor name")?;
            if !names.insert(name.clone()) {
                return Err(h.corrupt(format!("tensor '{}' appears twice", excerpt(&name))));
            }
            let n_dims = h.u32(&name)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(bad(path, &name, format!("{n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(h.u64(&name)?);
            }
            let type_id = h.u32(&name)?;
            let offset = h.u64(&name)?;
            records.push((name, dims, type_id, offset));
        }
        let data_start = h.pos.next_multiple_of(alignment);
        let mut tensors = Vec::with_capacity(records.len());
        for (name, dims, type_id, offset) in records {
            let ggml_type = GgmlType::from_id(type_id)
                .ok_or_else(|| bad(path, &name, format!("unknown ggml type {type_id}")))?;
            // A zero dimension would let the other dimensions' product overflow unnoticed;
            // llama.cpp writes none.
            if dims.contains(&0) {
                return Err(bad(path, &name, format!("dimensions {dims:?} include 0")));
            }
            let numel = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= len.saturating_mul(8))
                .ok_or_else(|| bad(path, &name, format!("dimensions {dims:?} are too large")))?;
            let nbytes = ggml_type
                .bytes_for(numel)
                .filter(|_| dims[0] % ggml_type.block().0 as u64 == 0)
                .ok_or_else(|| {
                    bad(
                        path,
                        &name,
                        format!(
                        "a row of {} elements is not a whole number of {ggml_type} blocks of {}",
                        dims[0],
                        ggml_type.block().0
                    ),
                    )
                })?;
            if offset % alignment != 0 {
                return Err(bad(
                    path,
                    &name,
                    format!("offset {offset} is not a multiple of the alignment {alignment}"),
                ));
            }
            let start = data_start.checked_add(offset);
            if start
                .and_then(|s| s.checked_add(nbytes))
                .is_none_or(|end| end > len)
            {
                return Err(bad(
                    path,
                    &name,
                    format!(
                        "{nbytes} bytes at data offset {offset} end past the file's {len} bytes (truncated?)"
                    ),
                ));
            }
            tensors.push(GgufTensor {
                name,
                ggml_type,
                shape: dims.iter().rev().map(|&d| d as usize).collect(),
                offset: data_start + offset,
                nbytes,
            });
        }
        check_overlaps(path, &tensors)?;
        let by_name = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            path: path.to_path_buf(),
            version,
            len,
            alignment,
            data_start,
            metadata,
            tensors,
            by_name,
            file,
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// A metadata value that must be a non-negative integer.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                FormatError::corrupt(
                    &self.path,
                    format!("{key} is {}, not a non-negative integer", v.summary()),
                )
            }),
        }
    }

    /// The stored bytes of rows `first..first + count` of `t`.
    pub fn read_rows(
        &self,
        t: &GgufTensor,
        first: usize,
        count: usize,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if first.checked_add(count).is_none_or(|end| end > t.rows()) {
            return Err(bad(
                &self.path,
                &t.name,
                format!("rows {first}..{first}+{count} asked of {} rows", t.rows()),
            ));
        }
        let rb = t.row_bytes();
        buf.resize(count * rb, 0);
        self.file
            .read_exact_at(buf, t.offset + (first * rb) as u64)
            .map_err(|e| FormatError::io(&self.path, e))
    }

    /// Row `row` of `t` as f32 (dequantised where quantised) into `out`, which must be
    /// `t.row_len()` long.
    pub fn read_row_f32(
        &self,
        t: &GgufTensor,
        row: usize,
        scratch: &mut Vec<u8>,
        out: &mut [f32],
    ) -> Result<()> {
        if !t.ggml_type.dequantizable() {
            return Err(FormatError::Unsupported {
                path: self.path.clone(),
                why: format!(
                    "tensor '{}' is {}, which this tool cannot dequantise (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K are read)",
                    excerpt(&t.name),
                    t.ggml_type
                ),
            });
        }
        if out.len() != t.row_len() {
            return Err(bad(
                &self.path,
                &t.name,
                format!("a row has {} elements, not {}", t.row_len(), out.len()),
            ));
        }
        self.read_rows(t, row, 1, scratch)?;
        dequantize(t.ggml_type, scratch, out);
        Ok(())
    }
}

fn bad(path: &Path, tensor: &str, why: String) -> FormatError {
    FormatError::BadTensor {
        path: path.into(),
        tensor: tensor.into(),
        why,
    }
}

/// Tensors whose bytes overlap are refused: llama.cpp never writes them, and a hostile file could
/// otherwise present one region under many names.
fn check_overlaps(path: &Path, tensors: &[GgufTensor]) -> Result<()> {
    let mut spans: Vec<(u64, u64, &str)> = tensors
        .iter()
        .filter(|t| t.nbytes > 0)
        .map(|t| (t.offset, t.offset + t.nbytes, t.name.as_str()))
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(bad(
                path,
                w[1].2,
                format!("its bytes overlap those of '{}'", excerpt(w[0].2)),
            ));
        }
    }
    Ok(())
}
