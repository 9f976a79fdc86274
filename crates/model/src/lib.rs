//! iLLaMA in Candle: the network exactly as the reference PyTorch model computes it (class token
//! appended last, interleaved RoPE, softmax then a multiplied soft mask, RMSNorm in f32, SwiGLU,
//! head on the last token), and loading it from any checkpoint the `formats` crate reads.
//!
//! This crate owns the network and its weights. It knows nothing of images on disk, datasets or
//! training schedules; it uses `arch` for shapes and `formats` for files.

pub mod init;
pub mod layers;
mod load;
mod model;
pub mod pos_embed;

pub use load::{
    infer_config, load, parse_device, read_tensors, LoadError, LoadOptions, LoadReport,
};
pub use model::{soft_mask, Block, Illama, NORM_EPS};
