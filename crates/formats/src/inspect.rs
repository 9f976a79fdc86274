//! `inspect`: what a checkpoint holds, read from headers and pickles only.

use crate::dtype::DType;
use crate::error::Result;
use crate::store::{Format, NonTensor, OpenOptions, TensorStore};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize)]
pub struct TensorRow {
    pub name: String,
    /// The element type; for a block-quantised GGUF tensor, the type it dequantises to (F32).
    pub dtype: DType,
    /// GGUF only: the ggml storage type (`F16`, `Q8_0`, `Q4_K`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ggml_type: Option<String>,
    pub shape: Vec<usize>,
    pub bytes: u64,
    pub contiguous: bool,
    /// Shard holding the tensor (sharded checkpoints only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileRow {
    pub path: PathBuf,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub path: PathBuf,
    pub format: Format,
    pub files: Vec<FileRow>,
    pub index: Option<PathBuf>,
    /// Where the tensors were taken from (training checkpoints), and why.
    pub root: Option<String>,
    pub tensors: Vec<TensorRow>,
    pub tensor_count: usize,
    pub tensor_bytes: u64,
    /// Elements of all tensors.
    pub parameters: u64,
    /// Elements per dtype.
    pub parameters_by_dtype: BTreeMap<String, u64>,
    pub non_tensors: Vec<NonTensor>,
    /// Entries beside the tensors' root (`optimizer`, `epoch`, `args`).
    pub other_entries: Vec<NonTensor>,
    pub metadata: BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

pub fn inspect(path: &Path, opts: &OpenOptions) -> Result<InspectReport> {
    if path.is_file() && crate::gguf::is_gguf_file(path)? {
        if opts.key.is_some() || opts.strip_prefix.is_some() {
            return Err(crate::FormatError::Invalid(format!(
                "{}: a GGUF file has no entries to choose and no name prefixes to strip",
                path.display()
            )));
        }
        return inspect_gguf(path);
    }
    let mut store = TensorStore::open_with(path, opts)?;
    // Moved, not copied: with the pickle's byte budget, the tree's values are held once.
    let (non_tensors, other_entries) = store.take_non_tensors();
    let sharded = store.index_file().is_some();
    let tensors: Vec<TensorRow> = store
        .tensors()
        .iter()
        .map(|t| TensorRow {
            name: t.name.clone(),
            dtype: t.dtype,
            ggml_type: None,
            shape: t.shape.clone(),
            bytes: t.nbytes(),
            contiguous: t.is_contiguous(),
            file: sharded.then(|| {
                store
                    .file_of(t)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            }),
        })
        .collect();
    let mut by_dtype: BTreeMap<String, u64> = BTreeMap::new();
    for t in store.tensors() {
        *by_dtype.entry(t.dtype.to_string()).or_default() += t.numel();
    }
    let root = store.root_choice().describe();
    Ok(InspectReport {
        path: path.to_path_buf(),
        format: store.format(),
        files: store
            .files()
            .enumerate()
            .map(|(i, p)| FileRow {
                path: p.to_path_buf(),
                bytes: store.file_len(i),
            })
            .collect(),
        index: store.index_file().map(Path::to_path_buf),
        root,
        tensor_count: tensors.len(),
        tensor_bytes: store.total_bytes(),
        parameters: store.tensors().iter().map(|t| t.numel()).sum(),
        parameters_by_dtype: by_dtype,
        tensors,
        non_tensors,
        other_entries,
        metadata: store.metadata().clone(),
        warnings: store.warnings(),
    })
}

/// A GGUF file's tensors with their ggml types, and its metadata (long arrays summarised).
fn inspect_gguf(path: &Path) -> Result<InspectReport> {
    let file = crate::gguf::GgufFile::open(path)?;
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    let tensors: Vec<TensorRow> = file
        .tensors
        .iter()
        .map(|t| {
            *by_type.entry(t.ggml_type.name().to_string()).or_default() += t.numel();
            TensorRow {
                name: t.name.clone(),
                dtype: t.ggml_type.plain_dtype().unwrap_or(DType::F32),
                ggml_type: Some(t.ggml_type.name().to_string()),
                shape: t.shape.clone(),
                bytes: t.nbytes,
                contiguous: true,
                file: None,
            }
        })
        .collect();
    let mut metadata: BTreeMap<String, String> = file
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.summary()))
        .collect();
    metadata.insert("gguf.version".into(), file.version.to_string());
    Ok(InspectReport {
        path: path.to_path_buf(),
        format: Format::Gguf,
        files: vec![FileRow {
            path: path.to_path_buf(),
            bytes: file.len,
        }],
        index: None,
        root: None,
        tensor_count: tensors.len(),
        tensor_bytes: file.tensors.iter().map(|t| t.nbytes).sum(),
        parameters: file.tensors.iter().map(|t| t.numel()).sum(),
        parameters_by_dtype: by_type,
        tensors,
        non_tensors: Vec::new(),
        other_entries: Vec::new(),
        metadata,
        warnings: Vec::new(),
    })
}
