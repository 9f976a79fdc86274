//! One training epoch as the reference's `train_one_epoch` runs it: per optimiser step, the
//! learning rate, weight decay and soft-mask rate from the schedules; each batch's loss divided by
//! `update_freq` and gradients summed over `update_freq` batches; optional global-norm clipping;
//! AdamW; the EMA update after each optimiser step. Stochastic depth follows its own per-step
//! schedule, with masks drawn from `(seed, epoch, batch)` so that a resumed run replays them. A
//! non-finite loss stops the epoch with an error naming the epoch and step, before anything is
//! applied.

use crate::clip::{clip_grad_norm, update_ema};
use crate::loss::{label_smoothing_cross_entropy, soft_target_cross_entropy};
use crate::optim::AdamW;
use candle_core::{Device, Tensor, Var};
use illama_data::{rng_for, Batches, LoaderError, Stream};
use illama_model::{DropPath, Illama};
use rand::RngCore;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    #[error("epoch {epoch}, step {step}: the loss is {loss}; stopping (nothing of this step was applied)")]
    NonFinite { epoch: u64, step: u64, loss: f32 },
    #[error("the schedules end at step {len}, the run needs step {step}")]
    ScheduleTooShort { len: usize, step: u64 },
}

/// The per-step values of the run (one entry per optimiser step of the whole run).
#[derive(Debug, Clone)]
pub struct Schedules {
    pub lr: Vec<f64>,
    pub weight_decay: Vec<f64>,
    pub soft_mask: Vec<f64>,
    /// Drop-path rate of the deepest block (empty: no stochastic depth).
    pub drop_path: Vec<f64>,
}

/// How an epoch trains.
#[derive(Debug, Clone)]
pub struct EpochOptions {
    pub epoch: u64,
    /// Optimiser steps taken before this epoch.
    pub start_step: u64,
    /// Batches per optimiser step.
    pub update_freq: usize,
    /// Label smoothing when batches carry plain labels (no Mixup).
    pub smoothing: f64,
    pub clip_grad: Option<f64>,
    /// EMA weights and decay, updated after each optimiser step.
    pub ema_decay: f64,
    /// The run's seed (stochastic-depth masks).
    pub seed: u64,
    /// Batches this epoch will see (for progress reports).
    pub batches: usize,
}

/// Where an epoch stands after a batch, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchProgress {
    /// Batches done in this epoch, and the epoch's total.
    pub batch: usize,
    pub batches: usize,
    pub images: usize,
    /// This batch's loss, and the mean so far.
    pub loss: f64,
    pub mean_loss: f64,
    pub lr: f64,
}

/// What an epoch did. The rates are means over the epoch's batches, as the reference's
/// `MetricLogger` averages them (`train_lr` of a warmup epoch is its mean learning rate).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochStats {
    /// Mean loss over the epoch's batches.
    pub loss: f64,
    pub steps: u64,
    pub images: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub soft_mask: f64,
    /// Mean deepest-block drop-path rate, when stochastic depth is scheduled.
    pub drop_path: Option<f64>,
    /// Mean per-batch training accuracy on plain labels (not computed for mixed targets).
    pub class_acc: Option<f64>,
}

/// Trains `model` (whose parameters `opt` holds) on every batch of `batches`.
pub fn train_epoch(
    model: &Illama,
    opt: &mut AdamW,
    mut ema: Option<&mut [Var]>,
    batches: Batches,
    schedules: &Schedules,
    o: &EpochOptions,
    on_batch: &mut dyn FnMut(&BatchProgress),
) -> Result<EpochStats, TrainError> {
    let device = model.device().clone();
    let update_freq = o.update_freq.max(1);
    let mut stats = EpochStats::default();
    let mut sum: Vec<Option<Tensor>> = vec![None; opt.params.len()];
    let (mut losses, mut in_step, mut seen) = (0f64, 0usize, 0usize);
    let mut step = o.start_step;
    for (position, batch) in batches.into_iter().enumerate() {
        let batch = batch?;
        let n = batch.labels.len();
        if n == 0 {
            continue;
        }
        let at = step as usize;
        if at >= schedules.lr.len() {
            return Err(TrainError::ScheduleTooShort {
                len: schedules.lr.len(),
                step,
            });
        }
        let side = ((batch.pixels.len() / n / 3) as f64).sqrt() as usize;
        let x =
            Tensor::from_vec(batch.pixels, (n, 3, side, side), &Device::Cpu)?.to_device(&device)?;
        let drop = DropPath {
            rate: schedules.drop_path.get(at).copied().unwrap_or(0.0),
            seed: rng_for(o.seed, o.epoch, Stream::Consumer, position as u64).next_u64(),
        };
        let pass = model.train_forward(&x, schedules.soft_mask[at], drop)?;
        let logits = pass.logits.clone();
        let loss = match &batch.targets {
            Some(t) => {
                let classes = t.len() / n;
                let t =
                    Tensor::from_vec(t.clone(), (n, classes), &Device::Cpu)?.to_device(&device)?;
                soft_target_cross_entropy(&logits, &t)?
            }
            None => {
                let y =
                    Tensor::from_vec(batch.labels.clone(), n, &Device::Cpu)?.to_device(&device)?;
                label_smoothing_cross_entropy(&logits, &y, o.smoothing)?
            }
        };
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            return Err(TrainError::NonFinite {
                epoch: o.epoch,
                step,
                loss: value,
            });
        }
        losses += value as f64;
        stats.images += n;
        seen += 1;
        stats.lr += schedules.lr[at];
        stats.weight_decay += schedules.weight_decay[at];
        stats.soft_mask += schedules.soft_mask[at];
        if let Some(d) = schedules.drop_path.get(at) {
            *stats.drop_path.get_or_insert(0.0) += d;
        }
        if batch.targets.is_none() {
            let predicted: Vec<u32> = logits.argmax(1)?.to_vec1()?;
            let right = predicted
                .iter()
                .zip(&batch.labels)
                .filter(|(p, l)| **p as i64 == **l)
                .count();
            *stats.class_acc.get_or_insert(0.0) += right as f64 / n as f64;
        }
        on_batch(&BatchProgress {
            batch: position + 1,
            batches: o.batches,
            images: stats.images,
            loss: value as f64,
            mean_loss: losses / seen as f64,
            lr: schedules.lr[at],
        });
        let grads = pass.backward(&(loss / update_freq as f64)?)?;
        for (p, acc) in opt.params.iter().zip(sum.iter_mut()) {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                *acc = Some(match acc.take() {
                    Some(a) => (a + g)?,
                    None => g.clone(),
                });
            }
        }
        in_step += 1;
        if in_step == update_freq {
            if let Some(max) = o.clip_grad {
                clip_grad_norm(&mut sum, max)?;
            }
            opt.step(&sum, schedules.lr[at], schedules.weight_decay[at])?;
            if let Some(ema) = ema.as_deref_mut() {
                let weights: Vec<Var> = opt.params.iter().map(|p| p.var.clone()).collect();
                update_ema(ema, &weights, o.ema_decay)?;
            }
            sum.iter_mut().for_each(|g| *g = None);
            in_step = 0;
            step += 1;
            stats.steps += 1;
        }
    }
    let seen = seen.max(1) as f64;
    stats.loss = losses / seen;
    stats.lr /= seen;
    stats.weight_decay /= seen;
    stats.soft_mask /= seen;
    stats.drop_path = stats.drop_path.map(|d| d / seen);
    stats.class_acc = stats.class_acc.map(|a| a / seen);
    Ok(stats)
}
