//! Gradient clipping and the EMA of the weights, as PyTorch and timm compute them.

use candle_core::{DType, Result, Tensor, Var};

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)` (2-norm): the global norm of all
/// gradients; when it exceeds `max_norm`, every gradient is scaled by
/// `max_norm / (norm + 1e-6)`. Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let mut sum_sq = 0f64;
    for g in grads.iter().flatten() {
        // torch takes the norm of each gradient, then the norm of those norms.
        let n = g
            .to_dtype(DType::F32)?
            .sqr()?
            .sum_all()?
            .sqrt()?
            .to_scalar::<f32>()? as f64;
        sum_sq += n * n;
    }
    let total = sum_sq.sqrt();
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut().flatten() {
            *g = g.affine(coef, 0.0)?;
        }
    }
    Ok(total)
}

/// timm's `ModelEma`: `ema = ema * decay + (1 - decay) * weight`, after each optimiser step.
pub fn update_ema(ema: &[Var], weights: &[Var], decay: f64) -> Result<()> {
    for (e, w) in ema.iter().zip(weights) {
        let next = (e.as_tensor().affine(decay, 0.0)? + w.as_tensor().affine(1.0 - decay, 0.0)?)?;
        e.set(&next)?;
    }
    Ok(())
}
