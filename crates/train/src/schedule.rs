//! Per-iteration schedules of the recipe: learning rate and weight decay (linear warmup, then
//! cosine), soft-mask rate, drop path and dropout. One value per optimiser step over the whole
//! run, computed the way the reference computes them (numpy `linspace`, `full`, `concatenate`
//! and Python's `math.cos`, all in f64), so that a run follows the published schedules to the last
//! bit.

/// Why a schedule cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{warmup} warmup steps, more than the {total} steps of the run")]
    WarmupTooLong { warmup: usize, total: usize },
    #[error("warmup steps need warmup epochs above 0 (the reference warms up only then)")]
    WarmupStepsWithoutEpochs,
    #[error("cutoff epoch {cutoff} is after the last epoch ({epochs})")]
    CutoffAfterEnd { cutoff: usize, epochs: usize },
    #[error("the 'late' drop mode has no linear schedule")]
    LateLinear,
}

/// numpy's `linspace(start, stop, num)` with `endpoint=True`: `start + i * step` with
/// `step = (stop - start) / (num - 1)`, the last value exactly `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut v: Vec<f64> = if step == 0.0 {
        // numpy divides first when the step underflows to zero.
        (0..num).map(|i| i as f64 / div * delta + start).collect()
    } else {
        (0..num).map(|i| i as f64 * step + start).collect()
    };
    v[num - 1] = stop;
    v
}

/// `utils.cosine_scheduler`: `warmup_iters` values from `start_warmup` to `base` (linspace), then
/// `final + 0.5 (base - final) (1 + cos(pi i / n))` for `i` in `0..n`, `n` the remaining steps.
/// `warmup_iters` is `warmup_steps` when given, else `warmup_epochs x iters_per_epoch`.
pub fn cosine(
    base: f64,
    final_value: f64,
    epochs: usize,
    iters_per_epoch: usize,
    warmup_epochs: usize,
    start_warmup: f64,
    warmup_steps: Option<usize>,
) -> Result<Vec<f64>, ScheduleError> {
    let total = epochs * iters_per_epoch;
    let warmup_iters = warmup_steps.unwrap_or(warmup_epochs * iters_per_epoch);
    if warmup_steps.is_some() && warmup_epochs == 0 {
        return Err(ScheduleError::WarmupStepsWithoutEpochs);
    }
    if warmup_iters > total {
        return Err(ScheduleError::WarmupTooLong {
            warmup: warmup_iters,
            total,
        });
    }
    let mut out = if warmup_epochs > 0 {
        linspace(start_warmup, base, warmup_iters)
    } else {
        Vec::new()
    };
    let n = total - warmup_iters;
    out.extend((0..n).map(|i| {
        final_value
            + 0.5
                * (base - final_value)
                * (1.0 + (std::f64::consts::PI * i as f64 / n as f64).cos())
    }));
    Ok(out)
}

/// `--mask-mode`: `standard` keeps the soft-mask rate all run; `soft` uses it for the first
/// `--cutoff-soft` epochs, then 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskMode {
    Standard,
    Soft,
}

/// How a rate goes during its early epochs: constant, or linearly down to 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EarlySchedule {
    Constant,
    Linear,
}

/// `--drop-mode`: `standard` constant; `early` the rate until the cutoff epoch, then 0; `late` 0
/// until the cutoff epoch, then the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DropMode {
    Standard,
    Early,
    Late,
}

fn early_then(
    rate: f64,
    epochs: usize,
    iters_per_epoch: usize,
    cutoff: usize,
    schedule: EarlySchedule,
) -> Result<Vec<f64>, ScheduleError> {
    if cutoff > epochs {
        return Err(ScheduleError::CutoffAfterEnd { cutoff, epochs });
    }
    let early = cutoff * iters_per_epoch;
    let mut out = match schedule {
        EarlySchedule::Constant => vec![rate; early],
        EarlySchedule::Linear => linspace(rate, 0.0, early),
    };
    out.resize(epochs * iters_per_epoch, 0.0);
    Ok(out)
}

/// `mask_scheduler.py`: the soft-mask rate per step.
pub fn soft_mask(
    rate: f64,
    epochs: usize,
    iters_per_epoch: usize,
    cutoff_epoch: usize,
    mode: MaskMode,
    schedule: EarlySchedule,
) -> Result<Vec<f64>, ScheduleError> {
    match mode {
        MaskMode::Standard => Ok(vec![rate; epochs * iters_per_epoch]),
        MaskMode::Soft => early_then(rate, epochs, iters_per_epoch, cutoff_epoch, schedule),
    }
}

/// `drop_scheduler.py`: the drop-path (or dropout) rate per step.
pub fn drop_rate(
    rate: f64,
    epochs: usize,
    iters_per_epoch: usize,
    cutoff_epoch: usize,
    mode: DropMode,
    schedule: EarlySchedule,
) -> Result<Vec<f64>, ScheduleError> {
    match mode {
        DropMode::Standard => Ok(vec![rate; epochs * iters_per_epoch]),
        DropMode::Early => early_then(rate, epochs, iters_per_epoch, cutoff_epoch, schedule),
        DropMode::Late => {
            if schedule == EarlySchedule::Linear {
                return Err(ScheduleError::LateLinear);
            }
            if cutoff_epoch > epochs {
                return Err(ScheduleError::CutoffAfterEnd {
                    cutoff: cutoff_epoch,
                    epochs,
                });
            }
            let mut out = vec![0.0; cutoff_epoch * iters_per_epoch];
            out.resize(epochs * iters_per_epoch, rate);
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_ends_exactly_and_handles_short_runs() {
        assert_eq!(linspace(0.0, 1.0, 0), Vec::<f64>::new());
        assert_eq!(linspace(0.3, 1.0, 1), vec![0.3]);
        assert_eq!(linspace(0.0, 4e-3, 2), vec![0.0, 4e-3]);
        let v = linspace(1.0, 0.0, 5);
        assert_eq!(v, vec![1.0, 0.75, 0.5, 0.25, 0.0]);
    }

    #[test]
    fn cosine_starts_at_base_after_warmup_and_approaches_final() {
        let v = cosine(4e-3, 1e-6, 10, 5, 2, 0.0, None).unwrap();
        assert_eq!(v.len(), 50);
        assert_eq!(v[0], 0.0);
        assert_eq!(v[9], 4e-3);
        assert_eq!(v[10], 4e-3);
        assert!(v[49] > 1e-6 && v[49] < 1e-5);
        assert_eq!(
            cosine(1.0, 0.0, 1, 1, 0, 0.0, Some(3)),
            Err(ScheduleError::WarmupStepsWithoutEpochs)
        );
        assert!(matches!(
            cosine(1.0, 0.0, 1, 4, 2, 0.0, None),
            Err(ScheduleError::WarmupTooLong { .. })
        ));
    }

    #[test]
    fn rates_switch_at_the_cutoff() {
        let m = soft_mask(1.0, 4, 2, 2, MaskMode::Soft, EarlySchedule::Linear).unwrap();
        assert_eq!(m[..4], linspace(1.0, 0.0, 4));
        assert_eq!(m[4..], [0.0; 4]);
        let d = drop_rate(0.4, 3, 2, 1, DropMode::Late, EarlySchedule::Constant).unwrap();
        assert_eq!(d, vec![0.0, 0.0, 0.4, 0.4, 0.4, 0.4]);
        assert!(drop_rate(0.4, 3, 2, 4, DropMode::Early, EarlySchedule::Constant).is_err());
    }
}
