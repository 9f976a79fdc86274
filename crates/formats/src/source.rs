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
        let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
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
    /// storages so that streaming a large file does not grow the process's resident set.
    pub(crate) fn read_at(&self, src: &SourceFile, at: u64, buf: &mut [u8]) -> Result<()> {
        match self.location {
            Location::Mapped { start } => src
                .file
                .read_exact_at(buf, start + at)
                .map_err(|e| FormatError::io(&src.path, e)),
            Location::Deflated { .. } => {
                let all = self.bytes(src)?;
                buf.copy_from_slice(&all[at as usize..at as usize + buf.len()]);
                Ok(())
            }
        }
    }
}

/// Deflate cannot expand data by more than about 1032:1; a larger claimed size is a lie.
const MAX_DEFLATE_RATIO: u64 = 1032;

pub(crate) fn inflate(src: &SourceFile, entry: usize, expected: u64) -> Result<Vec<u8>> {
    let corrupt = |why: String| FormatError::corrupt(&src.path, why);
    let mut archive = crate::torch::open_zip(src)?;
    let mut f = archive
        .by_index(entry)
        .map_err(|e| corrupt(format!("zip entry {entry}: {e}")))?;
    let name = f.name().map(|n| n.to_string()).unwrap_or_default();
    let size = f.size();
    if size > f.compressed_size().saturating_mul(MAX_DEFLATE_RATIO) + 1024 {
        return Err(corrupt(format!(
            "zip entry {name} claims {size} bytes from {} compressed bytes",
            f.compressed_size()
        )));
    }
    if size < expected {
        return Err(corrupt(format!(
            "zip entry {name} holds {size} bytes but {expected} are needed"
        )));
    }
    let mut out = Vec::with_capacity(size.min(1 << 30) as usize);
    (&mut f)
        .take(size + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(format!("zip entry {name}: {e}")))?;
    if out.len() as u64 != size {
        return Err(corrupt(format!(
            "zip entry {name}: inflated to {} bytes, the header says {size}",
            out.len()
        )));
    }
    out.truncate(expected as usize);
    Ok(out)
}
