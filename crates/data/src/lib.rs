//! Images and datasets for illama-tools: decoding (by content), the exact evaluation
//! preprocessing of torchvision on PIL images (bicubic antialiased resize, center crop,
//! normalisation), ImageNet folder layouts, and a parallel loader that keeps a model fed.
//!
//! This crate knows images and labels; it knows nothing of models, tensors or devices (batches
//! are plain `f32` buffers).

pub mod dataset;
pub mod decode;
pub mod loader;
pub mod mix;
pub mod resize;
pub mod train;
pub mod transform;

pub use dataset::{imagenet_classes, Dataset, DatasetError, Sample};
pub use decode::{decode_rgb, DecodeError};
pub use loader::{eval_batches, Batch, LoaderOptions};
pub use resize::{resize, resize_window, Rgb8};
pub use transform::EvalTransform;
