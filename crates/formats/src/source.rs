//! Opened checkpoint files and the places inside them where tensor bytes live.

use crate::error::{FormatError, Result};
use memmap2::Mmap;
use std::borrow::Cow;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A checkpoint file, opened and memory-mapped (mapping reads nothing until a page is touched).
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub path: PathBuf,
    pub file: File,
    pub map: Mmap,
}

impl SourceFile {
    pub fn open(path: &Path) -> Result<SourceFile> {
        // Only regular files: a FIFO would block, a device such as /dev/zero never ends.
        let file = crate::input::open_regular(path)?;
        let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        if len == 0 {
            return Err(FormatError::corrupt(path, "the file is empty"));
        }
        // SAFETY: the map is read-only; a checkpoint modified while we read it is the user's
        // concurrent write, the same hazard every mmap-based loader (safetensors, llama.cpp) takes.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?;
        Ok(SourceFile {
            path: path.to_path_buf(),
            file,
            map,
        })
    }

    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Reads bytes with `pread`, without touching the mapping.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| FormatError::io(&self.path, e))
    }

    /// A reader over the file (not the mapping) for parsers that seek around, such as the zip
    /// directory reader: touching mapped pages would count them (with the kernel's large page
    /// folios, megabytes at a time) against our resident memory.
    pub fn reader(&self) -> Result<std::io::BufReader<File>> {
        let f = self
            .file
            .try_clone()
            .map_err(|e| FormatError::io(&self.path, e))?;
        Ok(std::io::BufReader::with_capacity(64 << 10, f))
    }

    /// Drops our mapping of `[start, start + len)` from the resident set (the page cache keeps
    /// the data; touching it again maps it back).
    pub fn release(&self, start: u64, len: u64) {
        if len == 0 || start >= self.len() {
            return;
        }
        let len = len.min(self.len() - start);
        // SAFETY: the mapping is read-only and file-backed; MADV_DONTNEED only drops our page
        // table entries, and later reads fault the same file contents back in.
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start as usize,
                len as usize,
            )
        };
    }
}

/// Where a storage's bytes are.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Location {
    /// Stored uncompressed at this file offset: readable in place.
    Mapped { start: u64 },
    /// A DEFLATE-compressed zip entry (rare): inflated on demand.
    Deflated { entry: usize },
}

/// A run of bytes that tensors view: a torch storage, or one safetensors tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Storage {
    /// Index of the file in [`crate::TensorStore::files`].
    pub file: usize,
    /// The storage's key in the checkpoint (`data/<key>` in a torch zip), or the tensor name.
    pub key: String,
    pub nbytes: u64,
    pub(crate) location: Location,
}

impl Storage {
    /// Absolute file offset of the first byte, for storages stored in place.
    pub fn file_offset(&self) -> Option<u64> {
        match self.location {
            Location::Mapped { start } => Some(start),
            Location::Deflated { .. } => None,
        }
    }

    pub(crate) fn bytes<'a>(&self, src: &'a SourceFile) -> Result<Cow<'a, [u8]>> {
        match self.location {
            Location::Mapped { start } => {
                let (s, e) = (start as usize, (start + self.nbytes) as usize);
                Ok(Cow::Borrowed(&src.map[s..e]))
            }
            Location::Deflated { entry } => inflate(src, entry, self.nbytes).map(Cow::Owned),
        }
    }

    /// Reads `buf.len()` bytes starting `at` bytes into the storage, with `pread` for mapped
    /// storages so that streaming a large file does not grow the process's resident set;
    /// compressed storages are inflated up to the end of `buf` through a fixed-size buffer.
    pub(crate) fn read_at(&self, src: &SourceFile, at: u64, buf: &mut [u8]) -> Result<()> {
        match self.location {
            Location::Mapped { start } => src
                .file
                .read_exact_at(buf, start + at)
                .map_err(|e| FormatError::io(&src.path, e)),
            Location::Deflated { entry } => {
                with_inflated(src, entry, self.nbytes, &mut |r, name| {
                    skip(r, at, src, name)?;
                    r.read_exact(buf)
                        .map_err(|e| FormatError::corrupt(&src.path, format!("{name}: {e}")))
                })
            }
        }
    }
}

/// Deflate cannot expand data by more than about 1032:1; a larger claimed size is a lie.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// The most bytes of one compressed zip entry ever inflated into memory at once (a compressed
/// `data.pkl`, or a compressed storage read whole by [`crate::TensorStore::bytes`]). Streaming
/// reads ([`crate::TensorStore::copy_to`] of a contiguous tensor) pass through a fixed buffer and
/// need no such bound.
pub const MAX_INFLATED_BYTES: u64 = 256 << 20;

/// Opens zip entry `entry`, checks that its claimed size is possible from its compressed size and
/// holds `expected` bytes, and hands `f` a reader over its inflated bytes (at most the claimed
/// size) and the entry's name.
pub(crate) fn with_inflated<T>(
    src: &SourceFile,
    entry: usize,
    expected: u64,
    f: &mut dyn FnMut(&mut dyn Read, &str) -> Result<T>,
) -> Result<T> {
    let corrupt = |why: String| FormatError::corrupt(&src.path, why);
    let mut archive = crate::torch::open_zip(src)?;
    let zf = archive
        .by_index(entry)
        .map_err(|e| corrupt(format!("zip entry {entry}: {e}")))?;
    let name = zf.name().map(|n| n.to_string()).unwrap_or_default();
    let size = zf.size();
    if size > zf.compressed_size().saturating_mul(MAX_DEFLATE_RATIO) + 1024 {
        return Err(corrupt(format!(
            "zip entry {name} claims {size} bytes from {} compressed bytes",
            zf.compressed_size()
        )));
    }
    if size < expected {
        return Err(corrupt(format!(
            "zip entry {name} holds {size} bytes but {expected} are needed"
        )));
    }
    let mut r = zf.take(size);
    f(&mut r, &name)
}

/// Reads and discards `n` bytes of `r`.
fn skip(r: &mut dyn Read, n: u64, src: &SourceFile, name: &str) -> Result<()> {
    let got = std::io::copy(&mut r.take(n), &mut std::io::sink())
        .map_err(|e| FormatError::corrupt(&src.path, format!("{name}: {e}")))?;
    if got != n {
        return Err(FormatError::corrupt(
            &src.path,
            format!("{name}: inflated to {got} bytes, {n} were needed"),
        ));
    }
    Ok(())
}

/// Inflates the first `expected` bytes of a zip entry into memory: at most
/// [`MAX_INFLATED_BYTES`].
pub(crate) fn inflate(src: &SourceFile, entry: usize, expected: u64) -> Result<Vec<u8>> {
    with_inflated(src, entry, expected, &mut |r, name| {
        if expected > MAX_INFLATED_BYTES {
            return Err(FormatError::corrupt(
                &src.path,
                format!(
                    "zip entry {name} would inflate to {expected} bytes in memory, more than the {} MiB allowed (compressed entries are read whole)",
                    MAX_INFLATED_BYTES >> 20
                ),
            ));
        }
        let mut out = Vec::with_capacity(expected as usize);
        r.take(expected)
            .read_to_end(&mut out)
            .map_err(|e| FormatError::corrupt(&src.path, format!("zip entry {name}: {e}")))?;
        if out.len() as u64 != expected {
            return Err(FormatError::corrupt(
                &src.path,
                format!(
                    "zip entry {name}: inflated to {} bytes, {expected} were needed",
                    out.len()
                ),
            ));
        }
        Ok(out)
    })
}

/// Streams bytes `[at, at + len)` of a compressed storage to `emit`, through a buffer of `chunk`
/// bytes.
pub(crate) fn stream_inflated(
    src: &SourceFile,
    entry: usize,
    nbytes: u64,
    at: u64,
    len: u64,
    chunk: usize,
    emit: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    with_inflated(src, entry, nbytes, &mut |r, name| {
        skip(r, at, src, name)?;
        let mut buf = vec![0u8; chunk.min(len as usize).max(1)];
        let mut left = len;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            r.read_exact(&mut buf[..n])
                .map_err(|e| FormatError::corrupt(&src.path, format!("zip entry {name}: {e}")))?;
            emit(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    })
}
