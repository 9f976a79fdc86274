//! timm 0.5.4's RandAugment policy strings and per-image sampling.

use super::ops::{Resample, Transform};
use crate::Rgb8;
use rand::Rng;
use rand_distr::{Distribution, Normal};
use std::fmt;
use std::str::FromStr;

/// timm's `_LEVEL_DENOM`: magnitude 10 is the nominal maximum of every level function.
pub const LEVEL_DENOM: f64 = 10.0;

/// An operation name of timm's RandAugment lists (`_RAND_TRANSFORMS` and
/// `_RAND_INCREASING_TRANSFORMS`), each with its level-to-argument function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpName {
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    PosterizeIncreasing,
    Solarize,
    SolarizeIncreasing,
    SolarizeAdd,
    Color,
    ColorIncreasing,
    Contrast,
    ContrastIncreasing,
    Brightness,
    BrightnessIncreasing,
    Sharpness,
    SharpnessIncreasing,
    ShearX,
    ShearY,
    TranslateXRel,
    TranslateYRel,
}

/// timm's `_RAND_TRANSFORMS`, in its order.
pub const RAND_TRANSFORMS: [OpName; 15] = [
    OpName::AutoContrast,
    OpName::Equalize,
    OpName::Invert,
    OpName::Rotate,
    OpName::Posterize,
    OpName::Solarize,
    OpName::SolarizeAdd,
    OpName::Color,
    OpName::Contrast,
    OpName::Brightness,
    OpName::Sharpness,
    OpName::ShearX,
    OpName::ShearY,
    OpName::TranslateXRel,
    OpName::TranslateYRel,
];

/// timm's `_RAND_INCREASING_TRANSFORMS` (`inc1`), in its order.
pub const RAND_INCREASING_TRANSFORMS: [OpName; 15] = [
    OpName::AutoContrast,
    OpName::Equalize,
    OpName::Invert,
    OpName::Rotate,
    OpName::PosterizeIncreasing,
    OpName::SolarizeIncreasing,
    OpName::SolarizeAdd,
    OpName::ColorIncreasing,
    OpName::ContrastIncreasing,
    OpName::BrightnessIncreasing,
    OpName::SharpnessIncreasing,
    OpName::ShearX,
    OpName::ShearY,
    OpName::TranslateXRel,
    OpName::TranslateYRel,
];

/// timm's `_RAND_CHOICE_WEIGHTS_0`, by position in either list (timm looks them up by the names
/// of `_RAND_TRANSFORMS` even with `inc1`).
pub const RAND_CHOICE_WEIGHTS_0: [f64; 15] = [
    0.025, 0.005, 0.0, 0.3, 0.0, 0.005, 0.005, 0.025, 0.005, 0.005, 0.025, 0.2, 0.2, 0.1, 0.1,
];

impl OpName {
    /// The name timm uses.
    pub fn as_str(self) -> &'static str {
        match self {
            OpName::AutoContrast => "AutoContrast",
            OpName::Equalize => "Equalize",
            OpName::Invert => "Invert",
            OpName::Rotate => "Rotate",
            OpName::Posterize => "Posterize",
            OpName::PosterizeIncreasing => "PosterizeIncreasing",
            OpName::Solarize => "Solarize",
            OpName::SolarizeIncreasing => "SolarizeIncreasing",
            OpName::SolarizeAdd => "SolarizeAdd",
            OpName::Color => "Color",
            OpName::ColorIncreasing => "ColorIncreasing",
            OpName::Contrast => "Contrast",
            OpName::ContrastIncreasing => "ContrastIncreasing",
            OpName::Brightness => "Brightness",
            OpName::BrightnessIncreasing => "BrightnessIncreasing",
            OpName::Sharpness => "Sharpness",
            OpName::SharpnessIncreasing => "SharpnessIncreasing",
            OpName::ShearX => "ShearX",
            OpName::ShearY => "ShearY",
            OpName::TranslateXRel => "TranslateXRel",
            OpName::TranslateYRel => "TranslateYRel",
        }
    }

    /// Whether the level function negates its argument with probability 0.5.
    pub fn is_signed(self) -> bool {
        matches!(
            self,
            OpName::Rotate
                | OpName::ColorIncreasing
                | OpName::ContrastIncreasing
                | OpName::BrightnessIncreasing
                | OpName::SharpnessIncreasing
                | OpName::ShearX
                | OpName::ShearY
                | OpName::TranslateXRel
                | OpName::TranslateYRel
        )
    }

    /// timm's level function: the operation and its argument at `magnitude` (already clipped),
    /// negated where the op is signed and `negate` is true (ignored otherwise).
    pub fn to_transform(self, magnitude: f64, negate: bool, translate_pct: f64) -> Transform {
        let level = magnitude / LEVEL_DENOM;
        let sign = |v: f64| if negate { -v } else { v };
        // Python's int() of a non-negative float truncates.
        let posterize_bits = (level * 4.0) as i32;
        let solarize_thresh = (level * 256.0) as i32;
        let enhance = level * 1.8 + 0.1;
        let enhance_inc = (1.0 + sign(level * 0.9)).max(0.1);
        match self {
            OpName::AutoContrast => Transform::AutoContrast,
            OpName::Equalize => Transform::Equalize,
            OpName::Invert => Transform::Invert,
            OpName::Rotate => Transform::Rotate(sign(level * 30.0)),
            OpName::Posterize => Transform::Posterize(posterize_bits),
            OpName::PosterizeIncreasing => Transform::Posterize(4 - posterize_bits),
            OpName::Solarize => Transform::Solarize(solarize_thresh),
            OpName::SolarizeIncreasing => Transform::Solarize(256 - solarize_thresh),
            OpName::SolarizeAdd => Transform::SolarizeAdd((level * 110.0) as i32),
            OpName::Color => Transform::Color(enhance),
            OpName::ColorIncreasing => Transform::Color(enhance_inc),
            OpName::Contrast => Transform::Contrast(enhance),
            OpName::ContrastIncreasing => Transform::Contrast(enhance_inc),
            OpName::Brightness => Transform::Brightness(enhance),
            OpName::BrightnessIncreasing => Transform::Brightness(enhance_inc),
            OpName::Sharpness => Transform::Sharpness(enhance),
            OpName::SharpnessIncreasing => Transform::Sharpness(enhance_inc),
            OpName::ShearX => Transform::ShearX(sign(level * 0.3)),
            OpName::ShearY => Transform::ShearY(sign(level * 0.3)),
            OpName::TranslateXRel => Transform::TranslateXRel(sign(level * translate_pct)),
            OpName::TranslateYRel => Transform::TranslateYRel(sign(level * translate_pct)),
        }
    }
}

impl fmt::Display for OpName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a policy string was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("augmentation policy {0:?}: only 'rand-...' (RandAugment) or 'none' are supported")]
    NotRand(String),
    #[error(
        "RandAugment section {0:?} has no value (expected e.g. m9, n2, mstd0.5, inc1, mmax10, w0)"
    )]
    MissingValue(String),
    #[error("unknown RandAugment section {0:?} (known: m, n, mstd, mmax, inc, w)")]
    UnknownSection(String),
    #[error("RandAugment section {section:?}: {value:?} is not {expected}")]
    BadValue {
        section: String,
        value: String,
        expected: &'static str,
    },
    #[error("RandAugment weight set w{0}: only w0 exists")]
    UnknownWeights(u64),
    #[error("RandAugment with weights draws without replacement: n{layers} exceeds the {nonzero} ops of non-zero weight")]
    TooManyLayers { layers: usize, nonzero: usize },
}

/// A parsed `rand-...` policy (timm's `rand_augment_transform` grammar).
#[derive(Debug, Clone, PartialEq)]
pub struct RandAugmentConfig {
    /// `m`: magnitude (integer), default 10.
    pub magnitude: f64,
    /// `n`: ops per image, default 2.
    pub num_layers: usize,
    /// `mstd`: std of the Gaussian noise on the magnitude; 0 = none; infinite (timm: any value
    /// above 100) = uniform in [0, magnitude].
    pub magnitude_std: f64,
    /// `mmax`: upper clip of the magnitude instead of 10 (`mmax0` means 10, as in timm).
    pub magnitude_max: Option<u64>,
    /// `inc`: the "increasing" op list.
    pub increasing: bool,
    /// `w`: index of a choice-weight set (only 0); ops are then drawn without replacement.
    pub weights: Option<u64>,
}

impl Default for RandAugmentConfig {
    fn default() -> Self {
        RandAugmentConfig {
            magnitude: LEVEL_DENOM,
            num_layers: 2,
            magnitude_std: 0.0,
            magnitude_max: None,
            increasing: false,
            weights: None,
        }
    }
}

/// Parses an augmentation policy: `none` (returns `None`) or timm 0.5.4's
/// `rand-<section>-<section>...` grammar, each section a key followed by a value starting with
/// a digit: `m<int>`, `n<int>`, `mstd<float>`, `mmax<int>`, `inc<int>`, `w<int>`.
///
/// As in timm: sections may come in any order; for `m`, `n`, `w` the last one wins, for `mstd`
/// and `mmax` the first; `inc` followed by any value (even `inc0`) selects the increasing list
/// (timm tests `bool(val)` on the string). Stricter than timm: a section without a digit (which
/// timm skips silently, so `incl` would mean "not increasing") is an error.
pub fn parse_policy(policy: &str) -> Result<Option<RandAugmentConfig>, PolicyError> {
    if policy == "none" {
        return Ok(None);
    }
    let mut sections = policy.split('-');
    if sections.next() != Some("rand") {
        return Err(PolicyError::NotRand(policy.to_string()));
    }
    let mut cfg = RandAugmentConfig::default();
    let mut mstd_set = false;
    for section in sections {
        let Some(split) = section.find(|c: char| c.is_ascii_digit()) else {
            return Err(PolicyError::MissingValue(section.to_string()));
        };
        let (key, val) = section.split_at(split);
        let int = |expected| {
            val.parse::<u64>().map_err(|_| PolicyError::BadValue {
                section: section.to_string(),
                value: val.to_string(),
                expected,
            })
        };
        match key {
            "mstd" => {
                let v: f64 = val.parse().map_err(|_| PolicyError::BadValue {
                    section: section.to_string(),
                    value: val.to_string(),
                    expected: "a number",
                })?;
                if !mstd_set {
                    cfg.magnitude_std = if v > 100.0 { f64::INFINITY } else { v };
                    mstd_set = true;
                }
            }
            "mmax" => {
                let v = int("an integer")?;
                if cfg.magnitude_max.is_none() {
                    cfg.magnitude_max = Some(v);
                }
            }
            "inc" => cfg.increasing = true,
            "m" => cfg.magnitude = int("an integer")? as f64,
            "n" => {
                cfg.num_layers =
                    int("an integer")?
                        .try_into()
                        .map_err(|_| PolicyError::BadValue {
                            section: section.to_string(),
                            value: val.to_string(),
                            expected: "a layer count",
                        })?
            }
            "w" => cfg.weights = Some(int("an integer")?),
            _ => return Err(PolicyError::UnknownSection(section.to_string())),
        }
    }
    if let Some(w) = cfg.weights {
        if w != 0 {
            return Err(PolicyError::UnknownWeights(w));
        }
        let nonzero = RAND_CHOICE_WEIGHTS_0.iter().filter(|&&p| p > 0.0).count();
        if cfg.num_layers > nonzero {
            return Err(PolicyError::TooManyLayers {
                layers: cfg.num_layers,
                nonzero,
            });
        }
    }
    Ok(Some(cfg))
}

impl FromStr for RandAugmentConfig {
    type Err = PolicyError;

    /// A `rand-...` policy; `none` is refused here (use [`parse_policy`]).
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        parse_policy(s)?.ok_or_else(|| PolicyError::NotRand(s.to_string()))
    }
}

/// Resampling of the geometric ops (timm's `interpolation` hparam; without it timm picks
/// bilinear or bicubic at random for each geometric op applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    Bilinear,
    Bicubic,
    Random,
}

/// The hparams timm's train transform passes to RandAugment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hparams {
    /// Fill colour of pixels the geometric ops uncover (timm's `img_mean`).
    pub fill: [u8; 3],
    pub interpolation: Interpolation,
    /// Range of the relative translations (timm's `translate_pct`, default 0.45).
    pub translate_pct: f64,
}

impl Hparams {
    /// timm 0.5.4's `transforms_imagenet_train` with the ImageNet mean and `interpolation =
    /// 'bicubic'`: fill `round(255 * mean)` = (124, 116, 104), bicubic, 0.45.
    pub fn imagenet_bicubic() -> Self {
        Hparams {
            fill: [124, 116, 104],
            interpolation: Interpolation::Bicubic,
            translate_pct: 0.45,
        }
    }
}

/// What the sampler decided for one of the `n` op slots of an image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub op: OpName,
    /// `None`: the op was drawn but skipped (probability 1 - 0.5).
    pub applied: Option<Applied>,
}

/// An applied op: its clipped magnitude and the resulting operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Applied {
    pub magnitude: f64,
    pub transform: Transform,
    pub resample: Resample,
}

/// timm's `RandAugment` with its `AugmentOp`s (probability 0.5 each).
#[derive(Debug, Clone)]
pub struct RandAugment {
    ops: &'static [OpName; 15],
    num_layers: usize,
    magnitude: f64,
    magnitude_std: f64,
    upper_bound: f64,
    /// Cumulative-free weights for drawing without replacement (`w0`).
    weights: Option<[f64; 15]>,
    prob: f64,
    hparams: Hparams,
    normal: Option<Normal<f64>>,
}

impl RandAugment {
    pub fn new(config: &RandAugmentConfig, hparams: Hparams) -> Self {
        let ops = if config.increasing {
            &RAND_INCREASING_TRANSFORMS
        } else {
            &RAND_TRANSFORMS
        };
        // timm: `self.magnitude_max or _LEVEL_DENOM`, so 0 means 10.
        let upper_bound = match config.magnitude_max {
            Some(m) if m > 0 => m as f64,
            _ => LEVEL_DENOM,
        };
        let std = config.magnitude_std;
        let normal = (std > 0.0 && std.is_finite())
            .then(|| Normal::new(config.magnitude, std).expect("finite positive std"));
        RandAugment {
            ops,
            num_layers: config.num_layers,
            magnitude: config.magnitude,
            magnitude_std: std,
            upper_bound,
            weights: config.weights.map(|_| RAND_CHOICE_WEIGHTS_0),
            prob: 0.5,
            hparams,
            normal,
        }
    }

    /// The op list drawn from.
    pub fn ops(&self) -> &[OpName; 15] {
        self.ops
    }

    pub fn hparams(&self) -> &Hparams {
        &self.hparams
    }

    /// Draws the ops for one image into `steps` (cleared first), in application order.
    pub fn sample_into<R: Rng + ?Sized>(&self, rng: &mut R, steps: &mut Vec<Step>) {
        steps.clear();
        let mut chosen = [false; 15];
        for _ in 0..self.num_layers {
            let idx = match &self.weights {
                None => rng.random_range(0..self.ops.len()),
                Some(w) => {
                    // Successive draws without replacement, proportional to the weights
                    // (numpy's choice(replace=False, p=w) has this distribution).
                    let total: f64 = (0..15).filter(|&i| !chosen[i]).map(|i| w[i]).sum();
                    let mut u = rng.random::<f64>() * total;
                    let mut pick = None;
                    for i in (0..15).filter(|&i| !chosen[i] && w[i] > 0.0) {
                        pick = Some(i);
                        if u < w[i] {
                            break;
                        }
                        u -= w[i];
                    }
                    let i = pick.expect("num_layers checked against the non-zero weights");
                    chosen[i] = true;
                    i
                }
            };
            let op = self.ops[idx];
            steps.push(Step {
                op,
                applied: self.draw_application(op, rng),
            });
        }
    }

    /// `AugmentOp.__call__` without the image: skip with probability 1 - prob, else draw and
    /// clip the magnitude, the sign and the filter.
    fn draw_application<R: Rng + ?Sized>(&self, op: OpName, rng: &mut R) -> Option<Applied> {
        if self.prob < 1.0 && rng.random::<f64>() > self.prob {
            return None;
        }
        let mut magnitude = self.magnitude;
        if self.magnitude_std > 0.0 {
            magnitude = match &self.normal {
                Some(normal) => normal.sample(rng),
                None => magnitude * rng.random::<f64>(),
            };
        }
        let magnitude = magnitude.min(self.upper_bound).max(0.0);
        let negate = op.is_signed() && rng.random::<f64>() > 0.5;
        let transform = op.to_transform(magnitude, negate, self.hparams.translate_pct);
        let resample = match self.hparams.interpolation {
            Interpolation::Bicubic => Resample::Bicubic,
            Interpolation::Bilinear => Resample::Bilinear,
            Interpolation::Random if transform.is_geometric() => {
                if rng.random::<bool>() {
                    Resample::Bicubic
                } else {
                    Resample::Bilinear
                }
            }
            Interpolation::Random => Resample::Bilinear,
        };
        Some(Applied {
            magnitude,
            transform,
            resample,
        })
    }

    /// Augments one image in place. `scratch` is a reusable buffer (any content).
    pub fn apply_with<R: Rng + ?Sized>(
        &self,
        img: &mut Rgb8,
        rng: &mut R,
        steps: &mut Vec<Step>,
        scratch: &mut Vec<u8>,
    ) {
        self.sample_into(rng, steps);
        for step in steps.iter() {
            if let Some(a) = step.applied {
                a.transform
                    .apply(img, self.hparams.fill, a.resample, scratch);
            }
        }
    }

    /// Augments one image in place (allocates its scratch buffers; see [`Self::apply_with`]).
    pub fn apply<R: Rng + ?Sized>(&self, img: &mut Rgb8, rng: &mut R) {
        let mut steps = Vec::with_capacity(self.num_layers);
        let mut scratch = Vec::new();
        self.apply_with(img, rng, &mut steps, &mut scratch);
    }
}
