//! Images and datasets for illama-tools: decoding (by content), the exact evaluation
//! preprocessing of torchvision on PIL images (bicubic antialiased resize, center crop,
//! normalisation), ImageNet folder layouts, and a parallel loader that keeps a model fed.
//!
//! This crate knows images and labels; it knows nothing of models, tensors or devices (batches
//! are plain `f32` buffers).

pub mod augment;
pub mod dataset;
pub mod decode;
pub mod loader;
pub mod mix;
pub mod procedural;
pub mod resize;
pub mod sampler;
pub mod train;
pub mod transform;

pub use dataset::{imagenet_classes, Dataset, DatasetError, Sample};
pub use decode::{
    decode_rgb, decode_rgb_with, read_image, read_image_with, DecodeError, Decoder, ImageError,
};
pub use loader::{
    eval_batches, load_batches, Batch, BatchStep, BatchStepError, Batches, ImageTransform,
    LoadError, LoaderError, LoaderOptions, NoImages, NoStep, OptionsError, Plan, Stopped,
};
pub use resize::{resize, resize_window, ResizeError, Rgb8};
pub use sampler::{rng_for, EpochSampler, SamplerError, Stream};
pub use transform::{EvalTransform, TransformError};
