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
