//! The reference's training transform, timm 0.5.4 `create_transform(is_training=True)` with the
//! recipe's arguments:
//!
//! 1. RandomResizedCrop to `size x size` (scale (0.08, 1), ratio (3/4, 4/3), bicubic), [`crop`];
//! 2. horizontal flip with probability 0.5;
//! 3. RandAugment on the 8-bit pixels (`rand-m9-mstd0.5-inc1`; [`crate::augment`]); timm
//!    applies no color jitter when an auto-augment policy is set;
//! 4. ToTensor + Normalize (ImageNet mean/std);
//! 5. RandomErasing (probability 0.25, mode `'pixel'`, one box), [`erasing`].
//!
//! Randomness comes from the caller's [`rand::Rng`]; the draws are in the order above (crop box,
//! flip, RandAugment, erasing), which is our own stream, not Python's or torch's.

pub mod crop;
pub mod erasing;

pub use crop::{hflip, resized_crop, RandomResizedCrop};
pub use erasing::{fill_box, EraseMode, RandomErasing};

use crate::augment::{Hparams, RandAugment};
use crate::resize::Rgb8;
pub use crate::transform::normalize_into;
use crate::transform::TransformError;
use rand::Rng;

/// A box in an image: rows `top..top + height`, columns `left..left + width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rect {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// The training transform of the reference.
#[derive(Debug, Clone)]
pub struct TrainTransform {
    pub crop: RandomResizedCrop,
    /// Probability of a horizontal flip.
    pub hflip: f64,
    /// `None` for `--aa none`.
    pub rand_augment: Option<RandAugment>,
    pub erasing: RandomErasing,
}

impl TrainTransform {
    /// The recipe's transform at `size` (a multiple of 16 within the input-size bounds) with the
    /// RandAugment policy `aa` (`rand-m9-mstd0.5-inc1`, or `none`) and erasing probability
    /// `reprob`.
    pub fn new(size: usize, aa: &str, reprob: f64) -> Result<Self, TransformError> {
        crate::transform::check_input_size(size)?;
        if !(0.0..=1.0).contains(&reprob) {
            return Err(TransformError::Probability(reprob));
        }
        let rand_augment = crate::augment::parse_policy(aa)
            .map_err(TransformError::Policy)?
            .map(|c| RandAugment::new(&c, Hparams::imagenet_bicubic()));
        Ok(TrainTransform {
            crop: RandomResizedCrop::new(size)?,
            hflip: 0.5,
            rand_augment,
            erasing: RandomErasing::new(reprob),
        })
    }

    /// The recipe's defaults: `rand-m9-mstd0.5-inc1`, erasing 0.25.
    pub fn recipe(size: usize) -> Result<Self, TransformError> {
        Self::new(size, "rand-m9-mstd0.5-inc1", 0.25)
    }

    /// Output side in pixels.
    pub fn size(&self) -> usize {
        self.crop.size
    }

    /// Steps 1-3: the 8-bit pixels handed to ToTensor.
    pub fn pixels<R: Rng + ?Sized>(&self, img: &Rgb8, rng: &mut R) -> Result<Rgb8, TransformError> {
        let mut px = self.crop.apply(img, rng)?;
        if rng.random::<f64>() < self.hflip {
            hflip(&mut px);
        }
        if let Some(ra) = &self.rand_augment {
            ra.apply(&mut px, rng);
        }
        Ok(px)
    }

    /// All steps, into `out` (`3 x size x size` values).
    pub fn apply_into<R: Rng + ?Sized>(
        &self,
        img: &Rgb8,
        rng: &mut R,
        out: &mut [f32],
    ) -> Result<(), TransformError> {
        let s = self.size();
        if out.len() != 3 * s * s {
            return Err(TransformError::Buffer(out.len(), 3 * s * s));
        }
        let px = self.pixels(img, rng)?;
        normalize_into(&px, false, out)?;
        self.erasing.apply(out, 3, s, s, rng)?;
        Ok(())
    }

    /// All steps: normalised CHW floats.
    pub fn apply<R: Rng + ?Sized>(
        &self,
        img: &Rgb8,
        rng: &mut R,
    ) -> Result<Vec<f32>, TransformError> {
        let s = self.size();
        let mut out = vec![0f32; 3 * s * s];
        self.apply_into(img, rng, &mut out)?;
        Ok(out)
    }
}

impl crate::loader::ImageTransform for TrainTransform {
    fn size(&self) -> usize {
        TrainTransform::size(self)
    }
    /// The fast decoder: the small difference from PIL's is far below the augmentation's.
    fn decoder(&self) -> crate::decode::Decoder {
        crate::decode::Decoder::Fast
    }
    fn apply_into(
        &self,
        img: &Rgb8,
        rng: &mut rand_chacha::ChaCha8Rng,
        out: &mut [f32],
    ) -> Result<(), TransformError> {
        TrainTransform::apply_into(self, img, rng, out)
    }
}
