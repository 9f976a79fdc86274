//! Decoding and preprocessing in parallel, ahead of the consumer: batches are prepared on a
//! pool of worker threads and handed over through a bounded queue, so the model never waits
//! while cores are free, and memory stays bounded by the queue depth.

use crate::dataset::Dataset;
use crate::decode_rgb;
use crate::transform::EvalTransform;
use rayon::prelude::*;
use std::path::PathBuf;

/// Preprocessed images, ready for a model.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Dataset indices of the images in the batch.
    pub indices: Vec<usize>,
    /// [len, 3, size, size] normalised, row-major.
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
    /// Images that could not be read (only with `skip_bad`), with why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// (index, label, path, pixels or why not).
type Loaded = (usize, i64, PathBuf, Result<Vec<f32>, String>);

fn load_one(path: &PathBuf, t: &EvalTransform) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let img = decode_rgb(&bytes).map_err(|e| e.to_string())?;
    Ok(t.apply(&img))
}

#[derive(Debug, Clone, Copy)]
pub struct LoaderOptions {
    pub batch_size: usize,
    pub workers: usize,
    /// Leave unreadable images out (and report them) instead of failing.
    pub skip_bad: bool,
    /// Only the first N images.
    pub limit: Option<usize>,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
}

/// Starts loading; batches arrive in dataset order. An unreadable image ends the stream with an
/// error naming it, unless `skip_bad`.
pub fn eval_batches(
    dataset: &Dataset,
    transform: EvalTransform,
    opts: LoaderOptions,
) -> crossbeam_channel::Receiver<Result<Batch, String>> {
    let n = opts.limit.unwrap_or(usize::MAX).min(dataset.samples.len());
    let samples: Vec<(usize, PathBuf, i64)> = dataset.samples[..n]
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s.path.clone(), s.label as i64))
        .collect();
    let (tx, rx) = crossbeam_channel::bounded(opts.prefetch.max(1));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.workers.max(1))
        .thread_name(|i| format!("illama-loader-{i}"))
        .build()
        .expect("thread pool");
    std::thread::spawn(move || {
        for chunk in samples.chunks(opts.batch_size.max(1)) {
            let loaded: Vec<Loaded> = pool.install(|| {
                chunk
                    .par_iter()
                    .map(|(i, p, l)| (*i, *l, p.clone(), load_one(p, &transform)))
                    .collect()
            });
            let mut batch = Batch {
                indices: Vec::new(),
                pixels: Vec::new(),
                labels: Vec::new(),
                skipped: Vec::new(),
            };
            let mut failure = None;
            for (i, label, path, r) in loaded {
                match r {
                    Ok(px) => {
                        batch.indices.push(i);
                        batch.labels.push(label);
                        batch.pixels.extend(px);
                    }
                    Err(e) if opts.skip_bad => batch.skipped.push((path, e)),
                    Err(e) => {
                        failure = Some(format!(
                            "{}: {e} (use --skip-bad to leave unreadable images out)",
                            path.display()
                        ));
                        break;
                    }
                }
            }
            let stop = failure.is_some();
            if tx.send(failure.map_or(Ok(batch), Err)).is_err() || stop {
                return;
            }
        }
    });
    rx
}
