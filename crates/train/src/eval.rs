//! Evaluation over a dataset: top-1, top-5, mean cross-entropy, throughput.

use crate::metrics::Accuracy;
use candle_core::{DType, Tensor};
use illama_data::Batch;
use illama_model::Illama;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

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

/// Runs `model` (at its own soft-mask rate) on every batch. `on_batch` sees each batch after its
/// logits are computed (progress bars, dumping inputs).
pub fn evaluate(
    model: &Illama,
    batches: crossbeam_channel::Receiver<Result<Batch, String>>,
    image_size: usize,
    mut on_batch: impl FnMut(&Batch, &Accuracy),
) -> Result<EvalReport, String> {
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
            )
            .map_err(|e| e.to_string())?;
            let logits: Vec<f32> = model
                .forward(&x)
                .and_then(|l| l.to_dtype(DType::F32)?.flatten_all()?.to_vec1())
                .map_err(|e| e.to_string())?;
            if let Some(&bad) = batch
                .labels
                .iter()
                .find(|&&l| l < 0 || l as usize >= classes)
            {
                return Err(format!(
                    "label {bad} is outside the model's {classes} classes"
                ));
            }
            acc.add(&logits, classes, &batch.labels);
        }
        on_batch(&batch, &acc);
    }
    let seconds = start.elapsed().as_secs_f64();
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
