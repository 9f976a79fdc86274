//! AdamW as PyTorch's `torch.optim.AdamW` computes it (decoupled weight decay, bias correction),
//! with the recipe's parameter groups and moments that a checkpoint can save and restore
//! (candle's own AdamW has one weight decay for all parameters and hides its moments).

use candle_core::{DType, Device, Result, Tensor, Var};
use rayon::prelude::*;

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
        self.step_on(grads, lr, weight_decay, true)
    }

    /// [`AdamW::step`]; `fused`: one pass per CPU parameter instead of tensor operations.
    fn step_on(
        &mut self,
        grads: &[Option<Tensor>],
        lr: f64,
        weight_decay: f64,
        fused: bool,
    ) -> Result<()> {
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
            let decays = p.decay && weight_decay != 0.0;
            let constants = StepConstants {
                decays,
                keep: (1.0 - lr * weight_decay) as f32,
                one_minus_beta1: (1.0 - beta1) as f32,
                beta2: beta2 as f32,
                one_minus_beta2: (1.0 - beta2) as f32,
                inv_bc2_sqrt: (1.0 / bias_correction2_sqrt) as f32,
                eps: eps as f32,
                neg_step_size: (-step_size) as f32,
            };
            let fused_step = if fused {
                cpu_step(p, &g, &constants)?
            } else {
                None
            };
            if let Some((w, m, v)) = fused_step {
                let shape = p.var.shape().clone();
                p.var.set(&Tensor::from_vec(w, &shape, &Device::Cpu)?)?;
                p.exp_avg = Tensor::from_vec(m, &shape, &Device::Cpu)?;
                p.exp_avg_sq = Tensor::from_vec(v, shape, &Device::Cpu)?;
                continue;
            }
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

/// The f32 constants of one parameter's step (what candle's `affine` would cast them to).
struct StepConstants {
    /// Whether the weight is multiplied by `keep` (the tensor version's condition).
    decays: bool,
    keep: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    inv_bc2_sqrt: f32,
    eps: f32,
    neg_step_size: f32,
}

/// The values of a contiguous f32 CPU tensor, or `None`.
fn cpu_values(t: &Tensor) -> Option<Vec<f32>> {
    if !matches!(t.device(), Device::Cpu) || t.dtype() != DType::F32 || !t.is_contiguous() {
        return None;
    }
    t.flatten_all().ok()?.to_vec1::<f32>().ok()
}

/// The step of [`AdamW::step`] in one pass over a CPU parameter (the same operations in the
/// same order as the tensor version, so the same bits): the new weights and moments, or `None`
/// off the CPU.
#[allow(clippy::type_complexity)]
fn cpu_step(
    p: &Param,
    g: &Tensor,
    c: &StepConstants,
) -> Result<Option<(Vec<f32>, Vec<f32>, Vec<f32>)>> {
    let (Some(mut w), Some(g), Some(mut m), Some(mut v)) = (
        cpu_values(p.var.as_tensor()),
        cpu_values(g),
        cpu_values(&p.exp_avg),
        cpu_values(&p.exp_avg_sq),
    ) else {
        return Ok(None);
    };
    if g.len() != w.len() {
        candle_core::bail!("{}: gradient of {} values for {}", p.name, g.len(), w.len());
    }
    const CHUNK: usize = 16384;
    w.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .zip(g.par_chunks(CHUNK))
        .for_each(|((w, (m, v)), g)| {
            for (((w, m), v), &g) in w.iter_mut().zip(m).zip(v).zip(g) {
                // `affine(a, 0)` is `x * a + 0.0`, which turns -0.0 into +0.0: kept for the bits.
                let decayed = if c.decays { *w * c.keep + 0.0 } else { *w };
                *m = ((g - *m) * c.one_minus_beta1 + 0.0) + *m;
                *v = (*v * c.beta2 + 0.0) + ((g * c.one_minus_beta2 + 0.0) * g);
                let denom = v.sqrt() * c.inv_bc2_sqrt + c.eps;
                *w = decayed + ((*m / denom) * c.neg_step_size + 0.0);
            }
        });
    Ok(Some((w, m, v)))
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

    #[test]
    fn the_fused_cpu_step_gives_the_bits_of_the_tensor_step() {
        let device = Device::Cpu;
        let values = |seed: u32, n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    (((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0
                })
                .collect()
        };
        let make = || -> AdamW {
            let named = vec![
                (
                    "a.weight".to_string(),
                    Var::from_vec(values(1, 600), (20, 30), &device).unwrap(),
                ),
                (
                    "a.bias".to_string(),
                    Var::from_vec(values(2, 20), 20, &device).unwrap(),
                ),
                // Negative zeros with zero gradients: `affine`'s `+ 0.0` turns them positive.
                (
                    "z.weight".to_string(),
                    Var::from_vec(vec![-0.0f32; 12], (3, 4), &device).unwrap(),
                ),
                (
                    "z.bias".to_string(),
                    Var::from_vec(vec![-0.0f32; 3], 3, &device).unwrap(),
                ),
            ];
            AdamW::new(named, AdamWConfig::default()).unwrap()
        };
        let (mut fused, mut plain) = (make(), make());
        // A learning rate of 0 (the first warmup step) decays by a factor that rounds to 1.
        for (step, lr) in [4e-3, 0.0, 4e-3].into_iter().enumerate() {
            let step = step as u32;
            let grads = vec![
                Some(Tensor::from_vec(values(10 + step, 600), (20, 30), &device).unwrap()),
                Some(Tensor::from_vec(values(20 + step, 20), 20, &device).unwrap()),
                Some(Tensor::from_vec(vec![0f32; 12], (3, 4), &device).unwrap()),
                Some(Tensor::from_vec(vec![0f32; 3], 3, &device).unwrap()),
            ];
            fused.step_on(&grads, lr, 0.05, true).unwrap();
            plain.step_on(&grads, lr, 0.05, false).unwrap();
        }
        let bits = |t: &Tensor| -> Vec<u32> {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        for (f, p) in fused.params.iter().zip(&plain.params) {
            assert_eq!(
                bits(f.var.as_tensor()),
                bits(p.var.as_tensor()),
                "{}",
                f.name
            );
            assert_eq!(bits(&f.exp_avg), bits(&p.exp_avg), "{}", f.name);
            assert_eq!(bits(&f.exp_avg_sq), bits(&p.exp_avg_sq), "{}", f.name);
        }
        let moved = (fused.params[0].var.as_tensor()
            - Tensor::from_vec(values(1, 600), (20, 30), &device).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
        assert!(moved > 0.0);
    }
}
