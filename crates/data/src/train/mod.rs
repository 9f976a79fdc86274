//! The geometric part of the reference's training transform, timm 0.5.4
//! `create_transform(is_training=True)` with the recipe's arguments, less RandAugment:
//!
//! 1. RandomResizedCrop to `size x size` (scale (0.08, 1), ratio (3/4, 4/3), bicubic), [`crop`];
//! 2. horizontal flip with probability 0.5;
//! 3. (RandAugment goes here, on the 8-bit pixels: not implemented in this module);
//! 4. ToTensor + Normalize (ImageNet mean/std);
//! 5. RandomErasing (probability 0.25, mode `'pixel'`, one box), [`erasing`].
//!
//! Randomness comes from the caller's [`rand::Rng`]; the draws are in the order above (crop box,
//! flip, erasing), which is our own stream, not Python's or torch's.

pub mod crop;
pub mod erasing;

pub use crop::{hflip, resized_crop, RandomResizedCrop};
pub use erasing::{fill_box, EraseMode, RandomErasing};

use crate::resize::Rgb8;
use crate::transform::{IMAGENET_MEAN, IMAGENET_STD};
use rand::Rng;

/// A box in an image: rows `top..top + height`, columns `left..left + width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rect {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// The training transform of the reference, without RandAugment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainTransform {
    pub crop: RandomResizedCrop,
    /// Probability of the horizontal flip (torchvision: flipped when `U[0, 1) < p`).
    pub hflip: f64,
    pub erasing: RandomErasing,
}

impl TrainTransform {
    /// The recipe: RandomResizedCrop(size), flip 0.5, RandomErasing(0.25, 'pixel', count 1).
    pub fn new(size: usize) -> Self {
        TrainTransform {
            crop: RandomResizedCrop::new(size),
            hflip: 0.5,
            erasing: RandomErasing::new(0.25),
        }
    }

    pub fn size(&self) -> usize {
        self.crop.size
    }

    /// Steps 1 and 2: the 8-bit pixels torchvision would hand to the next transform (for a caller
    /// that inserts its own pixel-level augmentation before [`normalize_into`]).
    pub fn pixels<R: Rng + ?Sized>(&self, img: &Rgb8, rng: &mut R) -> Rgb8 {
        let mut px = self.crop.apply(img, rng);
        if rng.random::<f64>() < self.hflip {
            hflip(&mut px);
        }
        px
    }

    /// All steps into `out`, a `[3, size, size]` buffer (e.g. one image's slot of a batch). The
    /// flip is done while normalising (one pass), the erasing afterwards on its box only.
    pub fn apply_into<R: Rng + ?Sized>(&self, img: &Rgb8, rng: &mut R, out: &mut [f32]) {
        let s = self.size();
        assert_eq!(out.len(), 3 * s * s, "output buffer size");
        let px = self.crop.apply(img, rng);
        let flip = rng.random::<f64>() < self.hflip;
        normalize_into(&px, flip, out);
        self.erasing.apply(out, 3, s, s, rng);
    }

    /// All steps, as a new `[3, size, size]` buffer.
    pub fn apply<R: Rng + ?Sized>(&self, img: &Rgb8, rng: &mut R) -> Vec<f32> {
        let s = self.size();
        let mut out = vec![0f32; 3 * s * s];
        self.apply_into(img, rng, &mut out);
        out
    }
}

/// ToTensor + Normalize of `px` (mirrored left-right when `flip`) into `out` (`[3, h, w]`),
/// with the same f32 arithmetic as [`crate::transform::to_chw_normalized`]:
/// `(v / 255 - mean) / std`.
pub fn normalize_into(px: &Rgb8, flip: bool, out: &mut [f32]) {
    let (w, h) = (px.width, px.height);
    let plane = w * h;
    assert_eq!(out.len(), 3 * plane, "output buffer size");
    assert_eq!(px.data.len(), 3 * plane, "pixel buffer size");
    // 256-entry tables per channel: the same value the formula gives, without a division per pixel.
    let mut lut = [[0f32; 256]; 3];
    for (c, t) in lut.iter_mut().enumerate() {
        for (v, e) in t.iter_mut().enumerate() {
            *e = (v as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (y, row) in px.data.chunks_exact(w * 3).enumerate() {
        let o = y * w;
        let (r, g, b) = (&mut r[o..o + w], &mut g[o..o + w], &mut b[o..o + w]);
        for (x, p) in row.chunks_exact(3).enumerate() {
            let xo = if flip { w - 1 - x } else { x };
            r[xo] = lut[0][p[0] as usize];
            g[xo] = lut[1][p[1] as usize];
            b[xo] = lut[2][p[2] as usize];
        }
    }
}
