//! The reference's evaluation transform (ConvNeXt/DeiT `build_transform(is_train=False)`) on
//! decoded images: below 384, resize the shorter side to `int(size / 0.875)` and center-crop;
//! from 384 up, warp to size x size; then ToTensor and Normalize with the ImageNet statistics.

use crate::resize::{resize_window, Rgb8};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Default crop fraction of the reference (224 / 256).
pub const CROP_PCT: f64 = 224.0 / 256.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalTransform {
    pub size: usize,
    pub crop_pct: f64,
}

impl EvalTransform {
    pub fn new(size: usize) -> Self {
        EvalTransform {
            size,
            crop_pct: CROP_PCT,
        }
    }

    /// The 8-bit pixels after resizing and cropping (what torchvision hands to ToTensor).
    pub fn pixels(&self, img: &Rgb8) -> Rgb8 {
        let s = self.size;
        if s >= 384 {
            return resize_window(img, s, s, 0, 0, s, s);
        }
        let short_target = (s as f64 / self.crop_pct) as usize;
        let (w, h) = (img.width, img.height);
        // torchvision: the shorter side becomes the target, the longer int(target * long / short).
        let (out_w, out_h) = if w <= h {
            (
                short_target,
                ((short_target * h) as f64 / w as f64) as usize,
            )
        } else {
            (
                ((short_target * w) as f64 / h as f64) as usize,
                short_target,
            )
        };
        // CenterCrop: int(round((size_in - size_out) / 2.0)), Python's round half to even.
        let left = ((out_w - s) as f64 / 2.0).round_ties_even() as usize;
        let top = ((out_h - s) as f64 / 2.0).round_ties_even() as usize;
        resize_window(img, out_w, out_h, left, top, s, s)
    }

    /// Normalised CHW floats: `(v / 255 - mean) / std` in f32, as ToTensor + Normalize compute.
    pub fn apply(&self, img: &Rgb8) -> Vec<f32> {
        to_chw_normalized(&self.pixels(img))
    }
}

pub fn to_chw_normalized(px: &Rgb8) -> Vec<f32> {
    let plane = px.width * px.height;
    let mut out = vec![0f32; 3 * plane];
    for (i, p) in px.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (p[c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    out
}
