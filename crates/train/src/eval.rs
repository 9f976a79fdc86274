//! Evaluation over a dataset: top-1, top-5, mean cross-entropy, throughput.

use crate::metrics::{Accuracy, MetricsError};
use candle_core::{DType, Tensor};
use illama_data::{Batch, Batches, LoaderError};
use illama_model::Illama;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// An image failed (naming it), or the loader stopped.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Bad labels or logits, or no images evaluated at all.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub top1: f64,
    pub top5: f64,
    pub loss: f64,
    pub images: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    /// Images left out with `--skip-bad`, with why.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl EvalReport {
    /// The report of a finished evaluation; an error if no image was evaluated (a metric over no
    /// images is not 0%), saying how many were unreadable.
    pub fn new(
        acc: &Accuracy,
        seconds: f64,
        unreadable: Vec<(PathBuf, String)>,
    ) -> Result<EvalReport, MetricsError> {
        if acc.images == 0 {
            return Err(MetricsError::NoImages(if unreadable.is_empty() {
                String::new()
            } else {
                format!(
                    " (all {} images were unreadable, the first {}: {})",
                    unreadable.len(),
                    unreadable[0].0.display(),
                    unreadable[0].1
                )
            }));
        }
        Ok(EvalReport {
            top1: acc.top1_percent(),
            top5: acc.top5_percent(),
            loss: acc.mean_loss(),
            images: acc.images,
            seconds,
            images_per_second: acc.images as f64 / seconds.max(1e-9),
            unreadable,
        })
    }
}

/// Runs `model` (at its own soft-mask rate) on every batch. `on_batch` sees each batch after its
/// logits are computed (progress bars, dumping inputs). Fails on the first loader error (which
/// names the image), on a label outside the model's classes, and if no image was evaluated.
pub fn evaluate(
    model: &Illama,
    batches: Batches,
    image_size: usize,
    mut on_batch: impl FnMut(&Batch, &Accuracy),
) -> Result<EvalReport, EvalError> {
    let start = Instant::now();
    let mut acc = Accuracy::default();
    let mut unreadable = Vec::new();
    let classes = model.config.num_classes;
    for batch in batches {
        let batch = batch?;
        unreadable.extend(batch.skipped.iter().cloned());
        let n = batch.labels.len();
        if n > 0 {
            let x = Tensor::from_slice(
                &batch.pixels,
                (n, 3, image_size, image_size),
                model.device(),
            )?;
            let logits: Vec<f32> = model
                .forward(&x)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            acc.add(&logits, classes, &batch.labels)?;
        }
        on_batch(&batch, &acc);
    }
    Ok(EvalReport::new(
        &acc,
        start.elapsed().as_secs_f64(),
        unreadable,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_images_is_an_error_not_zero_percent() {
        let acc = Accuracy::default();
        let e = EvalReport::new(&acc, 1.0, Vec::new()).unwrap_err();
        assert_eq!(e.to_string(), "no images were evaluated");
        let skipped = vec![(
            PathBuf::from("a/x.JPEG"),
            "x.JPEG: not an image".to_string(),
        )];
        let e = EvalReport::new(&acc, 1.0, skipped).unwrap_err().to_string();
        assert!(
            e.contains("all 1 images were unreadable, the first a/x.JPEG"),
            "{e}"
        );
        let mut acc = Accuracy::default();
        acc.add(&[0.0, 1.0], 2, &[1]).unwrap();
        let r = EvalReport::new(&acc, 1.0, Vec::new()).unwrap();
        assert_eq!((r.images, r.top1), (1, 100.0));
    }
}
