//! The reference's evaluation transform (ConvNeXt/DeiT `build_transform(is_train=False)`) on
//! decoded images: below 384, resize the shorter side to `int(size / 0.875)` and center-crop;
//! from 384 up, warp to size x size; then ToTensor and Normalize with the ImageNet statistics.
//!
//! Only the pixels the crop keeps are computed (see [`resize_window`]), so an image of extreme
//! aspect ratio (1 x 89000, resized to 256 x 22,784,000 before the crop) costs no more than its
//! decoded pixels plus the crop.

use crate::resize::{resize_window, ResizeError, Rgb8};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Default crop fraction of the reference (224 / 256).
pub const CROP_PCT: f64 = 224.0 / 256.0;

/// The model's patch size: input sizes are multiples of it.
pub const PATCH_SIZE: usize = 16;
/// Smallest input size accepted (one patch).
pub const MIN_INPUT_SIZE: usize = PATCH_SIZE;
/// Largest input size accepted: 1024 (64 x 64 patches, 12 MiB of f32 per image). The paper
/// evaluates at 224 and 384.
pub const MAX_INPUT_SIZE: usize = 1024;

/// Why a transform was not built or not applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransformError {
    #[error(
        "input size {0} is not a multiple of {PATCH_SIZE} between {MIN_INPUT_SIZE} and {MAX_INPUT_SIZE}"
    )]
    InputSize(usize),
    #[error(transparent)]
    Resize(#[from] ResizeError),
    #[error("probability {0} is outside [0, 1]")]
    Probability(f64),
    #[error("RandAugment policy: {0}")]
    Policy(crate::augment::PolicyError),
    #[error("buffer of {0} values for an image of {1}")]
    Buffer(usize, usize),
    #[error("box {0} outside the {1}x{2} image")]
    Box(String, usize, usize),
    #[error("crop size must be positive")]
    ZeroSize,
}

/// `size` must be a multiple of [`PATCH_SIZE`] within [`MIN_INPUT_SIZE`]`..=`[`MAX_INPUT_SIZE`].
pub fn check_input_size(size: usize) -> Result<(), TransformError> {
    if !(MIN_INPUT_SIZE..=MAX_INPUT_SIZE).contains(&size) || size % PATCH_SIZE != 0 {
        return Err(TransformError::InputSize(size));
    }
    Ok(())
}

/// The evaluation transform at one input size; built only through [`EvalTransform::new`], which
/// checks the size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalTransform {
    size: usize,
    crop_pct: f64,
}

impl EvalTransform {
    /// The transform at `size` x `size`: a multiple of [`PATCH_SIZE`] within
    /// [`MIN_INPUT_SIZE`]`..=`[`MAX_INPUT_SIZE`], or an error.
    pub fn new(size: usize) -> Result<Self, TransformError> {
        check_input_size(size)?;
        Ok(EvalTransform {
            size,
            crop_pct: CROP_PCT,
        })
    }

    /// The output side, in pixels.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The fraction of the resized shorter side kept by the crop (224 / 256).
    pub fn crop_pct(&self) -> f64 {
        self.crop_pct
    }

    /// Bytes of one image's [`EvalTransform::apply`] output (`3 x size x size` f32).
    pub fn output_bytes(&self) -> usize {
        3 * self.size * self.size * std::mem::size_of::<f32>()
    }

    /// The 8-bit pixels after resizing and cropping (what torchvision hands to ToTensor). Errors
    /// only for a malformed `img` (empty, or `data` not `width x height x 3` bytes).
    pub fn pixels(&self, img: &Rgb8) -> Result<Rgb8, TransformError> {
        img.check()?;
        let s = self.size;
        if s >= 384 {
            return Ok(resize_window(img, s, s, 0, 0, s, s)?);
        }
        let short_target = (s as f64 / self.crop_pct) as usize;
        let (w, h) = (img.width, img.height);
        // torchvision: the shorter side becomes the target, the longer int(target * long / short).
        // (The product is at most 292 x 2^26 for a decoded image; computed in u128 regardless.)
        let long = |long: usize, short: usize| {
            ((short_target as u128 * long as u128) as f64 / short as f64) as usize
        };
        let (out_w, out_h) = if w <= h {
            (short_target, long(h, w))
        } else {
            (long(w, h), short_target)
        };
        // CenterCrop: int(round((size_in - size_out) / 2.0)), Python's round half to even.
        let left = ((out_w - s) as f64 / 2.0).round_ties_even() as usize;
        let top = ((out_h - s) as f64 / 2.0).round_ties_even() as usize;
        Ok(resize_window(img, out_w, out_h, left, top, s, s)?)
    }

    /// Normalised CHW floats: `(v / 255 - mean) / std` in f32, as ToTensor + Normalize compute.
    pub fn apply(&self, img: &Rgb8) -> Result<Vec<f32>, TransformError> {
        Ok(to_chw_normalized(&self.pixels(img)?))
    }
}

/// `px` as normalised CHW floats. `px` should be well-formed ([`Rgb8::check`]): only the whole
/// pixels present, up to `width x height`, are converted (no panic on a malformed image).
pub fn to_chw_normalized(px: &Rgb8) -> Vec<f32> {
    let plane = px.width.saturating_mul(px.height).min(px.data.len() / 3);
    let mut out = vec![0f32; 3 * plane];
    for (i, p) in px.data.chunks_exact(3).take(plane).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (p[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    out
}

/// ToTensor + Normalize of `px` (mirrored left-right when `flip`) into `out` (`[3, h, w]`),
/// with the same f32 arithmetic as [`to_chw_normalized`]:
/// `(v / 255 - mean) / std`.
pub fn normalize_into(px: &Rgb8, flip: bool, out: &mut [f32]) -> Result<(), TransformError> {
    let (w, h) = (px.width, px.height);
    let plane = w * h;
    for len in [out.len(), px.data.len()] {
        if len != 3 * plane {
            return Err(TransformError::Buffer(len, 3 * plane));
        }
    }
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
    Ok(())
}
