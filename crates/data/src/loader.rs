//! Decoding and preprocessing in parallel, ahead of the consumer: batches are prepared on a
//! pool of worker threads and handed over through a bounded queue, so the model never waits
//! while cores are free.
//!
//! One loader serves evaluation and training: it takes a plan (which images form each batch),
//! an [`ImageTransform`] (the eval transform, or the randomised train transform) and optionally a
//! step that finishes each assembled batch (Mixup/CutMix). Every image is transformed with its
//! own random stream, derived from `(seed, epoch, dataset index)`, and every batch finished with
//! one derived from `(seed, epoch, batch position)`: batches are byte-identical whatever the
//! number of workers or their timing.
//!
//! # Failures are never silent
//!
//! Every image that fails (unreadable, not a regular file, not an image, too large, corrupt, or a
//! panic while decoding it) either ends the stream with an error naming the file or, with
//! `skip_bad`, is listed in [`Batch::skipped`]. If the loader thread itself stops for any other
//! reason, the consumer receives [`LoaderError::Stopped`] before the end of the stream. A stream
//! that simply ends has therefore delivered every image (or listed it as skipped).
//!
//! # Memory
//!
//! With `B` = `batch_size`, `Q` = `prefetch` and `I` = [`ImageTransform::output_bytes`]
//! (`3 x size x size x 4`, 602,112 bytes at 224), the loader holds at most
//!
//! ```text
//!   (Q + 4) x B x I              batches: Q queued for the consumer, one being filled, and
//!                                 with a batch step one waiting for it and one being mixed,
//!                                 plus the one the consumer holds
//! + workers x per-image peak     one image in flight per worker
//! ```
//!
//! where the per-image peak is at most [`MAX_IMAGE_BYTES`](crate::decode::MAX_IMAGE_BYTES) (the
//! file) + [`MAX_DECODE_ALLOC`](crate::decode::MAX_DECODE_ALLOC) (the decoder's buffer) +
//! `3 x` [`MAX_PIXELS`](crate::decode::MAX_PIXELS) (the RGB image) + the resize's window
//! (`size x size x 3 x 9` bytes): about 770 MiB in the worst case, a few tens of MB for real
//! photographs. `B x I` is bounded by [`MAX_BATCH_BYTES`], `Q` by [`MAX_PREFETCH`] and `workers`
//! by [`MAX_WORKERS`].

use crate::dataset::Dataset;
use crate::decode::{read_image_with, Decoder, ImageError};
use crate::resize::Rgb8;
use crate::sampler::{rng_for, Stream};
use crate::transform::{EvalTransform, TransformError};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// How one decoded image becomes model input.
pub trait ImageTransform: Send + Sync + 'static {
    /// Side of the square output image.
    fn size(&self) -> usize;
    /// Bytes of one output image (`3 x size x size` f32).
    fn output_bytes(&self) -> usize {
        3 * self.size() * self.size() * 4
    }
    /// The JPEG decoder its images are read with.
    fn decoder(&self) -> Decoder {
        Decoder::PilClosest
    }
    /// Normalised CHW floats into `out` (`3 x size x size` values). `rng` is the image's own
    /// random stream; deterministic transforms ignore it.
    fn apply_into(
        &self,
        img: &Rgb8,
        rng: &mut ChaCha8Rng,
        out: &mut [f32],
    ) -> Result<(), TransformError>;
}

impl ImageTransform for EvalTransform {
    fn size(&self) -> usize {
        EvalTransform::size(self)
    }
    fn apply_into(
        &self,
        img: &Rgb8,
        _: &mut ChaCha8Rng,
        out: &mut [f32],
    ) -> Result<(), TransformError> {
        let px = self.pixels(img)?;
        if out.len() != 3 * px.width * px.height {
            return Err(TransformError::Buffer(out.len(), 3 * px.width * px.height));
        }
        crate::transform::normalize_into(&px, false, out)
    }
}

/// A step applied to each assembled batch in the loader thread (Mixup/CutMix), with the batch's
/// own random stream.
pub trait BatchStep: Send + 'static {
    fn apply(&mut self, batch: &mut Batch, rng: &mut ChaCha8Rng) -> Result<(), BatchStepError>;
}

/// Why a batch step refused a batch (the step's own error).
pub type BatchStepError = Box<dyn std::error::Error + Send + Sync>;

/// Largest batch, in bytes of preprocessed pixels (`batch_size x 3 x size x size x 4`): 4 GiB
/// (7,131 images at 224, 341 at 1024).
pub const MAX_BATCH_BYTES: usize = 4 << 30;
/// Most batches prepared ahead of the consumer.
pub const MAX_PREFETCH: usize = 64;
/// Most decoding threads.
pub const MAX_WORKERS: usize = 1024;

/// Preprocessed images, ready for a model.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Dataset indices of the images in the batch.
    pub indices: Vec<usize>,
    /// [len, 3, size, size] normalised, row-major.
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
    /// Soft targets [len, classes] when a [`BatchStep`] mixed the batch; else `None` (use
    /// `labels`).
    pub targets: Option<Vec<f32>>,
    /// Images that could not be read (only with `skip_bad`), with why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Why one image was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{path}: {source}")]
    Transform {
        path: PathBuf,
        #[source]
        source: TransformError,
    },
    #[error("{path}: the loader panicked on this image: {message}")]
    Panicked { path: PathBuf, message: String },
}

/// Why the loader did not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("no images to evaluate ({0})")]
    NoImages(NoImages),
    #[error("invalid loader options: {0}")]
    Options(OptionsError),
    /// The thread or pool named by `what` (`the loader's worker threads`) could not be started.
    #[error("could not start {what}: {source}")]
    Threads {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// An image failed and `skip_bad` was off.
    #[error("{0}")]
    Image(LoadError),
    /// The batch step (mixing) refused a batch.
    #[error("batch {batch}: {source}")]
    Batch {
        batch: usize,
        #[source]
        source: BatchStepError,
    },
    /// The loader stopped before delivering every image (a bug; never a silent end).
    #[error("the image loader stopped unexpectedly: {0}")]
    Stopped(Stopped),
}

/// Why there is nothing to load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoImages {
    /// `limit: Some(0)`.
    #[error("a limit of 0 images")]
    LimitZero,
    /// The dataset (or the plan over it) has no images.
    #[error("{} holds no images", .root.display())]
    Empty { root: PathBuf },
}

/// Which option of [`LoaderOptions`] (or of the plan) is out of range, and its bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// `batch_size` is 0, or its pixels (`batch_size x 3 x input_size^2` f32) would exceed
    /// [`MAX_BATCH_BYTES`]; `max` is the largest batch at this input size.
    #[error(
        "batch size {batch_size} is not between 1 and {max} at input size {input_size} ({} GiB of pixels per batch at most)",
        MAX_BATCH_BYTES >> 30
    )]
    BatchSize {
        batch_size: usize,
        max: usize,
        input_size: usize,
    },
    #[error("{workers} workers, more than {max}")]
    Workers { workers: usize, max: usize },
    #[error("prefetch {prefetch}, more than {max}")]
    Prefetch { prefetch: usize, max: usize },
    /// The plan names dataset index `index`, and the dataset has `len` images.
    #[error("the plan names image {index} of a dataset of {len}")]
    PlanIndex { index: usize, len: usize },
}

/// Why a loader stage stopped before its last batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stopped {
    /// Its thread panicked outside the per-image guard.
    #[error("its thread panicked")]
    Panicked,
    /// Its thread ended without panicking, before the last image.
    #[error("it ended before the last image")]
    Early,
}

/// Loads and preprocesses one image into `out`. Panics are caught and returned as errors naming
/// the file.
pub fn load_into<T: ImageTransform>(
    path: &Path,
    t: &T,
    rng: &mut ChaCha8Rng,
    out: &mut [f32],
) -> Result<(), LoadError> {
    let run = || -> Result<(), LoadError> {
        let img = read_image_with(path, t.decoder())?;
        t.apply_into(&img, rng, out)
            .map_err(|source| LoadError::Transform {
                path: path.to_path_buf(),
                source,
            })
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|p| {
        Err(LoadError::Panicked {
            path: path.to_path_buf(),
            message: panic_message(p.as_ref()),
        })
    })
}

/// Loads and preprocesses one image.
pub fn load_one<T: ImageTransform>(
    path: &Path,
    t: &T,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<f32>, LoadError> {
    let mut out = vec![0f32; t.output_bytes() / 4];
    load_into(path, t, rng, &mut out)?;
    Ok(out)
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[derive(Debug, Clone, Copy)]
pub struct LoaderOptions {
    /// Images per batch, at least 1 (and at most [`MAX_BATCH_BYTES`] of pixels).
    pub batch_size: usize,
    /// Decoding threads; 0 means 1. At most [`MAX_WORKERS`].
    pub workers: usize,
    /// Leave unreadable images out (and report them) instead of failing.
    pub skip_bad: bool,
    /// Only the first N images (`Some(0)` is an error: nothing would be evaluated).
    pub limit: Option<usize>,
    /// Batches prepared ahead of the consumer; 0 means 1. At most [`MAX_PREFETCH`].
    pub prefetch: usize,
}

/// The stream of batches; ends after the last batch, or after the first `Err`.
pub type Batches = crossbeam_channel::Receiver<Result<Batch, LoaderError>>;

/// Where a stage sends a batch: to the consumer, or (from the filling stage) to the mixing stage.
enum Sender {
    Direct(crossbeam_channel::Sender<Result<Batch, LoaderError>>),
    Mixer(crossbeam_channel::Sender<(usize, Result<Batch, LoaderError>)>),
}

impl Sender {
    /// False when the receiver has gone.
    fn send(&self, position: usize, batch: Result<Batch, LoaderError>) -> bool {
        match self {
            Sender::Direct(tx) => tx.send(batch).is_ok(),
            Sender::Mixer(tx) => tx.send((position, batch)).is_ok(),
        }
    }
}

/// Sends [`LoaderError::Stopped`] downstream if a stage's thread ends without finishing (a panic
/// outside the per-image guard), so that the consumer never mistakes it for the end of the data.
struct Finish {
    tx: Sender,
    done: bool,
}

impl Drop for Finish {
    fn drop(&mut self) {
        if !self.done {
            let why = if std::thread::panicking() {
                Stopped::Panicked
            } else {
                Stopped::Early
            };
            self.tx.send(usize::MAX, Err(LoaderError::Stopped(why)));
        }
    }
}

/// Starts loading for evaluation: batches of consecutive images in dataset order. An unreadable
/// image ends the stream with an error naming it, unless `skip_bad`. Errors up front: no images
/// (an empty dataset or `limit: Some(0)`), a batch size of 0 or over [`MAX_BATCH_BYTES`], too
/// many workers or too deep a prefetch, or threads that could not be started.
pub fn eval_batches(
    dataset: &Dataset,
    transform: EvalTransform,
    opts: LoaderOptions,
) -> Result<Batches, LoaderError> {
    if opts.limit == Some(0) {
        return Err(LoaderError::NoImages(NoImages::LimitZero));
    }
    let n = opts.limit.unwrap_or(usize::MAX).min(dataset.samples.len());
    let plan = Plan {
        batches: (0..n)
            .collect::<Vec<_>>()
            .chunks(opts.batch_size.max(1))
            .map(<[usize]>::to_vec)
            .collect(),
        seed: 0,
        epoch: 0,
    };
    load_batches(dataset, plan, transform, None::<NoStep>, opts)
}

/// Which images form each batch, and the `(seed, epoch)` their random streams derive from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Dataset indices, batch by batch.
    pub batches: Vec<Vec<usize>>,
    pub seed: u64,
    pub epoch: u64,
}

impl Plan {
    /// The training batches of `epoch`: shuffled from `(seed, epoch)`, full batches only.
    pub fn epoch(sampler: &crate::sampler::EpochSampler, epoch: u64) -> Plan {
        Plan {
            batches: sampler.batches(epoch),
            seed: sampler.seed(),
            epoch,
        }
    }
}

/// The [`BatchStep`] that does nothing, for loaders without one.
pub struct NoStep;

impl BatchStep for NoStep {
    fn apply(&mut self, _: &mut Batch, _: &mut ChaCha8Rng) -> Result<(), BatchStepError> {
        Ok(())
    }
}

/// Starts loading the batches of `plan`, in order (`opts.limit` is not applied here: the plan
/// says what to load). Each image is transformed with `rng_for(seed, epoch, Image, index)`, each
/// assembled batch finished by `step` with `rng_for(seed, epoch, Batch, position)`.
pub fn load_batches<T: ImageTransform, S: BatchStep>(
    dataset: &Dataset,
    plan: Plan,
    transform: T,
    mut step: Option<S>,
    opts: LoaderOptions,
) -> Result<Batches, LoaderError> {
    if plan.batches.iter().all(Vec::is_empty) {
        return Err(LoaderError::NoImages(NoImages::Empty {
            root: dataset.root.clone(),
        }));
    }
    let image_bytes = transform.output_bytes();
    let largest = plan.batches.iter().map(Vec::len).max().unwrap_or(0);
    if opts.batch_size == 0 || opts.batch_size.max(largest) > MAX_BATCH_BYTES / image_bytes {
        return Err(LoaderError::Options(OptionsError::BatchSize {
            // A size of 0 is named as such, not as the plan's largest batch.
            batch_size: if opts.batch_size == 0 {
                0
            } else {
                opts.batch_size.max(largest)
            },
            max: MAX_BATCH_BYTES / image_bytes,
            input_size: transform.size(),
        }));
    }
    if opts.workers > MAX_WORKERS {
        return Err(LoaderError::Options(OptionsError::Workers {
            workers: opts.workers,
            max: MAX_WORKERS,
        }));
    }
    if opts.prefetch > MAX_PREFETCH {
        return Err(LoaderError::Options(OptionsError::Prefetch {
            prefetch: opts.prefetch,
            max: MAX_PREFETCH,
        }));
    }
    if let Some(&bad) = plan
        .batches
        .iter()
        .flatten()
        .find(|&&i| i >= dataset.samples.len())
    {
        return Err(LoaderError::Options(OptionsError::PlanIndex {
            index: bad,
            len: dataset.samples.len(),
        }));
    }
    let samples: Vec<Vec<(usize, PathBuf, i64)>> = plan
        .batches
        .iter()
        .map(|b| {
            b.iter()
                .map(|&i| {
                    let s = &dataset.samples[i];
                    (i, s.path.clone(), s.label as i64)
                })
                .collect()
        })
        .collect();
    let (seed, epoch) = (plan.seed, plan.epoch);
    let per_image = image_bytes / 4;
    let (tx, rx) = crossbeam_channel::bounded(opts.prefetch.max(1));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.workers.max(1))
        .thread_name(|i| format!("illama-loader-{i}"))
        .build()
        .map_err(|e| LoaderError::Threads {
            what: "the loader's worker threads",
            source: std::io::Error::other(e),
        })?;
    // Two stages, so that the workers decode the next batch while the previous one is mixed:
    // the loader thread fills batches (workers write each image in place), a second thread
    // applies the batch step. Without a step the first stage sends to the consumer directly.
    let (fill_tx, mix) = match step.take() {
        Some(mut step) => {
            let (fill_tx, fill_rx) =
                crossbeam_channel::bounded::<(usize, Result<Batch, LoaderError>)>(1);
            let out = tx;
            let handle = std::thread::Builder::new()
                .name("illama-mixer".into())
                .spawn(move || {
                    let mut finish = Finish {
                        tx: Sender::Direct(out),
                        done: false,
                    };
                    for (position, filled) in fill_rx {
                        let result = filled.and_then(|mut batch| {
                            let mut rng = rng_for(seed, epoch, Stream::Batch, position as u64);
                            step.apply(&mut batch, &mut rng)
                                .map(|()| batch)
                                .map_err(|source| LoaderError::Batch {
                                    batch: position,
                                    source,
                                })
                        });
                        let stop = result.is_err();
                        if !finish.tx.send(position, result) || stop {
                            finish.done = true;
                            return;
                        }
                    }
                    finish.done = true;
                })
                .map_err(|source| LoaderError::Threads {
                    what: "the loader's mixing thread",
                    source,
                })?;
            (Sender::Mixer(fill_tx), Some(handle))
        }
        None => (Sender::Direct(tx), None),
    };
    // The mixer thread ends by itself when the filling stage's sender is dropped.
    drop(mix);
    std::thread::Builder::new()
        .name("illama-loader".into())
        .spawn(move || {
            let mut finish = Finish {
                tx: fill_tx,
                done: false,
            };
            for (position, chunk) in samples.iter().enumerate() {
                let mut pixels = vec![0f32; chunk.len() * per_image];
                let loaded: Vec<Result<(), LoadError>> = pool.install(|| {
                    pixels
                        .par_chunks_mut(per_image)
                        .zip(chunk.par_iter())
                        .map(|(out, (i, p, _))| {
                            let mut rng = rng_for(seed, epoch, Stream::Image, *i as u64);
                            load_into(p, &transform, &mut rng, out)
                        })
                        .collect()
                });
                let mut batch = Batch {
                    indices: Vec::with_capacity(chunk.len()),
                    pixels,
                    labels: Vec::with_capacity(chunk.len()),
                    targets: None,
                    skipped: Vec::new(),
                };
                let mut failure = None;
                let mut kept = 0;
                for (k, ((i, path, label), r)) in chunk.iter().zip(loaded).enumerate() {
                    match r {
                        Ok(()) => {
                            if kept != k {
                                batch.pixels.copy_within(
                                    k * per_image..(k + 1) * per_image,
                                    kept * per_image,
                                );
                            }
                            kept += 1;
                            batch.indices.push(*i);
                            batch.labels.push(*label);
                        }
                        Err(e) if opts.skip_bad => {
                            batch.skipped.push((path.clone(), e.to_string()))
                        }
                        Err(e) => {
                            failure = Some(LoaderError::Image(e));
                            break;
                        }
                    }
                }
                batch.pixels.truncate(kept * per_image);
                let stop = failure.is_some();
                let sent = finish.tx.send(position, failure.map_or(Ok(batch), Err));
                if !sent || stop {
                    // The consumer has gone, or has its error: nothing more to tell it.
                    finish.done = true;
                    return;
                }
            }
            finish.done = true;
        })
        .map_err(|source| LoaderError::Threads {
            what: "the loader thread",
            source,
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loader_thread_that_dies_says_so() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let t = std::thread::spawn(move || {
            let _finish = Finish {
                tx: Sender::Direct(tx),
                done: false,
            };
            panic!("boom");
        });
        assert!(t.join().is_err());
        let got: Vec<_> = rx.iter().collect();
        assert_eq!(got.len(), 1);
        let e = got.into_iter().next().unwrap().unwrap_err();
        assert!(
            matches!(e, LoaderError::Stopped(Stopped::Panicked)),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("stopped unexpectedly: its thread panicked"),
            "{e}"
        );
        // Finished normally: nothing more is sent.
        let (tx, rx) = crossbeam_channel::bounded(1);
        drop(Finish {
            tx: Sender::Direct(tx),
            done: true,
        });
        assert!(rx.iter().next().is_none());
    }
}
