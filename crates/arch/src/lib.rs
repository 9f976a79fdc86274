//! What an iLLaMA network is, as numbers and names: the presets (tiny/small/base/large), the MLP
//! width formula, the state-dict keys with their shapes, and the exact parameter count.
//!
//! This crate holds no tensors and no maths; weight selection and the Candle model both build on
//! it so that the two agree on every shape and name. It must not know about files or devices.

use serde::{Deserialize, Serialize};

/// The shape of an iLLaMA network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IllamaConfig {
    /// Embedding width D.
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    /// SwiGLU hidden width H (fc1/fc3 rows, fc2 columns).
    pub mlp_hidden: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    pub num_classes: usize,
    pub img_size: usize,
}

/// The metadata key under which `select` records the student's architecture (an
/// [`IllamaConfig`] as JSON) in its output, so that later commands need no `--model`.
pub const STUDENT_CONFIG_KEY: &str = "student.config";

/// Metadata keys that may hold an [`IllamaConfig`] as JSON, in the order they are tried.
pub const CONFIG_METADATA_KEYS: [&str; 2] = [STUDENT_CONFIG_KEY, "illama.config"];

impl IllamaConfig {
    /// The architecture recorded in a file's metadata (see [`CONFIG_METADATA_KEYS`]), if one
    /// is there and valid.
    pub fn from_metadata(metadata: &std::collections::BTreeMap<String, String>) -> Option<Self> {
        CONFIG_METADATA_KEYS.iter().find_map(|k| {
            serde_json::from_str::<IllamaConfig>(metadata.get(*k)?)
                .ok()
                .filter(|c| c.validate().is_ok())
        })
    }
}

/// The largest input size accepted: 1024 px is 4096 patch tokens of 16 px, whose attention
/// matrices already take 64 MiB per head and image in f32. The paper uses 224 and 384.
pub const MAX_INPUT_SIZE: usize = 1024;

/// An architecture the model cannot be built with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchError {
    #[error("the patch size must be positive")]
    ZeroPatch,
    #[error("input size {size} must be a multiple of {patch} (the patch size) from {patch} to {MAX_INPUT_SIZE}")]
    InputSize { size: usize, patch: usize },
    #[error("every dimension must be positive: {0}")]
    ZeroDimension(String),
    #[error("dim {dim} is not divisible by {heads} heads")]
    Heads { dim: usize, heads: usize },
    #[error("head dim {0} must be even for rotary embeddings")]
    OddHeadDim(usize),
    #[error("unknown architecture '{0}': use tiny, small, base, large or custom:DIM,DEPTH,HEADS[,MLP_HIDDEN]")]
    UnknownSpec(String),
    #[error("a custom architecture needs its width, depth and number of heads")]
    CustomIncomplete,
}

/// Changes to a named architecture (each `None` keeps the preset's value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub dim: Option<usize>,
    pub depth: Option<usize>,
    pub heads: Option<usize>,
    pub mlp_hidden: Option<usize>,
}

impl IllamaConfig {
    /// `tiny`, `small`, `base`, `large`, or `custom:DIM,DEPTH,HEADS[,MLP_HIDDEN]` (the MLP width
    /// defaults to the reference's rule for the width).
    pub fn parse_spec(spec: &str) -> Result<IllamaConfig, ArchError> {
        let bad = || ArchError::UnknownSpec(spec.to_string());
        if let Some(list) = spec.strip_prefix("custom:") {
            let v: Vec<usize> = list
                .split(',')
                .map(|x| x.trim().parse::<usize>())
                .collect::<Result<_, _>>()
                .map_err(|_| bad())?;
            let (dim, depth, heads) = match v[..] {
                [d, l, h] | [d, l, h, _] => (d, l, h),
                _ => return Err(bad()),
            };
            let mut c = IllamaConfig::new(dim, depth, heads);
            if let Some(&m) = v.get(3) {
                c.mlp_hidden = m;
            }
            return Ok(c);
        }
        Preset::parse(spec).map(|p| p.config()).ok_or_else(bad)
    }

    /// A named student (`tiny`..`large`, or `custom` with every override needed) with
    /// `overrides` applied; a new width without a new MLP width gets the reference's MLP width
    /// for it. Returns the name it goes by (the preset's when nothing changed, else `custom`).
    pub fn student(name: &str, o: &Overrides) -> Result<(String, IllamaConfig), ArchError> {
        let base = match name {
            "custom" => {
                let (Some(dim), Some(depth), Some(heads)) = (o.dim, o.depth, o.heads) else {
                    return Err(ArchError::CustomIncomplete);
                };
                IllamaConfig::new(dim, depth, heads)
            }
            other => Preset::parse(other)
                .ok_or_else(|| ArchError::UnknownSpec(other.to_string()))?
                .config(),
        };
        let dim = o.dim.unwrap_or(base.dim);
        let config = IllamaConfig {
            dim,
            depth: o.depth.unwrap_or(base.depth),
            heads: o.heads.unwrap_or(base.heads),
            mlp_hidden: o.mlp_hidden.unwrap_or(if o.dim.is_some() {
                mlp_hidden_for(dim)
            } else {
                base.mlp_hidden
            }),
            ..base
        };
        let name = match Preset::parse(name) {
            Some(p) if config == p.config() => p.name().to_string(),
            _ => "custom".to_string(),
        };
        Ok((name, config))
    }
}

/// An input size must be a positive multiple of the patch size, at most [`MAX_INPUT_SIZE`].
pub fn check_input_size(size: usize, patch_size: usize) -> Result<(), ArchError> {
    if patch_size == 0 {
        return Err(ArchError::ZeroPatch);
    }
    if size == 0 || size % patch_size != 0 || size > MAX_INPUT_SIZE {
        return Err(ArchError::InputSize {
            size,
            patch: patch_size,
        });
    }
    Ok(())
}

/// The named presets of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Tiny,
    Small,
    Base,
    Large,
}

impl Preset {
    pub const ALL: [Preset; 4] = [Preset::Tiny, Preset::Small, Preset::Base, Preset::Large];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Small => "small",
            Preset::Base => "base",
            Preset::Large => "large",
        }
    }

    pub fn parse(s: &str) -> Option<Preset> {
        let s = s.to_ascii_lowercase();
        let s = s
            .strip_prefix("illama_")
            .or_else(|| s.strip_prefix("illama-"))
            .unwrap_or(&s);
        Preset::ALL.into_iter().find(|p| {
            p.name() == s || p.name().starts_with(s) && s.len() == 1 // t, s, b, l
        })
    }

    pub fn config(self) -> IllamaConfig {
        let (dim, depth, heads) = match self {
            Preset::Tiny => (192, 12, 3),
            Preset::Small => (384, 12, 6),
            Preset::Base => (768, 12, 12),
            Preset::Large => (1024, 24, 16),
        };
        IllamaConfig::new(dim, depth, heads)
    }
}

/// The reference MLP width: `int(2 * 4D / 3)` rounded up to a multiple of 256.
pub fn mlp_hidden_for(dim: usize) -> usize {
    const MULTIPLE_OF: usize = 256;
    let h = 2 * (4 * dim) / 3;
    h.div_ceil(MULTIPLE_OF) * MULTIPLE_OF
}

/// Which tensor of a block a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BlockTensor {
    Norm1,
    QkvWeight,
    QkvBias,
    ProjWeight,
    ProjBias,
    Norm2,
    /// gate
    Fc1,
    /// down
    Fc2,
    /// up
    Fc3,
}

impl BlockTensor {
    /// In the reference state dict's order.
    pub const ALL: [BlockTensor; 9] = [
        BlockTensor::Norm1,
        BlockTensor::QkvWeight,
        BlockTensor::QkvBias,
        BlockTensor::ProjWeight,
        BlockTensor::ProjBias,
        BlockTensor::Norm2,
        BlockTensor::Fc1,
        BlockTensor::Fc2,
        BlockTensor::Fc3,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            BlockTensor::Norm1 => "norm1.weight",
            BlockTensor::QkvWeight => "attn.qkv.weight",
            BlockTensor::QkvBias => "attn.qkv.bias",
            BlockTensor::ProjWeight => "attn.proj.weight",
            BlockTensor::ProjBias => "attn.proj.bias",
            BlockTensor::Norm2 => "norm2.weight",
            BlockTensor::Fc1 => "mlp.fc1.weight",
            BlockTensor::Fc2 => "mlp.fc2.weight",
            BlockTensor::Fc3 => "mlp.fc3.weight",
        }
    }

    pub fn key(self, block: usize) -> String {
        format!("blocks.{block}.{}", self.suffix())
    }
}

impl IllamaConfig {
    /// A 224-pixel, 1000-class network with the reference MLP width.
    pub fn new(dim: usize, depth: usize, heads: usize) -> Self {
        IllamaConfig {
            dim,
            depth,
            heads,
            mlp_hidden: mlp_hidden_for(dim),
            patch_size: 16,
            in_chans: 3,
            num_classes: 1000,
            img_size: 224,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }

    /// Patch tokens N = (img / patch)^2.
    pub fn num_patches(&self) -> usize {
        (self.img_size / self.patch_size).pow(2)
    }

    /// Checks the invariants the model relies on.
    pub fn validate(&self) -> Result<(), ArchError> {
        if self.dim == 0 || self.depth == 0 || self.heads == 0 || self.mlp_hidden == 0 {
            return Err(ArchError::ZeroDimension(format!("{self:?}")));
        }
        if self.dim % self.heads != 0 {
            return Err(ArchError::Heads {
                dim: self.dim,
                heads: self.heads,
            });
        }
        if self.head_dim() % 2 != 0 {
            return Err(ArchError::OddHeadDim(self.head_dim()));
        }
        check_input_size(self.img_size, self.patch_size)
    }

    pub fn block_shape(&self, t: BlockTensor) -> Vec<usize> {
        let (d, h) = (self.dim, self.mlp_hidden);
        match t {
            BlockTensor::Norm1 | BlockTensor::Norm2 | BlockTensor::ProjBias => vec![d],
            BlockTensor::QkvWeight => vec![3 * d, d],
            BlockTensor::QkvBias => vec![3 * d],
            BlockTensor::ProjWeight => vec![d, d],
            BlockTensor::Fc1 | BlockTensor::Fc3 => vec![h, d],
            BlockTensor::Fc2 => vec![d, h],
        }
    }

    /// Every state-dict key with its shape, in the reference order.
    pub fn state_dict_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let d = self.dim;
        let mut out = vec![
            ("cls_token".to_string(), vec![1, 1, d]),
            ("pos_embed".to_string(), vec![1, self.num_patches() + 1, d]),
            (
                "patch_embed.proj.weight".to_string(),
                vec![d, self.in_chans, self.patch_size, self.patch_size],
            ),
            ("patch_embed.proj.bias".to_string(), vec![d]),
        ];
        for i in 0..self.depth {
            for t in BlockTensor::ALL {
                out.push((t.key(i), self.block_shape(t)));
            }
        }
        out.push(("norm.weight".to_string(), vec![d]));
        out.push(("head.weight".to_string(), vec![self.num_classes, d]));
        out.push(("head.bias".to_string(), vec![self.num_classes]));
        out
    }

    pub fn parameter_count(&self) -> usize {
        self.state_dict_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_and_students_resolve_as_the_cli_documents() {
        assert_eq!(
            IllamaConfig::parse_spec("base").unwrap(),
            Preset::Base.config()
        );
        let c = IllamaConfig::parse_spec("custom:48,2,2,128").unwrap();
        assert_eq!((c.dim, c.depth, c.heads, c.mlp_hidden), (48, 2, 2, 128));
        let c = IllamaConfig::parse_spec("custom:512,8,8").unwrap();
        assert_eq!(c.mlp_hidden, mlp_hidden_for(512));
        for bad in ["huge", "custom:1,2", "custom:a,b,c", "custom:1,2,3,4,5"] {
            assert!(IllamaConfig::parse_spec(bad).is_err(), "{bad}");
        }
        let none = Overrides::default();
        assert_eq!(
            IllamaConfig::student("tiny", &none).unwrap(),
            ("tiny".to_string(), Preset::Tiny.config())
        );
        let deeper = Overrides {
            depth: Some(6),
            ..none
        };
        let (name, c) = IllamaConfig::student("tiny", &deeper).unwrap();
        assert_eq!((name.as_str(), c.depth, c.dim), ("custom", 6, 192));
        let wider = Overrides {
            dim: Some(256),
            ..none
        };
        assert_eq!(
            IllamaConfig::student("tiny", &wider).unwrap().1.mlp_hidden,
            mlp_hidden_for(256)
        );
        assert_eq!(
            IllamaConfig::student("custom", &deeper),
            Err(ArchError::CustomIncomplete)
        );
    }

    #[test]
    fn input_sizes_are_positive_multiples_of_the_patch_within_bounds() {
        for ok in [16, 224, 384, MAX_INPUT_SIZE] {
            assert!(check_input_size(ok, 16).is_ok(), "{ok}");
        }
        for bad in [0, 8, 225, MAX_INPUT_SIZE + 16, 65536] {
            let e = check_input_size(bad, 16).unwrap_err();
            assert_eq!(
                e,
                ArchError::InputSize {
                    size: bad,
                    patch: 16
                }
            );
            assert!(e.to_string().contains("multiple of 16"), "{e}");
        }
        let zero = IllamaConfig {
            img_size: 0,
            ..Preset::Tiny.config()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn parameter_counts_match_the_reference_logs() {
        assert_eq!(Preset::Tiny.config().parameter_count(), 5_701_096);
        assert_eq!(Preset::Small.config().parameter_count(), 22_018_024);
        assert_eq!(Preset::Base.config().parameter_count(), 86_502_376);
        assert_eq!(Preset::Large.config().parameter_count(), 310_445_032);
        let base384 = IllamaConfig {
            img_size: 384,
            ..Preset::Base.config()
        };
        assert_eq!(base384.parameter_count(), 86_794_216);
        // The in21k logs' counts (93,769,426 and 320,131,282) are those of a 10,450-class head
        // (ImageNet-21K-P), not of the 21,841-class head the spec's table names.
        let base21k = IllamaConfig {
            num_classes: 10450,
            ..Preset::Base.config()
        };
        assert_eq!(base21k.parameter_count(), 93_769_426);
        let large21k = IllamaConfig {
            num_classes: 10450,
            ..Preset::Large.config()
        };
        assert_eq!(large21k.parameter_count(), 320_131_282);
    }

    #[test]
    fn mlp_widths() {
        let widths: Vec<usize> = Preset::ALL.iter().map(|p| p.config().mlp_hidden).collect();
        assert_eq!(widths, [512, 1024, 2048, 2816]);
        assert_eq!(mlp_hidden_for(4096), 11008);
    }

    #[test]
    fn preset_names() {
        assert_eq!(Preset::parse("base"), Some(Preset::Base));
        assert_eq!(Preset::parse("illama_tiny"), Some(Preset::Tiny));
        assert_eq!(Preset::parse("B"), Some(Preset::Base));
        assert_eq!(Preset::parse("huge"), None);
        assert!(Preset::Tiny.config().validate().is_ok());
        assert!(IllamaConfig::new(100, 2, 3).validate().is_err());
    }
}
