//! RandomErasing as timm 0.5.4's `random_erasing.py` does it, on one normalised CHW image:
//! with probability `probability`, `count` boxes (area uniform in `[min_area, max_area]` of the
//! image divided by `count`, log-uniform aspect ratio, ten tries each, strictly smaller than the
//! image, position uniform inclusive), each filled with zeros, one normal value per channel, or
//! one normal value per pixel and channel.

use super::crop::{round_half_even, uniform};
use super::Rect;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// What an erased box is filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseMode {
    /// Zeros (timm `'const'`).
    Const,
    /// One N(0, 1) value per channel (timm `'rand'`).
    Rand,
    /// One N(0, 1) value per pixel and channel (timm `'pixel'`).
    Pixel,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomErasing {
    pub probability: f64,
    pub min_area: f64,
    pub max_area: f64,
    /// Natural logs of the aspect-ratio bounds (height / width).
    pub log_aspect: (f64, f64),
    pub min_count: usize,
    pub max_count: usize,
    pub mode: EraseMode,
}

impl RandomErasing {
    /// timm's defaults with the reference's arguments: probability 0.25 (`--reprob`), mode
    /// `'pixel'` (`--remode`), count 1 (`--recount`), area (0.02, 1/3), aspect (0.3, 1/0.3).
    pub fn new(probability: f64) -> Self {
        RandomErasing {
            probability,
            min_area: 0.02,
            max_area: 1.0 / 3.0,
            log_aspect: (0.3f64.ln(), (1.0 / 0.3f64).ln()),
            min_count: 1,
            max_count: 1,
            mode: EraseMode::Pixel,
        }
    }

    /// Whether this image is erased at all (timm: `random.random() > probability` skips).
    pub fn draw_apply<R: Rng + ?Sized>(&self, rng: &mut R) -> bool {
        rng.random::<f64>() <= self.probability
    }

    /// The number of boxes for an erased image.
    pub fn draw_count<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        if self.min_count == self.max_count {
            self.min_count
        } else {
            rng.random_range(self.min_count..=self.max_count)
        }
    }

    /// One box for an `height x width` image erased with `count` boxes: ten tries, `None` when
    /// none fits (the image is then left as it is for this box, as in timm).
    pub fn sample_box<R: Rng + ?Sized>(
        &self,
        height: usize,
        width: usize,
        count: usize,
        rng: &mut R,
    ) -> Option<Rect> {
        let area = (height * width) as f64;
        for _ in 0..10 {
            let target_area = uniform(rng, self.min_area, self.max_area) * area / count as f64;
            let aspect = uniform(rng, self.log_aspect.0, self.log_aspect.1).exp();
            let h = round_half_even((target_area * aspect).sqrt());
            let w = round_half_even((target_area / aspect).sqrt());
            if w < width && h < height {
                let top = rng.random_range(0..=height - h);
                let left = rng.random_range(0..=width - w);
                return Some(Rect {
                    top,
                    left,
                    height: h,
                    width: w,
                });
            }
        }
        None
    }

    /// Erase in place `img`, a `[channels, height, width]` row-major buffer. Returns the number
    /// of boxes erased. Draws: apply, [count], then per box its sampling and its fill values.
    pub fn apply<R: Rng + ?Sized>(
        &self,
        img: &mut [f32],
        channels: usize,
        height: usize,
        width: usize,
        rng: &mut R,
    ) -> Result<usize, crate::TransformError> {
        if img.len() != channels * height * width {
            return Err(crate::TransformError::Buffer(
                img.len(),
                channels * height * width,
            ));
        }
        if !self.draw_apply(rng) {
            return Ok(0);
        }
        let count = self.draw_count(rng);
        let mut erased = 0;
        for _ in 0..count {
            let Some(b) = self.sample_box(height, width, count, rng) else {
                continue;
            };
            match self.mode {
                EraseMode::Const => fill_box(img, channels, height, width, b, |_| 0.0)?,
                EraseMode::Pixel => fill_box(img, channels, height, width, b, |_| {
                    StandardNormal.sample(&mut *rng)
                })?,
                EraseMode::Rand => {
                    // One value per channel; the fill goes channel by channel, so a value is
                    // drawn when the channel changes.
                    let mut current: Option<(usize, f32)> = None;
                    fill_box(img, channels, height, width, b, |c| match current {
                        Some((cc, v)) if cc == c => v,
                        _ => {
                            let v = StandardNormal.sample(&mut *rng);
                            current = Some((c, v));
                            v
                        }
                    })?;
                }
            }
            erased += 1;
        }
        Ok(erased)
    }
}

/// Fill box `b` of a `[channels, height, width]` buffer, channel by channel, row by row, left to
/// right, with `value(channel)` called once per element in that order.
pub fn fill_box(
    img: &mut [f32],
    channels: usize,
    height: usize,
    width: usize,
    b: Rect,
    mut value: impl FnMut(usize) -> f32,
) -> Result<(), crate::TransformError> {
    if b.top + b.height > height || b.left + b.width > width {
        return Err(crate::TransformError::Box(format!("{b:?}"), width, height));
    }
    if img.len() != channels * height * width {
        return Err(crate::TransformError::Buffer(
            img.len(),
            channels * height * width,
        ));
    }
    for (c, plane) in img.chunks_exact_mut(height * width).enumerate() {
        for y in b.top..b.top + b.height {
            let row = &mut plane[y * width + b.left..y * width + b.left + b.width];
            for v in row {
                *v = value(c);
            }
        }
    }
    Ok(())
}
