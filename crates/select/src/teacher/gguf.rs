//! llama.cpp GGUF teachers: hyper-parameters from the `llama.*` metadata, weights by their GGUF
//! names, q/k rows in the interleaved rotary order llama.cpp's converter writes them in.

use super::{
    fingerprint_of_files, Result, TeacherCheckpoint, TeacherConfig, TeacherLayout, Weight,
};
use crate::error::SelectError;
use crate::matrix::{RowBlock, RowSource};
use illama_formats::gguf::{GgmlType, GgufFile};
use illama_formats::DType;
use std::path::{Path, PathBuf};

/// The one `.gguf` file of a folder that holds no other checkpoint (no `config.json`,
/// safetensors or `.bin`), so that `--from folder/` works as it does for the other layouts.
pub(super) fn only_gguf_in(dir: &Path) -> Result<Option<PathBuf>> {
    if !dir.is_dir() || dir.join("config.json").is_file() {
        return Ok(None);
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| SelectError::Teacher(format!("{}: {e}", dir.display())))?;
    let mut gguf = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") || name.ends_with(".bin") {
            return Ok(None);
        }
        if name.ends_with(".gguf") {
            gguf.push(e.path());
        }
    }
    gguf.sort();
    match gguf.len() {
        0 => Ok(None),
        1 => Ok(gguf.pop()),
        n => Err(SelectError::Teacher(format!(
            "{}: {n} .gguf files ({}); name the one to select from",
            dir.display(),
            gguf.iter()
                .take(4)
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The GGUF name of a weight of `layer`.
pub(super) fn tensor_name(layer: usize, w: Weight) -> String {
    let short = match w {
        Weight::AttnNorm => "attn_norm",
        Weight::FfnNorm => "ffn_norm",
        Weight::Q => "attn_q",
        Weight::K => "attn_k",
        Weight::V => "attn_v",
        Weight::O => "attn_output",
        Weight::Gate => "ffn_gate",
        Weight::Down => "ffn_down",
        Weight::Up => "ffn_up",
    };
    format!("blk.{layer}.{short}.weight")
}

const MATRICES: [Weight; 7] = [
    Weight::Q,
    Weight::K,
    Weight::V,
    Weight::O,
    Weight::Gate,
    Weight::Down,
    Weight::Up,
];

impl TeacherCheckpoint {
    pub(super) fn open_gguf(path: &Path) -> Result<TeacherCheckpoint> {
        let file = GgufFile::open(path)?;
        let config = config(&file)?;
        let dtype = teacher_dtype(&file, &config);
        let fingerprint = fingerprint_of_files(&[path.to_path_buf()])?;
        let t = TeacherCheckpoint {
            path: path.to_path_buf(),
            layout: TeacherLayout::Gguf,
            config,
            dtype,
            gather_dtype: dtype,
            stores: Vec::new(),
            gguf: Some(file),
            hf_prefix: String::new(),
            fingerprint,
            resolved_from: None,
        };
        t.check_all_shapes()?;
        Ok(t)
    }
}

fn config(file: &GgufFile) -> Result<TeacherConfig> {
    let err = |why: String| SelectError::Teacher(format!("{}: {why}", file.path.display()));
    let arch = file
        .metadata
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .ok_or_else(|| err("no general.architecture in the metadata".into()))?;
    if let Some(n) = file.get_u64("split.count")?.filter(|&n| n > 1) {
        return Err(err(format!(
            "part of a GGUF split into {n} files; selection reads one file: merge the parts first (llama.cpp's `llama-gguf-split --merge`)"
        )));
    }
    if arch != "llama" {
        return Err(err(format!(
            "general.architecture is '{}'; selection reads LLaMA teachers ('llama')",
            illama_formats::error::excerpt(arch)
        )));
    }
    let need = |key: &str| -> Result<usize> {
        let v = file
            .get_u64(&format!("llama.{key}"))?
            .ok_or_else(|| err(format!("no llama.{key} in the metadata")))?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| err(format!("llama.{key} is {v}")))
    };
    let hidden = need("embedding_length")?;
    let heads = need("attention.head_count")?;
    let kv_heads = match file.get_u64("llama.attention.head_count_kv")? {
        None => heads,
        Some(v) => usize::try_from(v)
            .ok()
            .filter(|&v| v > 0 && heads % v == 0)
            .ok_or_else(|| {
                err(format!(
                    "llama.attention.head_count_kv is {v} for {heads} heads"
                ))
            })?,
    };
    if hidden % heads != 0 || (hidden / heads) % 2 != 0 {
        return Err(err(format!(
            "llama.embedding_length {hidden} does not split into {heads} heads of an even size"
        )));
    }
    // The rotary permutation is undone per head: a head size other than hidden / heads
    // (Mistral-Nemo's 128 for 5120 / 32) would be undone wrongly.
    for key in ["llama.rope.dimension_count", "llama.attention.key_length"] {
        if let Some(v) = file.get_u64(key)? {
            if v != (hidden / heads) as u64 {
                return Err(err(format!(
                    "{key} is {v}, not embedding_length / head_count = {}: heads of another size than the model width allows are not supported",
                    hidden / heads
                )));
            }
        }
    }
    let layers = need("block_count")?;
    // Every layer holds at least its 9 weights; checked before any loop over the layers, so
    // that a small file claiming 2^40 layers is refused at once.
    if layers > file.tensors.len() / 9 || file.tensor(&tensor_name(layers - 1, Weight::Q)).is_none()
    {
        return Err(err(format!(
            "llama.block_count is {layers}, but the file has no {} ({} tensors in all)",
            tensor_name(layers - 1, Weight::Q),
            file.tensors.len()
        )));
    }
    Ok(TeacherConfig {
        hidden,
        intermediate: need("feed_forward_length")?,
        layers,
        heads: Some(heads),
        kv_heads: Some(kv_heads),
        kv_dim: kv_heads * (hidden / heads),
    })
}

/// The dtype selection writes by default: the weights' own type when every matrix is stored as
/// the same F32, F16 or BF16 (exact, as from the checkpoint the file was converted from), else
/// F32, the type every quantised block dequantises to.
fn teacher_dtype(file: &GgufFile, c: &TeacherConfig) -> DType {
    let mut types = (0..c.layers)
        .flat_map(|l| MATRICES.iter().map(move |&w| tensor_name(l, w)))
        .filter_map(|n| file.tensor(&n).map(|t| t.ggml_type));
    let Some(first) = types.next() else {
        return DType::F32;
    };
    match first {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 if types.all(|t| t == first) => {
            first.plain_dtype().expect("a float type")
        }
        _ => DType::F32,
    }
}

/// One weight of a GGUF teacher as a row block, after checking its shape and type.
pub(super) fn row_block<'a>(
    file: &'a GgufFile,
    c: &TeacherConfig,
    dtype: DType,
    layer: usize,
    w: Weight,
) -> Result<RowBlock<'a>> {
    let name = tensor_name(layer, w);
    let tensor = file.tensor(&name).ok_or_else(|| {
        SelectError::Teacher(format!(
            "the teacher lacks {name} ({})",
            file.path.display()
        ))
    })?;
    let want = w.shape(c);
    if tensor.shape != want {
        return Err(SelectError::Teacher(format!(
            "{}: {name} is {:?}, expected {want:?} for hidden {}, intermediate {}, kv rows {}",
            file.path.display(),
            tensor.shape,
            c.hidden,
            c.intermediate,
            c.kv_dim
        )));
    }
    let readable =
        tensor.ggml_type.dequantizable() || tensor.ggml_type.plain_dtype() == Some(dtype);
    if !readable {
        return Err(SelectError::Teacher(format!(
            "{}: {name} is {}, which this tool cannot dequantise (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K are read)",
            file.path.display(),
            tensor.ggml_type
        )));
    }
    let meta_rope_head_dim = match w {
        Weight::Q | Weight::K => Some(c.hidden / c.heads.expect("GGUF configs have heads")),
        _ => None,
    };
    Ok(RowBlock {
        rows: want[0],
        meta_rope_head_dim,
        source: RowSource::Gguf { file, tensor },
    })
}

impl TeacherCheckpoint {
    /// The ggml types of the weight matrices, each named once (GGUF teachers; empty otherwise).
    pub fn weight_types(&self) -> Vec<String> {
        let Some(file) = &self.gguf else {
            return Vec::new();
        };
        let mut out: Vec<String> = Vec::new();
        for l in 0..self.config.layers {
            for &w in &MATRICES {
                if let Some(t) = file.tensor(&tensor_name(l, w)) {
                    let n = t.ggml_type.name().to_string();
                    if !out.contains(&n) {
                        out.push(n);
                    }
                }
            }
        }
        out
    }
}
