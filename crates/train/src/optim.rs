//! AdamW as PyTorch's `torch.optim.AdamW` computes it (decoupled weight decay, bias correction),
//! with the recipe's parameter groups and moments that a checkpoint can save and restore
//! (candle's own AdamW has one weight decay for all parameters and hides its moments).

use candle_core::{DType, Result, Tensor, Var};

/// Whether the recipe decays a parameter: not 1-D parameters, `*.bias`, `pos_embed` or
/// `cls_token` (the reference's `optim_factory.get_parameter_groups` with the model's
/// `no_weight_decay()` set).
pub fn decays(name: &str, shape: &[usize]) -> bool {
    !(shape.len() <= 1 || name.ends_with(".bias") || name == "pos_embed" || name == "cls_token")
}

/// Hyper-parameters that do not change during a run (learning rate and weight decay come with
/// each step, from the schedules).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults, which the recipe keeps: betas (0.9, 0.999), eps 1e-8.
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// One trained parameter with its moments.
pub struct Param {
    pub name: String,
    pub var: Var,
    /// Whether weight decay applies ([`decays`]).
    pub decay: bool,
    /// First and second moments (`exp_avg`, `exp_avg_sq`), f32 like the parameter.
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
    /// Steps this parameter took part in (PyTorch keeps one count per parameter: a step without
    /// its gradient does not advance its bias correction).
    pub step: u64,
}

/// AdamW over named parameters.
pub struct AdamW {
    pub config: AdamWConfig,
    pub params: Vec<Param>,
}

impl AdamW {
    /// Zero moments for every parameter; decay decided by [`decays`].
    pub fn new(named: Vec<(String, Var)>, config: AdamWConfig) -> Result<AdamW> {
        let params = named
            .into_iter()
            .map(|(name, var)| {
                let zeros = var.as_tensor().zeros_like()?;
                Ok(Param {
                    decay: decays(&name, var.dims()),
                    name,
                    exp_avg: zeros.clone(),
                    exp_avg_sq: zeros,
                    var,
                    step: 0,
                })
            })
            .collect::<Result<_>>()?;
        Ok(AdamW { config, params })
    }

    /// One step with learning rate `lr` and weight decay `weight_decay` (for the decaying
    /// group), given each parameter's gradient (`None`: the parameter did not take part and is
    /// left alone, as PyTorch skips parameters without a gradient).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64, weight_decay: f64) -> Result<()> {
        if grads.len() != self.params.len() {
            candle_core::bail!(
                "{} gradients for {} parameters",
                grads.len(),
                self.params.len()
            );
        }
        let AdamWConfig { beta1, beta2, eps } = self.config;
        for (p, g) in self.params.iter_mut().zip(grads) {
            let Some(g) = g else { continue };
            p.step += 1;
            let t = p.step as i32;
            let bias_correction1 = 1.0 - beta1.powi(t);
            let bias_correction2 = 1.0 - beta2.powi(t);
            let step_size = lr / bias_correction1;
            let bias_correction2_sqrt = bias_correction2.sqrt();
            let g = g.to_dtype(DType::F32)?;
            let mut w = p.var.as_tensor().clone();
            if p.decay && weight_decay != 0.0 {
                // param.mul_(1 - lr * weight_decay)
                w = w.affine(1.0 - lr * weight_decay, 0.0)?;
            }
            // exp_avg.lerp_(grad, 1 - beta1): m + (1 - beta1) (g - m)
            p.exp_avg = ((&g - &p.exp_avg)?.affine(1.0 - beta1, 0.0)? + &p.exp_avg)?;
            // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            p.exp_avg_sq =
                (p.exp_avg_sq.affine(beta2, 0.0)? + (g.affine(1.0 - beta2, 0.0)? * &g)?)?;
            // denom = exp_avg_sq.sqrt() / bias_correction2_sqrt + eps
            let denom = p
                .exp_avg_sq
                .sqrt()?
                .affine(1.0 / bias_correction2_sqrt, eps)?;
            // param.addcdiv_(exp_avg, denom, value=-step_size)
            let update = (&p.exp_avg / &denom)?.affine(-step_size, 0.0)?;
            p.var.set(&(w + update)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipe_decays_matrices_but_not_norms_biases_or_embeddings() {
        assert!(decays("blocks.0.attn.qkv.weight", &[576, 192]));
        assert!(decays("patch_embed.proj.weight", &[192, 3, 16, 16]));
        assert!(!decays("blocks.0.attn.proj.bias", &[192]));
        assert!(!decays("blocks.0.norm1.weight", &[192]));
        assert!(!decays("pos_embed", &[1, 197, 192]));
        assert!(!decays("cls_token", &[1, 1, 192]));
        assert!(!decays("head.bias", &[1000]));
    }
}
