//! Writing a checkpoint file: the two output formats and one function that streams tensors into
//! either. Atomic placement of the file is [`crate::output`]'s; this module only fills it.

use crate::dtype::DType;
use crate::error::{FormatError, Result};
use crate::output::OutTensor;
use crate::{safetensors_io, torch};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::Path;

/// The two formats this crate writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetFormat {
    Safetensors,
    Pth,
}

impl TargetFormat {
    /// From an output file's extension.
    pub fn from_extension(path: &Path) -> Option<TargetFormat> {
        match path.extension()?.to_str()? {
            "safetensors" => Some(TargetFormat::Safetensors),
            "pth" | "pt" | "bin" => Some(TargetFormat::Pth),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            TargetFormat::Safetensors => "safetensors",
            TargetFormat::Pth => "pytorch zip",
        }
    }
    /// The order in which [`write_file`] takes the tensors' bytes (calls their `write`), as
    /// indices into `tensors` (name and dtype of each, in the caller's order): by element size,
    /// largest first, then name, for safetensors (the reference writer's header order); as given
    /// for `.pth`.
    pub fn data_order(self, tensors: &[(&str, DType)]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..tensors.len()).collect();
        if self == TargetFormat::Safetensors {
            order.sort_by(|&a, &b| {
                safetensors_io::data_order(
                    (tensors[a].0, tensors[a].1),
                    (tensors[b].0, tensors[b].1),
                )
            });
        }
        order
    }
    pub(crate) fn extension(self) -> &'static str {
        match self {
            TargetFormat::Safetensors => "safetensors",
            TargetFormat::Pth => "pth",
        }
    }
    pub(crate) fn shard_names(self, i: usize, n: usize) -> String {
        match (self, n) {
            (TargetFormat::Safetensors, 1) => "model.safetensors".into(),
            (TargetFormat::Pth, 1) => "pytorch_model.bin".into(),
            (TargetFormat::Safetensors, _) => format!("model-{:05}-of-{n:05}.safetensors", i + 1),
            (TargetFormat::Pth, _) => format!("pytorch_model-{:05}-of-{n:05}.bin", i + 1),
        }
    }
    pub(crate) fn index_name(self) -> &'static str {
        match self {
            TargetFormat::Safetensors => "model.safetensors.index.json",
            TargetFormat::Pth => "pytorch_model.bin.index.json",
        }
    }
}

/// Writes `tensors` to `dest` in `target` format, atomically, as `policy` allows (a temporary
/// file beside it, renamed on success). Returns the final path and the bytes written.
pub fn write_tensors(
    dest: &Path,
    policy: &crate::OutputPolicy,
    target: TargetFormat,
    tensors: Vec<OutTensor<'_>>,
    metadata: &BTreeMap<String, String>,
) -> Result<(std::path::PathBuf, u64)> {
    let mut file = crate::AtomicFile::create(dest, policy)?;
    let bytes = write_file(
        dest,
        file.file(),
        target,
        tensors,
        metadata,
        &Default::default(),
    )?;
    Ok((file.commit()?, bytes))
}

/// Writes `tensors` in `target` format to `file` (whose final name is `path`: it names errors
/// and, for `.pth`, the archive's root folder; `layout` nests a `.pth` state dict). Returns the
/// bytes written.
pub fn write_file(
    path: &Path,
    file: &mut std::fs::File,
    target: TargetFormat,
    tensors: Vec<OutTensor<'_>>,
    metadata: &BTreeMap<String, String>,
    layout: &torch::PthLayout<'_>,
) -> Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, EarlyWriteback::new(file));
    match target {
        TargetFormat::Safetensors => {
            safetensors_io::write_safetensors(&mut w, path, tensors, metadata)
        }
        TargetFormat::Pth => {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| !s.is_empty() && s.is_ascii())
                .unwrap_or_else(|| "archive".into());
            torch::write_pth(&mut w, path, &stem, tensors, layout)
        }
    }?;
    let file = w
        .into_inner()
        .map_err(|e| FormatError::io(path, e.into_error()))?
        .file;
    file.metadata()
        .map(|m| m.len())
        .map_err(|e| FormatError::io(path, e))
}

/// Bytes written between two starts of writeback (see [`EarlyWriteback`]).
const WRITEBACK_EVERY: u64 = 8 << 20;

/// A file that asks the kernel to start writing its dirty pages to disk every
/// [`WRITEBACK_EVERY`] bytes (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait for
/// the disk). The disk then works while the rest of the file is produced, and the `fsync` that
/// commits the output finds little left to write instead of all of it.
struct EarlyWriteback<'a> {
    file: &'a mut std::fs::File,
    since_last: u64,
}

impl<'a> EarlyWriteback<'a> {
    fn new(file: &'a mut std::fs::File) -> Self {
        EarlyWriteback {
            file,
            since_last: 0,
        }
    }

    fn start_writeback(&mut self) {
        self.since_last = 0;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain system call on a descriptor we own; no memory is passed. Offset 0
            // and length 0 mean the whole file: pages already being written are skipped. A
            // failure only loses the head start (the commit's fsync reports real write errors).
            unsafe {
                libc::sync_file_range(self.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
    }
}

impl std::io::Write for EarlyWriteback<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.since_last += n as u64;
        if self.since_last >= WRITEBACK_EVERY {
            self.start_writeback();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}
