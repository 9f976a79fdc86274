//! Mixup and CutMix as timm 0.5.4's `Mixup` does them in mode `'batch'`: one lambda per batch,
//! each image mixed with the image at the mirrored batch position (`x.flip(0)`), targets
//! `lam * onehot(y) + (1 - lam) * onehot(y.flip(0))`, smoothed.
//!
//! Batches are plain `[B, C, H, W]` row-major `f32` buffers, labels `i64`, targets `[B, classes]`
//! `f32`. The arithmetic is torch's on float32 tensors with a Python-float scalar: the scalar is
//! rounded to f32 once, then every product and sum is an f32 operation.

use rand::Rng;
use rand_distr::{Beta, Distribution};
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum MixError {
    /// timm: `assert len(x) % 2 == 0, 'Batch size should be even when using this'`.
    #[error("batch size should be even when using mixup/cutmix (got {0})")]
    OddBatch(usize),
    #[error("batch buffer of {len} floats is not {batch} images of {height}x{width}")]
    Shape {
        len: usize,
        batch: usize,
        height: usize,
        width: usize,
    },
    #[error("CutMix box {cut} outside the {width}x{height} image")]
    BoxOutside {
        cut: String,
        height: usize,
        width: usize,
    },
    #[error("{labels} labels for a batch of {batch}")]
    Labels { labels: usize, batch: usize },
    #[error("label {label} outside 0..{num_classes}")]
    LabelRange { label: i64, num_classes: usize },
    #[error("invalid mixup setting: {0}")]
    Config(String),
}

/// A CutMix box: rows `y0..y1`, columns `x0..x1` (possibly empty after clipping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutBox {
    pub y0: usize,
    pub y1: usize,
    pub x0: usize,
    pub x1: usize,
}

impl CutBox {
    pub fn area(&self) -> usize {
        (self.y1 - self.y0) * (self.x1 - self.x0)
    }
}

/// How a batch is mixed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MixKind {
    /// Left as it is (lambda 1: the probability test failed, or a Beta draw of exactly 1).
    None,
    /// `x * lam + x.flip(0) * (1 - lam)`.
    Mixup,
    /// The box of each image replaced by the box of its mirror.
    CutMix(CutBox),
}

/// The per-batch draw: the kind and the lambda used for the targets (for CutMix, corrected to
/// the box's true area when `correct_lam`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixParams {
    pub lam: f64,
    pub kind: MixKind,
}

impl MixParams {
    pub const NONE: MixParams = MixParams {
        lam: 1.0,
        kind: MixKind::None,
    };
}

/// timm's `Mixup` (mode `'batch'`, no `cutmix_minmax`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mixup {
    pub mixup_alpha: f64,
    pub cutmix_alpha: f64,
    /// Probability that a batch is mixed at all (`--mixup_prob`).
    pub prob: f64,
    /// Probability of CutMix rather than Mixup when both are on (`--mixup_switch_prob`).
    pub switch_prob: f64,
    pub label_smoothing: f64,
    pub num_classes: usize,
    /// Lambda recomputed from the clipped CutMix box (timm's default, True).
    pub correct_lam: bool,
    /// timm's `mixup_enabled` (turned off by `--mixup_off_epoch` style schedules).
    pub enabled: bool,
}

impl Mixup {
    pub fn new(
        mixup_alpha: f64,
        cutmix_alpha: f64,
        prob: f64,
        switch_prob: f64,
        label_smoothing: f64,
        num_classes: usize,
    ) -> Result<Self, MixError> {
        let bad = |what: String| Err(MixError::Config(what));
        for (name, a) in [("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)] {
            if !(a.is_finite() && a >= 0.0) {
                return bad(format!("{name} = {a} (must be finite and >= 0)"));
            }
        }
        for (name, p) in [
            ("prob", prob),
            ("switch_prob", switch_prob),
            ("label_smoothing", label_smoothing),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} = {p} (must be in [0, 1])"));
            }
        }
        if num_classes == 0 {
            return bad("num_classes = 0".into());
        }
        Ok(Mixup {
            mixup_alpha,
            cutmix_alpha,
            prob,
            switch_prob,
            label_smoothing,
            num_classes,
            correct_lam: true,
            enabled: true,
        })
    }

    /// Whether the reference would use Mixup at all (`args.mixup > 0 or args.cutmix > 0`): when
    /// not, it trains on hard labels with label smoothing in the loss, which is what
    /// [`mixup_target`] with lambda 1 gives as soft targets.
    pub fn is_active(&self) -> bool {
        self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0
    }

    /// timm's `_params_per_batch` then, for CutMix, `cutmix_bbox_and_lam` on `height x width`
    /// images. Draws, in order: the probability test, the switch (when both alphas are on), the
    /// Beta lambda, then the box center (row, column). An inactive or disabled Mixup draws nothing.
    pub fn sample<R: Rng + ?Sized>(&self, height: usize, width: usize, rng: &mut R) -> MixParams {
        if !self.enabled || !self.is_active() || rng.random::<f64>() >= self.prob {
            return MixParams::NONE;
        }
        let use_cutmix = if self.mixup_alpha > 0.0 && self.cutmix_alpha > 0.0 {
            rng.random::<f64>() < self.switch_prob
        } else {
            self.mixup_alpha == 0.0
        };
        let alpha = if use_cutmix {
            self.cutmix_alpha
        } else {
            self.mixup_alpha
        };
        let lam = beta(alpha, rng);
        if lam == 1.0 {
            return MixParams::NONE;
        }
        if !use_cutmix {
            return MixParams {
                lam,
                kind: MixKind::Mixup,
            };
        }
        let b = rand_bbox(height, width, lam, rng);
        let lam = if self.correct_lam {
            1.0 - b.area() as f64 / (height * width) as f64
        } else {
            lam
        };
        MixParams {
            lam,
            kind: MixKind::CutMix(b),
        }
    }

    /// Mix `images` (`[B, C, H, W]`) in place as `params` says, and return the soft targets
    /// `[B, num_classes]`.
    pub fn apply(
        &self,
        params: &MixParams,
        images: &mut [f32],
        labels: &[i64],
        height: usize,
        width: usize,
    ) -> Result<Vec<f32>, MixError> {
        let batch = labels.len();
        check_batch(images.len(), batch, height, width)?;
        let targets = mixup_target(labels, self.num_classes, params.lam, self.label_smoothing)?;
        mix_images(params, images, batch, height, width)?;
        Ok(targets)
    }

    /// timm's `Mixup.__call__`: draw the parameters, mix in place, return targets and parameters.
    pub fn mix<R: Rng + ?Sized>(
        &self,
        images: &mut [f32],
        labels: &[i64],
        height: usize,
        width: usize,
        rng: &mut R,
    ) -> Result<(Vec<f32>, MixParams), MixError> {
        check_batch(images.len(), labels.len(), height, width)?;
        let params = self.sample(height, width, rng);
        let targets = self.apply(&params, images, labels, height, width)?;
        Ok((targets, params))
    }
}

fn beta<R: Rng + ?Sized>(alpha: f64, rng: &mut R) -> f64 {
    Beta::new(alpha, alpha)
        .expect("alpha checked positive")
        .sample(rng)
}

fn check_batch(len: usize, batch: usize, height: usize, width: usize) -> Result<(), MixError> {
    if batch % 2 != 0 {
        return Err(MixError::OddBatch(batch));
    }
    let per = height * width;
    if per == 0 || batch == 0 || len % (batch * per) != 0 {
        return Err(MixError::Shape {
            len,
            batch,
            height,
            width,
        });
    }
    Ok(())
}

/// timm's `rand_bbox` (no margin): cut ratio `sqrt(1 - lam)`, cut sides `int(H * ratio)`,
/// `int(W * ratio)`, center row then column uniform in `0..H`, `0..W`, half-sides floored, box
/// clipped to the image. An empty image gives an empty box.
pub fn rand_bbox<R: Rng + ?Sized>(height: usize, width: usize, lam: f64, rng: &mut R) -> CutBox {
    if height == 0 || width == 0 {
        return CutBox {
            y0: 0,
            y1: 0,
            x0: 0,
            x1: 0,
        };
    }
    let ratio = (1.0 - lam).sqrt();
    let cut_h = (height as f64 * ratio) as i64;
    let cut_w = (width as f64 * ratio) as i64;
    let cy = rng.random_range(0..height) as i64;
    let cx = rng.random_range(0..width) as i64;
    let (h, w) = (height as i64, width as i64);
    CutBox {
        y0: (cy - cut_h / 2).clamp(0, h) as usize,
        y1: (cy + cut_h / 2).clamp(0, h) as usize,
        x0: (cx - cut_w / 2).clamp(0, w) as usize,
        x1: (cx + cut_w / 2).clamp(0, w) as usize,
    }
}

/// Mix a `[B, C, H, W]` batch with its reversal in place, in one pass over each mirrored pair.
pub fn mix_images(
    params: &MixParams,
    images: &mut [f32],
    batch: usize,
    height: usize,
    width: usize,
) -> Result<(), MixError> {
    check_batch(images.len(), batch, height, width)?;
    let per_image = images.len() / batch;
    let channels = per_image / (height * width);
    let (front, back) = images.split_at_mut(per_image * batch / 2);
    let pairs = front
        .chunks_exact_mut(per_image)
        .zip(back.chunks_exact_mut(per_image).rev());
    match params.kind {
        MixKind::None => {}
        MixKind::Mixup => {
            // torch: x_flipped = x.flip(0).mul_(1 - lam); x.mul_(lam).add_(x_flipped).
            let l = params.lam as f32;
            let m = (1.0 - params.lam) as f32;
            for (a, b) in pairs {
                for (u, v) in a.iter_mut().zip(b.iter_mut()) {
                    let (x, y) = (*u, *v);
                    *u = x * l + y * m;
                    *v = y * l + x * m;
                }
            }
        }
        MixKind::CutMix(cb) => {
            if !(cb.y1 <= height && cb.x1 <= width && cb.y0 <= cb.y1 && cb.x0 <= cb.x1) {
                return Err(MixError::BoxOutside {
                    cut: format!("{cb:?}"),
                    height,
                    width,
                });
            }
            for (a, b) in pairs {
                for c in 0..channels {
                    for y in cb.y0..cb.y1 {
                        let o = (c * height + y) * width;
                        a[o + cb.x0..o + cb.x1].swap_with_slice(&mut b[o + cb.x0..o + cb.x1]);
                    }
                }
            }
        }
    }
    Ok(())
}

/// timm's `mixup_target`: one-hot with `off = smoothing / classes`, `on = 1 - smoothing + off`,
/// then `y * lam + y.flip(0) * (1 - lam)` in f32.
pub fn mixup_target(
    labels: &[i64],
    num_classes: usize,
    lam: f64,
    smoothing: f64,
) -> Result<Vec<f32>, MixError> {
    for &label in labels {
        if label < 0 || label as u64 >= num_classes as u64 {
            return Err(MixError::LabelRange { label, num_classes });
        }
    }
    let off64 = smoothing / num_classes as f64;
    let (off, on) = (off64 as f32, (1.0 - smoothing + off64) as f32);
    let (l, m) = (lam as f32, (1.0 - lam) as f32);
    // The four values an element can take: (own is the label?, mirror is the label?).
    let value = |own: bool, mirror: bool| {
        let a = if own { on } else { off };
        let b = if mirror { on } else { off };
        a * l + b * m
    };
    let (both_off, own_on, mirror_on, both_on) = (
        value(false, false),
        value(true, false),
        value(false, true),
        value(true, true),
    );
    let n = labels.len();
    let mut out = vec![both_off; n * num_classes];
    for (i, row) in out.chunks_exact_mut(num_classes).enumerate() {
        let (a, b) = (labels[i] as usize, labels[n - 1 - i] as usize);
        if a == b {
            row[a] = both_on;
        } else {
            row[a] = own_on;
            row[b] = mirror_on;
        }
    }
    Ok(out)
}

/// Mixing in the loader thread: each assembled batch is mixed with its own random stream and
/// carries its soft targets. A batch made odd by `skip_bad` (an unreadable image left out) loses
/// its last image, since mixing pairs image `i` with image `B - 1 - i`.
impl crate::loader::BatchStep for Mixup {
    fn apply(
        &mut self,
        batch: &mut crate::loader::Batch,
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> Result<(), crate::loader::BatchStepError> {
        let n = batch.labels.len();
        if n == 0 {
            return Ok(());
        }
        let per_image = batch.pixels.len() / n;
        let side = ((per_image / 3) as f64).sqrt().round() as usize;
        if n % 2 == 1 && n > 1 {
            batch.labels.pop();
            batch.indices.pop();
            batch.pixels.truncate((n - 1) * per_image);
        }
        let (targets, _) = self.mix(&mut batch.pixels, &batch.labels, side, side, rng)?;
        batch.targets = Some(targets);
        Ok(())
    }
}
