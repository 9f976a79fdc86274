//! Training-time augmentation: timm 0.5.4's RandAugment (`rand-m9-mstd0.5-inc1` and the rest of
//! its `rand-...` grammar) on [`Rgb8`](crate::Rgb8) images.
//!
//! [`ops`] owns the 15 image operations with the semantics of the Pillow calls timm makes;
//! [`rand_augment`] owns the policy grammar, timm's level-to-argument functions and the
//! per-image sampling. See docs/augment.md for the op table and the measured agreement.
//!
//! Deliberate differences from timm:
//! - randomness comes from the caller's [`rand::Rng`]; the distributions are timm's, but replaying
//!   Python's `random`/numpy streams is not a goal;
//! - posterize to 0 bits (PosterizeIncreasing at magnitude 10) is black, as with the Pillow of
//!   the reference runs; Pillow >= 12 raises there;
//! - policy sections without a value (timm skips them silently) are errors.

pub mod ops;
pub mod rand_augment;

pub use ops::{Resample, Transform};
pub use rand_augment::{
    parse_policy, Applied, Hparams, Interpolation, OpName, PolicyError, RandAugment,
    RandAugmentConfig, Step,
};
