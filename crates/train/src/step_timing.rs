//! Timing the training step alone (forward, backward, optimiser) on a fixed synthetic batch: what
//! `cargo bench --bench train_step` and the GPU check's `bench-train` measure, in one place.

use crate::loss::soft_target_cross_entropy;
use crate::optim::AdamW;
use candle_core::{DType, Device, Result, Tensor};
use illama_model::{DropPath, Illama};
use std::time::Instant;

/// Seconds per timed step, split by phase, and the last loss.
#[derive(Debug, Clone, Default)]
pub struct StepTimes {
    pub forward: Vec<f64>,
    pub backward: Vec<f64>,
    pub optimiser: Vec<f64>,
    pub last_loss: f32,
}

impl StepTimes {
    /// Whole steps: forward + backward + optimiser of each.
    pub fn steps(&self) -> Vec<f64> {
        (0..self.forward.len())
            .map(|i| self.forward[i] + self.backward[i] + self.optimiser[i])
            .collect()
    }
}

/// A random batch of `batch` images of `size` px on `device` and its Mixup-style soft targets
/// over 1000 classes (label smoothing 0.1, mixing 0.7).
pub fn synthetic_batch(batch: usize, size: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let x = Tensor::randn(0f32, 1f32, (batch, 3, size, size), &Device::Cpu)?.to_device(device)?;
    let labels: Vec<i64> = (0..batch as i64).map(|i| (i * 37) % 1000).collect();
    let targets = illama_data::mix::mixup_target(&labels, 1000, 0.7, 0.1)
        .map_err(candle_core::Error::wrap)?;
    let t = Tensor::from_vec(targets, (batch, 1000), &Device::Cpu)?.to_device(device)?;
    Ok((x, t))
}

/// Runs `warmup + steps` training steps (soft mask 0.5, drop path `drop_path`, learning rate
/// `lr`, weight decay 0.05) and times the last `steps`. The device is synchronised between the
/// phases, so that each phase's time is its own on asynchronous devices too.
#[allow(clippy::too_many_arguments)]
pub fn time_train_steps(
    model: &Illama,
    opt: &mut AdamW,
    x: &Tensor,
    targets: &Tensor,
    drop_path: f64,
    lr: f64,
    warmup: usize,
    steps: usize,
) -> Result<StepTimes> {
    let device = x.device().clone();
    let mut times = StepTimes::default();
    for i in 0..warmup + steps {
        let start = Instant::now();
        let pass = model.train_forward(
            x,
            0.5,
            DropPath {
                rate: drop_path,
                seed: i as u64,
            },
        )?;
        let loss = soft_target_cross_entropy(&pass.logits, targets)?;
        // Reading the loss waits for the forward pass (as the trainer does each step).
        times.last_loss = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let f = start.elapsed().as_secs_f64();
        let grads = pass.backward(&loss)?;
        let g: Vec<Option<Tensor>> = opt
            .params
            .iter()
            .map(|p| grads.get(p.var.as_tensor()).cloned())
            .collect();
        device.synchronize()?;
        let b = start.elapsed().as_secs_f64() - f;
        opt.step(&g, lr, 0.05)?;
        device.synchronize()?;
        let u = start.elapsed().as_secs_f64() - f - b;
        if i >= warmup {
            times.forward.push(f);
            times.backward.push(b);
            times.optimiser.push(u);
        }
    }
    Ok(times)
}
