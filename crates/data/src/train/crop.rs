//! RandomResizedCrop as timm 0.5.4's `RandomResizedCropAndInterpolation` does it (box sampling
//! with ten tries and a center-crop fallback, then torchvision's `F.resized_crop` on a PIL
//! image: crop, then PIL's antialiased bicubic resize), and the horizontal flip.

use super::Rect;
use crate::resize::{resize, ResizeError, Rgb8};
use rand::Rng;

/// Python's `random.uniform(a, b)`: `a + (b - a) * U[0, 1)`.
pub(crate) fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// Python's `int(round(x))` for the non-negative values used here (round half to even).
pub(crate) fn round_half_even(x: f64) -> usize {
    x.round_ties_even() as usize
}

/// The crop-box sampler and output size of RandomResizedCrop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomResizedCrop {
    /// Output side (square output).
    pub size: usize,
    /// Range of the box area as a fraction of the image area.
    pub scale: (f64, f64),
    /// Range of the box aspect ratio (width / height), sampled log-uniformly.
    pub ratio: (f64, f64),
}

impl RandomResizedCrop {
    /// The reference's parameters: scale (0.08, 1), ratio (3/4, 4/3), bicubic.
    pub fn new(size: usize) -> Result<Self, crate::TransformError> {
        if size == 0 {
            return Err(crate::TransformError::ZeroSize);
        }
        Ok(RandomResizedCrop {
            size,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        })
    }

    /// timm's `get_params` on a `width x height` image: ten tries of an area drawn uniformly
    /// from `scale` times the image area and a log-uniform aspect ratio, `w = round(sqrt(area *
    /// ratio))`, `h = round(sqrt(area / ratio))`, accepted when the box fits and the position
    /// drawn uniformly (inclusive); else the center crop with the ratio clamped to the range.
    ///
    /// One deliberate difference: a try giving an empty box (`w` or `h` rounding to 0, which
    /// only happens for images of fewer than about 5 pixels) is rejected, where timm would return
    /// it and PIL would then produce a black image.
    /// An empty image gives an empty box (which the resize then refuses).
    pub fn sample<R: Rng + ?Sized>(&self, width: usize, height: usize, rng: &mut R) -> Rect {
        if width == 0 || height == 0 {
            return Rect {
                left: 0,
                top: 0,
                width: 0,
                height: 0,
            };
        }
        let area = (width * height) as f64;
        let log_ratio = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target_area = uniform(rng, self.scale.0, self.scale.1) * area;
            let aspect = uniform(rng, log_ratio.0, log_ratio.1).exp();
            let w = round_half_even((target_area * aspect).sqrt());
            let h = round_half_even((target_area / aspect).sqrt());
            if w <= width && h <= height && w > 0 && h > 0 {
                let top = rng.random_range(0..=height - h);
                let left = rng.random_range(0..=width - w);
                return Rect {
                    top,
                    left,
                    height: h,
                    width: w,
                };
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (min_r, max_r) = (
            self.ratio.0.min(self.ratio.1),
            self.ratio.0.max(self.ratio.1),
        );
        let (w, h) = if in_ratio < min_r {
            (
                width,
                round_half_even(width as f64 / min_r).clamp(1, height),
            )
        } else if in_ratio > max_r {
            (
                round_half_even(height as f64 * max_r).clamp(1, width),
                height,
            )
        } else {
            (width, height)
        };
        Rect {
            top: (height - h) / 2,
            left: (width - w) / 2,
            height: h,
            width: w,
        }
    }

    /// A sampled box of `img`, cropped and resized to `size x size`.
    pub fn apply<R: Rng + ?Sized>(&self, img: &Rgb8, rng: &mut R) -> Result<Rgb8, ResizeError> {
        let b = self.sample(img.width, img.height, rng);
        resized_crop(img, b, self.size)
    }
}

/// torchvision's `F.resized_crop(img, top, left, height, width, [size, size], BICUBIC)` on a PIL
/// image: the box cut out, then PIL's antialiased bicubic resize to `size x size`.
pub fn resized_crop(img: &Rgb8, b: Rect, size: usize) -> Result<Rgb8, ResizeError> {
    if b.width == img.width && b.height == img.height && b.left == 0 && b.top == 0 {
        return resize(img, size, size);
    }
    resize(&img.crop(b.left, b.top, b.width, b.height)?, size, size)
}

/// Mirror `img` left-right in place (PIL's `FLIP_LEFT_RIGHT`).
pub fn hflip(img: &mut Rgb8) {
    let w = img.width;
    if w < 2 {
        return;
    }
    for row in img.data.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            let (a, b) = (x * 3, (w - 1 - x) * 3);
            for c in 0..3 {
                row.swap(a + c, b + c);
            }
        }
    }
}
