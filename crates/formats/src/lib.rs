//! Checkpoint formats for illama-tools: lazy, strict readers for PyTorch `.pth` (zip and legacy)
//! and safetensors, single or sharded, and streaming writers for both.
//!
//! This crate owns bytes on disk: file formats, the pickle subset torch uses, tensor layouts
//! (dtype, shape, strides, storage offsets), shard indexes and safe output (temporary file, then
//! rename). It knows nothing of models: names are opaque strings, and no tensor is interpreted
//! beyond its element type.
//!
//! Reading never executes anything a pickle asks for and never allocates what a header merely
//! claims: every size is checked against the file first.

pub mod cast;
pub mod convert;
pub mod dtype;
pub mod error;
pub mod gguf;
pub mod input;
pub mod inspect;
pub mod output;
pub mod pickle;
pub mod progress;
pub mod provenance;
pub mod safetensors_io;
pub mod shards;
mod source;
mod store;
pub mod torch;
pub mod tree;
pub mod write;

pub use dtype::DType;
pub use error::{FormatError, Result};
pub use input::{open_regular, read_bounded, InputError};
pub use output::{AtomicDir, AtomicFile, OutTensor, OutputPolicy};
pub use progress::{NoProgress, Progress};
pub use source::{MapMode, MapWindow, Storage};
pub use store::{
    detect_format, Format, NonTensor, OpenOptions, TensorInfo, TensorStore, TensorView,
};
pub use write::{write_file, write_tensors, TargetFormat};
