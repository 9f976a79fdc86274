//! Output plumbing shared by the writers: tensors to stream, and files or directories that
//! appear at their final path only once complete.

use crate::dtype::DType;
use crate::error::{FormatError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Streams a tensor's contiguous little-endian bytes into a writer.
pub type WriteBytes<'a> = Box<dyn FnMut(&mut dyn Write) -> Result<()> + 'a>;

/// A tensor to write: its description and a way to stream its contiguous little-endian bytes.
pub struct OutTensor<'a> {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub nbytes: u64,
    pub write: WriteBytes<'a>,
}

impl<'a> OutTensor<'a> {
    /// A tensor whose bytes are already in memory.
    pub fn from_bytes(
        name: impl Into<String>,
        dtype: DType,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    ) -> OutTensor<'a> {
        OutTensor {
            name: name.into(),
            dtype,
            shape,
            nbytes: bytes.len() as u64,
            write: Box::new(move |w| {
                w.write_all(&bytes)
                    .map_err(|e| FormatError::io("<output>", e))
            }),
        }
    }

    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

fn refuse_existing(dest: &Path, force: bool) -> Result<()> {
    if !force && dest.symlink_metadata().is_ok() {
        return Err(FormatError::OutputExists {
            path: dest.to_path_buf(),
        });
    }
    Ok(())
}

fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A file written under a temporary name beside its destination and renamed over it by
/// [`commit`](Self::commit); dropped without commit, it leaves nothing behind.
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl AtomicFile {
    pub fn create(dest: &Path, force: bool) -> Result<AtomicFile> {
        refuse_existing(dest, force)?;
        let dir = parent_of(dest);
        let tmp = tempfile::Builder::new()
            .prefix(".illama-tools-")
            .suffix(".partial")
            .tempfile_in(&dir)
            .map_err(|e| FormatError::io(&dir, e))?;
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// Where the file is being written.
    pub fn tmp_path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn file(&mut self) -> &mut std::fs::File {
        self.tmp.as_file_mut()
    }

    pub fn commit(self) -> Result<PathBuf> {
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|e| FormatError::io(&self.dest, e))?;
        let dest = self.dest;
        self.tmp
            .persist(&dest)
            .map_err(|e| FormatError::io(&dest, e.error))?;
        Ok(dest)
    }
}

/// A directory (of shards) built under a temporary name and renamed into place on commit.
pub struct AtomicDir {
    tmp: Option<tempfile::TempDir>,
    dest: PathBuf,
    force: bool,
}

impl AtomicDir {
    pub fn create(dest: &Path, force: bool) -> Result<AtomicDir> {
        refuse_existing(dest, force)?;
        let dir = parent_of(dest);
        let tmp = tempfile::Builder::new()
            .prefix(".illama-tools-")
            .suffix(".partial")
            .tempdir_in(&dir)
            .map_err(|e| FormatError::io(&dir, e))?;
        Ok(AtomicDir {
            tmp: Some(tmp),
            dest: dest.to_path_buf(),
            force,
        })
    }

    /// The temporary directory to write into.
    pub fn path(&self) -> &Path {
        self.tmp.as_ref().expect("not committed").path()
    }

    pub fn commit(mut self) -> Result<PathBuf> {
        let tmp = self.tmp.take().expect("not committed").keep();
        if self.force && self.dest.exists() {
            let removed = if self.dest.is_dir() {
                std::fs::remove_dir_all(&self.dest)
            } else {
                std::fs::remove_file(&self.dest)
            };
            removed.map_err(|e| FormatError::io(&self.dest, e))?;
        }
        if let Err(e) = std::fs::rename(&tmp, &self.dest) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(FormatError::io(&self.dest, e));
        }
        Ok(self.dest.clone())
    }
}
