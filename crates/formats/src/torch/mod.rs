//! PyTorch checkpoints: the zip format of `torch.save` (torch >= 1.6), the legacy pre-1.6
//! format, and the zip writer for `.pth` output.

mod legacy;
mod unpickle;
mod write;
mod zip_reader;

pub(crate) use legacy::read_legacy;
pub(crate) use unpickle::RawTensor;
pub use unpickle::UnpickleError;
pub use write::{write_pth, PthLayout};
pub(crate) use zip_reader::read_zip;

use crate::source::Storage;
use crate::tree::Node;
use std::collections::BTreeMap;

/// What one torch file holds: its object tree, the tensors the tree refers to (by index), and
/// the storages those tensors view.
pub(crate) struct TorchFile {
    pub root: Node,
    pub tensors: Vec<RawTensor>,
    pub storages: BTreeMap<String, Storage>,
}

/// The zip directory of a torch file, read through the file rather than the mapping. torch
/// archives start at offset 0, so the zip crate need not search for prepended data.
pub(crate) fn open_zip(
    src: &crate::source::SourceFile,
) -> crate::error::Result<zip::ZipArchive<std::io::BufReader<std::fs::File>>> {
    let config = zip::read::Config {
        archive_offset: zip::read::ArchiveOffset::Known(0),
    };
    zip::ZipArchive::with_config(config, src.reader()?)
        .map_err(|e| crate::error::FormatError::corrupt(&src.path, format!("zip: {e}")))
}

/// The legacy format's first pickle: the integer 0x1950a86a20f9469cfc6c, little-endian.
pub(crate) const LEGACY_MAGIC: [u8; 10] =
    [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
