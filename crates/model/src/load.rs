//! Building an [`Illama`] from a checkpoint: reading tensors through `formats`, inferring the
//! architecture from their shapes, strict key checking, and position-embedding resizing.

use crate::model::Illama;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use illama_arch::{IllamaConfig, Preset};
use illama_formats::{OpenOptions, TensorStore};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Format(#[from] illama_formats::FormatError),
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {why}")]
    Checkpoint { path: PathBuf, why: String },
    /// The tensors do not describe an iLLaMA model the loader can build.
    #[error("{path}: {why}")]
    Shape { path: PathBuf, why: ShapeError },
}

/// What the tensors' shapes (and the file's metadata) fail to tell about the architecture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("no tensor '{0}': not an iLLaMA checkpoint")]
    MissingTensor(&'static str),
    #[error("{tensor} is {shape:?}, not {want}")]
    WrongRank {
        tensor: &'static str,
        shape: Vec<usize>,
        want: &'static str,
    },
    #[error("pos_embed holds {tokens} rows, not a square grid plus the class token")]
    NotSquareGrid { tokens: usize },
    #[error("width {width} matches no preset and the file records no architecture, so the number of heads is unknown: give the architecture")]
    HeadsUnknown { width: usize },
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The architecture; `None` infers it from the tensor shapes.
    pub config: Option<IllamaConfig>,
    /// Input size to run at; position embeddings are interpolated when it differs from the
    /// checkpoint's.
    pub img_size: Option<usize>,
    pub device: Device,
    pub dtype: DType,
    /// Entry of a training checkpoint to read (`model`, `model_ema`); default automatic.
    pub key: Option<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            config: None,
            img_size: None,
            device: Device::Cpu,
            dtype: DType::F32,
            key: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadReport {
    pub path: PathBuf,
    pub config: IllamaConfig,
    /// How the architecture was decided.
    pub config_source: String,
    /// Grid size the position embeddings were interpolated from, if they were.
    pub interpolated_from: Option<usize>,
    pub tensors: usize,
}

/// Why a `--device` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device '{0}': use cpu or cuda:N")]
    Unknown(String),
    #[error(
        "device {0}: this build has no CUDA support (build with --features cuda, see docs/gpu.md)"
    )]
    NoCudaSupport(String),
    /// The driver library loaded but did not initialise (no GPU, a driver too old for the
    /// build's CUDA version, no access to the device files).
    #[error("device {device}: the CUDA driver (libcuda.so.1) did not initialise: {why}")]
    NoDriver { device: String, why: String },
    #[error("device {device}: GPU ordinal {ordinal} asked for, the CUDA driver (libcuda.so.1) found {count} GPU(s){}",
        if *count > 0 { format!(" (ordinals 0 to {})", count - 1) } else { String::new() })]
    NoSuchGpu {
        device: String,
        ordinal: usize,
        count: usize,
    },
    #[error("device {device}: {why}")]
    Cuda { device: String, why: String },
}

/// `cpu`, `cuda` (= `cuda:0`), `cuda:N`.
///
/// For CUDA the driver is asked how many GPUs it sees before one is opened, so that a wrong
/// ordinal or a machine without a GPU is named as such. (A CUDA build links libcuda.so.1 and the
/// CUDA libraries: where they are missing, the dynamic loader refuses to start the program.)
pub fn parse_device(s: &str) -> Result<Device, DeviceError> {
    match s {
        "cpu" => Ok(Device::Cpu),
        _ if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = s
                .strip_prefix("cuda:")
                .map_or(Ok(0), |n| n.parse::<usize>())
                .map_err(|_| DeviceError::Unknown(s.to_string()))?;
            cuda_device(s, ordinal)
        }
        _ => Err(DeviceError::Unknown(s.to_string())),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(s: &str, _ordinal: usize) -> Result<Device, DeviceError> {
    Err(DeviceError::NoCudaSupport(s.to_string()))
}

#[cfg(feature = "cuda")]
fn cuda_device(s: &str, ordinal: usize) -> Result<Device, DeviceError> {
    use candle_core::cuda_backend::cudarc::driver::CudaContext;
    let count = CudaContext::device_count().map_err(|e| DeviceError::NoDriver {
        device: s.to_string(),
        why: e.to_string(),
    })?;
    let count = usize::try_from(count).unwrap_or(0);
    if ordinal >= count {
        return Err(DeviceError::NoSuchGpu {
            device: s.to_string(),
            ordinal,
            count,
        });
    }
    Device::new_cuda(ordinal).map_err(|e| DeviceError::Cuda {
        device: s.to_string(),
        why: e.to_string(),
    })
}

fn candle_dtype(d: illama_formats::DType) -> Option<DType> {
    use illama_formats::DType as F;
    Some(match d {
        F::F32 => DType::F32,
        F::F16 => DType::F16,
        F::BF16 => DType::BF16,
        F::F64 => DType::F64,
        F::U8 => DType::U8,
        F::U32 => DType::U32,
        F::I64 => DType::I64,
        _ => return None,
    })
}

/// The checkpoint at `path`, its tensors taken from entry `key` (default: automatic).
fn open_store(path: &Path, key: Option<&str>) -> Result<TensorStore, LoadError> {
    Ok(TensorStore::open_with(
        path,
        &OpenOptions {
            key: key.map(String::from),
            strip_prefix: None,
        },
    )?)
}

/// Every tensor of a checkpoint as a CPU candle tensor, by name.
pub fn read_tensors(
    path: &Path,
    key: Option<&str>,
) -> Result<(HashMap<String, Tensor>, TensorStore), LoadError> {
    let store = open_store(path, key)?;
    let mut out = HashMap::with_capacity(store.tensors().len());
    for t in store.tensors() {
        let dtype = candle_dtype(t.dtype).ok_or_else(|| LoadError::Checkpoint {
            path: path.to_path_buf(),
            why: format!(
                "tensor {} has dtype {}, which the model cannot use",
                t.name, t.dtype
            ),
        })?;
        let bytes = store.bytes(t)?;
        let tensor = Tensor::from_raw_buffer(&bytes, dtype, &t.shape, &Device::Cpu)?;
        out.insert(t.name.clone(), tensor);
    }
    Ok((out, store))
}

/// Tensor shapes by name: what architecture inference looks at.
pub type Shapes = HashMap<String, Vec<usize>>;

fn shapes_of(map: &HashMap<String, Tensor>) -> Shapes {
    map.iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect()
}

/// The architecture the tensors describe. Heads are not visible in shapes: they come from the
/// file's metadata (`student.config`, written by `select`), else from the preset of that width;
/// with neither, an error that asks for `--model`.
pub fn infer_config(
    shapes: &Shapes,
    metadata: &std::collections::BTreeMap<String, String>,
) -> Result<(IllamaConfig, String), ShapeError> {
    let (base, heads) = infer_shapes(shapes, metadata)?;
    heads
        .map(|(heads, how)| (IllamaConfig { heads, ..base }, how))
        .ok_or(ShapeError::HeadsUnknown { width: base.dim })
}

/// Everything but the heads from the shapes (the returned config's `heads` is 1), and the heads
/// with how they were found, when the metadata or a preset tells.
#[allow(clippy::type_complexity)]
fn infer_shapes(
    shapes: &Shapes,
    metadata: &std::collections::BTreeMap<String, String>,
) -> Result<(IllamaConfig, Option<(usize, String)>), ShapeError> {
    let need = |name: &'static str| {
        shapes
            .get(name)
            .cloned()
            .ok_or(ShapeError::MissingTensor(name))
    };
    let cls = need("cls_token")?;
    let pos = need("pos_embed")?;
    let patch = need("patch_embed.proj.weight")?;
    let fc1 = need("blocks.0.mlp.fc1.weight")?;
    let head = need("head.weight")?;
    let dim = *cls.last().ok_or_else(|| ShapeError::WrongRank {
        tensor: "cls_token",
        shape: cls.clone(),
        want: "[1, 1, D]",
    })?;
    let depth = shapes
        .keys()
        .filter_map(|k| {
            k.strip_prefix("blocks.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |m| m + 1);
    let tokens = pos.get(1).copied().ok_or_else(|| ShapeError::WrongRank {
        tensor: "pos_embed",
        shape: pos.clone(),
        want: "[1, N+1, D]",
    })?;
    let grid = ((tokens.saturating_sub(1)) as f64).sqrt().round() as usize;
    if grid * grid + 1 != tokens {
        return Err(ShapeError::NotSquareGrid { tokens });
    }
    if patch.len() != 4 {
        return Err(ShapeError::WrongRank {
            tensor: "patch_embed.proj.weight",
            shape: patch.clone(),
            want: "[D, C, P, P]",
        });
    }
    let (patch_size, in_chans) = (patch[2], patch[1]);
    let base = IllamaConfig {
        dim,
        depth,
        heads: 1,
        mlp_hidden: fc1[0],
        patch_size,
        in_chans,
        num_classes: head[0],
        img_size: grid * patch_size,
    };
    if let Some(c) = IllamaConfig::from_metadata(metadata) {
        return Ok((
            base,
            Some((c.heads, "shapes, and heads from the file's metadata".into())),
        ));
    }
    let preset = Preset::ALL.iter().find(|p| p.config().dim == dim).map(|p| {
        let heads = p.config().heads;
        (
            heads,
            format!("shapes, {heads} heads as in the {} preset", p.name()),
        )
    });
    Ok((base, preset))
}

/// The architecture of the weights in `path` (entry `key`), for starting a training run from
/// them: the one recorded in its metadata (`select`'s `student.config`), else the one its
/// tensors' shapes describe (see [`infer_config`]). `None` when neither tells.
pub fn config_of(
    path: &Path,
    key: Option<&str>,
) -> Result<Option<(IllamaConfig, String)>, LoadError> {
    // Headers only: the tensors' data is not read.
    let store = open_store(path, key)?;
    let shapes: Shapes = store
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let meta = store.metadata();
    for k in illama_arch::CONFIG_METADATA_KEYS {
        if let Some(c) = meta
            .get(k)
            .and_then(|j| serde_json::from_str::<IllamaConfig>(j).ok())
            .filter(|c| c.validate().is_ok())
        {
            return Ok(Some((c, format!("the file's {k}"))));
        }
    }
    Ok(infer_config(&shapes, meta)
        .ok()
        .filter(|(c, _)| c.heads > 0))
}

/// Loads a model for inference: every expected tensor present with its shape, nothing else.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<(Illama, LoadReport), LoadError> {
    let (mut map, store) = read_tensors(path, opts.key.as_deref())?;
    let bad = |why: String| LoadError::Checkpoint {
        path: path.to_path_buf(),
        why,
    };
    let shape = |why: ShapeError| LoadError::Shape {
        path: path.to_path_buf(),
        why,
    };
    let (config, config_source) = match opts.config {
        Some(c) => {
            let (shapes, _) = infer_shapes(&shapes_of(&map), store.metadata()).map_err(shape)?;
            let c = IllamaConfig {
                img_size: shapes.img_size,
                num_classes: shapes.num_classes,
                ..c
            };
            (c, "given".to_string())
        }
        None => infer_config(&shapes_of(&map), store.metadata()).map_err(shape)?,
    };
    let expected = config.state_dict_shapes();
    let expected_names: std::collections::HashSet<&str> =
        expected.iter().map(|(n, _)| n.as_str()).collect();
    let missing: Vec<&str> = expected
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !map.contains_key(*n))
        .collect();
    let mut unexpected: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|n| !expected_names.contains(n))
        .collect();
    unexpected.sort();
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(bad(format!(
            "does not match iLLaMA {config:?}:\n  missing: {}\n  unexpected: {}",
            list(&missing),
            list(&unexpected)
        )));
    }
    for (name, shape) in &expected {
        let got = map[name].dims();
        if got != shape.as_slice() {
            return Err(bad(format!(
                "{name} is {got:?}, expected {shape:?} for {config:?}"
            )));
        }
    }

    let mut config = config;
    let mut interpolated_from = None;
    if let Some(size) = opts.img_size {
        if size % config.patch_size != 0 {
            return Err(bad(format!(
                "input size {size} is not a multiple of the patch size {}",
                config.patch_size
            )));
        }
        if size != config.img_size {
            let (g_old, g_new) = (
                config.img_size / config.patch_size,
                size / config.patch_size,
            );
            let pos: Vec<f32> = map["pos_embed"]
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            let resized = crate::pos_embed::interpolate(&pos, config.dim, g_old, g_new)
                .map_err(|e| bad(e.to_string()))?;
            map.insert(
                "pos_embed".into(),
                Tensor::from_vec(resized, (1, g_new * g_new + 1, config.dim), &Device::Cpu)?,
            );
            config.img_size = size;
            interpolated_from = Some(g_old);
        }
    }
    let tensors = map.len();
    let vb = VarBuilder::from_tensors(map, opts.dtype, &opts.device);
    let model = Illama::new(config, vb)?;
    Ok((
        model,
        LoadReport {
            path: path.to_path_buf(),
            config,
            config_source,
            interpolated_from,
            tensors,
        },
    ))
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    const SHOW: usize = 12;
    let mut s = names
        .iter()
        .take(SHOW)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOW {
        s.push_str(&format!(" and {} more", names.len() - SHOW));
    }
    s
}

#[cfg(test)]
mod shape_tests {
    use super::*;

    fn tensors(dim: usize, tokens: usize) -> Shapes {
        let t = |shape: &[usize]| shape.to_vec();
        [
            ("cls_token", t(&[1, 1, dim])),
            ("pos_embed", t(&[1, tokens, dim])),
            ("patch_embed.proj.weight", t(&[dim, 3, 16, 16])),
            ("blocks.0.mlp.fc1.weight", t(&[4 * dim, dim])),
            ("head.weight", t(&[10, dim])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn what_the_shapes_cannot_tell_is_a_typed_error() {
        let none = Default::default();
        // Width 192 is the tiny preset: its heads are known.
        assert_eq!(infer_config(&tensors(192, 197), &none).unwrap().0.heads, 3);
        assert_eq!(
            infer_config(&tensors(40, 197), &none),
            Err(ShapeError::HeadsUnknown { width: 40 })
        );
        assert_eq!(
            infer_config(&tensors(192, 198), &none),
            Err(ShapeError::NotSquareGrid { tokens: 198 })
        );
        let mut m = tensors(192, 197);
        m.remove("head.weight");
        assert_eq!(
            infer_config(&m, &none),
            Err(ShapeError::MissingTensor("head.weight"))
        );
    }
}
