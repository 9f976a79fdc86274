//! Parameter initialisation for training from scratch, as the reference model does it.

use candle_nn::Init;

/// timm's `trunc_normal_(std=s)` truncates at the absolute values ±2, i.e. ±100 standard deviations
/// for s = 0.02: indistinguishable from a plain normal, which is what this returns.
pub fn trunc_normal(std: f64) -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: std,
    }
}

/// PyTorch's default Conv2d/Linear init (kaiming_uniform with a = sqrt(5)): U(-1/sqrt(fan_in),
/// 1/sqrt(fan_in)) for the weight and the bias alike.
pub fn torch_default_uniform(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// How the reference initialises a parameter, by its state-dict name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamInit {
    /// RMSNorm weights.
    Ones,
    /// Linear biases.
    Zeros,
    /// Linear weights, `pos_embed`, `cls_token`: N(0, std) (timm's trunc_normal at ±2).
    Normal { std: f64 },
    /// The patch-embedding convolution, weight and bias: U(-bound, bound).
    Uniform { bound: f64 },
}

/// The reference's init for parameter `name` of shape `shape` (`patch_fan_in`: 3 x 16 x 16).
pub fn param_init(name: &str, shape: &[usize], patch_fan_in: usize) -> ParamInit {
    if name.starts_with("patch_embed.") {
        ParamInit::Uniform {
            bound: 1.0 / (patch_fan_in as f64).sqrt(),
        }
    } else if name.ends_with(".bias") {
        ParamInit::Zeros
    } else if shape.len() == 1 && name.contains("norm") {
        ParamInit::Ones
    } else {
        ParamInit::Normal { std: 0.02 }
    }
}

/// Initialises `params` (state-dict name, variable) as the reference does, from `seed` alone:
/// each parameter's values come from its own ChaCha8 stream keyed by its name, so the result
/// does not depend on the order of `params`, the thread count or candle's (unseedable) CPU
/// generator. Training from scratch with the same `--seed` starts from the same weights.
pub fn seeded_init(
    params: &[(String, candle_core::Var)],
    patch_fan_in: usize,
    seed: u64,
) -> candle_core::Result<()> {
    use rand::{Rng, SeedableRng};
    for (name, var) in params {
        let n = var.elem_count();
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        // FNV-1a of the name: a stable, order-free stream per parameter.
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        key[8..16].copy_from_slice(&h.to_le_bytes());
        let mut rng = rand_chacha::ChaCha8Rng::from_seed(key);
        let values: Vec<f32> = match param_init(name, var.dims(), patch_fan_in) {
            ParamInit::Ones => vec![1.0; n],
            ParamInit::Zeros => vec![0.0; n],
            ParamInit::Uniform { bound } => (0..n)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect(),
            ParamInit::Normal { std } => (0..n)
                .map(|_| loop {
                    // Box-Muller; timm truncates at ±2 in absolute value.
                    let u: f64 = 1.0 - rng.random::<f64>();
                    let v: f64 = rng.random();
                    let z = std * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                    if z.abs() <= 2.0 {
                        break z as f32;
                    }
                })
                .collect(),
        };
        let t = candle_core::Tensor::from_vec(values, var.dims(), &candle_core::Device::Cpu)?
            .to_dtype(var.dtype())?
            .to_device(var.device())?;
        var.set(&t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn each_parameter_gets_the_reference_distribution() {
        let fan = 3 * 16 * 16;
        assert_eq!(
            param_init("blocks.0.norm1.weight", &[192], fan),
            ParamInit::Ones
        );
        assert_eq!(param_init("norm.weight", &[192], fan), ParamInit::Ones);
        assert_eq!(param_init("head.bias", &[1000], fan), ParamInit::Zeros);
        assert_eq!(
            param_init("blocks.3.attn.qkv.weight", &[576, 192], fan),
            ParamInit::Normal { std: 0.02 }
        );
        assert_eq!(
            param_init("pos_embed", &[1, 197, 192], fan),
            ParamInit::Normal { std: 0.02 }
        );
        assert_eq!(
            param_init("patch_embed.proj.bias", &[192], fan),
            ParamInit::Uniform {
                bound: 1.0 / (fan as f64).sqrt()
            }
        );
    }

    #[test]
    fn seeded_init_depends_on_the_seed_and_name_only() {
        let make = |names: &[&str]| -> Vec<(String, Var)> {
            names
                .iter()
                .map(|n| {
                    (
                        n.to_string(),
                        Var::zeros((64, 32), DType::F32, &Device::Cpu).unwrap(),
                    )
                })
                .collect()
        };
        let values = |p: &[(String, Var)], name: &str| -> Vec<f32> {
            let v = &p.iter().find(|(n, _)| n == name).unwrap().1;
            v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
        };
        let a = make(&["head.weight", "blocks.0.mlp.fc1.weight"]);
        let b = make(&["blocks.0.mlp.fc1.weight", "head.weight"]);
        seeded_init(&a, 768, 7).unwrap();
        seeded_init(&b, 768, 7).unwrap();
        assert_eq!(values(&a, "head.weight"), values(&b, "head.weight"));
        assert_ne!(
            values(&a, "head.weight"),
            values(&a, "blocks.0.mlp.fc1.weight")
        );
        let c = make(&["head.weight"]);
        seeded_init(&c, 768, 8).unwrap();
        assert_ne!(values(&a, "head.weight"), values(&c, "head.weight"));
        let w = values(&a, "head.weight");
        let mean = w.iter().sum::<f32>() / w.len() as f32;
        let std = (w.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / w.len() as f32).sqrt();
        assert!(
            mean.abs() < 0.002 && (std - 0.02).abs() < 0.002,
            "{mean} {std}"
        );
    }
}
