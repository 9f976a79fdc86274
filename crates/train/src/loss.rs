//! The recipe's losses, from differentiable candle ops (`candle_nn::ops::log_softmax` is built
//! from primitive ops, so gradients flow): timm's `SoftTargetCrossEntropy` for Mixup/CutMix
//! targets and `LabelSmoothingCrossEntropy` for plain labels.

use candle_core::{DType, Result, Tensor, D};

/// `mean_b sum_c -target[b, c] log_softmax(logits)[b, c]`; `targets` as `logits`, [B, classes].
pub fn soft_target_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    (targets.to_dtype(DType::F32)? * logp)?
        .sum(D::Minus1)?
        .neg()?
        .mean_all()
}

/// `mean_b [(1 - s) (-log p[b, y_b]) + s mean_c(-log p[b, c])]`, with `labels` [B] (u32 or i64).
pub fn label_smoothing_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f64,
) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let index = labels.to_dtype(DType::U32)?.unsqueeze(1)?;
    let nll = logp.gather(&index, D::Minus1)?.squeeze(1)?.neg()?;
    let smooth = logp.mean(D::Minus1)?.neg()?;
    (nll.affine(1.0 - smoothing, 0.0)? + smooth.affine(smoothing, 0.0)?)?.mean_all()
}
