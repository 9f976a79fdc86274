//! iLLaMA in Candle: the network exactly as the reference PyTorch model computes it (class token
//! appended last, interleaved RoPE, softmax then a multiplied soft mask, RMSNorm in f32, SwiGLU,
//! head on the last token), and loading it from any checkpoint the `formats` crate reads.
//!
//! This crate owns the network and its weights. It knows nothing of images on disk, datasets or
//! training schedules; it uses `arch` for shapes and `formats` for files.

mod cpu_train;
pub mod fused;
pub mod init;
mod init_from;
pub mod layers;
mod load;
mod model;
pub mod pos_embed;

pub use init_from::{init_from, InitReport};
pub use load::{
    config_of, infer_config, load, parse_device, read_tensors, DeviceError, LoadError, LoadOptions,
    LoadReport, ShapeError, Shapes,
};
pub use model::{soft_mask, Block, DropPath, Illama, Precision, TrainForward, NORM_EPS};

/// Keeps glibc's allocator from handing every large activation buffer back to the kernel.
///
/// By default glibc serves allocations above its mmap threshold (at most 32 MiB) with a fresh
/// `mmap`, so each op on base-sized activations pays page faults and the kernel zeroing the new
/// pages: 34% of a base forward pass on CPU (perf, `clear_page_erms`). With the thresholds raised,
/// freed buffers are reused from the heap. Call once at start-up, before the work.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator thresholds.
    unsafe {
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        libc::mallopt(M_MMAP_THRESHOLD, i32::MAX);
        libc::mallopt(M_TRIM_THRESHOLD, i32::MAX);
    }
}
