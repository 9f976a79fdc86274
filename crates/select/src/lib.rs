//! Weight selection (Xu et al., ICLR 2024) from LLaMA teachers into iLLaMA students, bit for bit
//! as the reference Python does it by default.
//!
//! This crate owns the selection method: which teacher layers and which rows/columns a student
//! keeps, teacher layouts (Hugging Face, Meta model-parallel shards, grouped-query attention), and
//! gathering the selected elements straight from memory-mapped shards. It uses `formats` for all
//! file access and `arch` for student shapes; it knows nothing of training or of Candle.

mod error;
mod hashing;
pub mod indices;
mod matrix;
mod select;
pub mod teacher;

pub use error::SelectError;
pub use illama_formats::TargetFormat;
pub use indices::{uniform_indices, ElementSelection, LayerError, LayerSelection};
pub use select::{select, SelectOptions, SelectReport, StudentTensorReport};
pub use teacher::{TeacherCheckpoint, TeacherConfig, TeacherLayout};
