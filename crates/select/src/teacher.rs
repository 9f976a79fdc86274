//! LLaMA teachers: finding them (paths, names in the Hugging Face cache), telling the layouts
//! apart, reading their hyper-parameters, and presenting each weight as one logical matrix.

use crate::error::SelectError;
use crate::matrix::{Matrix, Piece, RowBlock, RowSource};
use illama_formats::gguf::GgufFile;
use illama_formats::{DType, TensorInfo, TensorStore};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

mod gguf;

type Result<T> = std::result::Result<T, SelectError>;

/// How the teacher's files are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeacherLayout {
    /// `config.json` + safetensors or `.bin` (sharded or not), `model.layers.N.self_attn.q_proj`.
    HuggingFace,
    /// `params.json` + `consolidated.NN.pth` model-parallel shards, `layers.N.attention.wq`.
    Meta,
    /// One llama.cpp GGUF file, `blk.N.attn_q.weight`, q/k rows in Meta's interleaved order.
    Gguf,
}

/// The teacher's hyper-parameters, from `config.json`/`params.json`, checked against the files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TeacherConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: Option<usize>,
    pub kv_heads: Option<usize>,
    /// Rows of k_proj/v_proj (`hidden` unless grouped-query attention).
    pub kv_dim: usize,
}

impl TeacherConfig {
    pub fn grouped_query(&self) -> bool {
        self.kv_dim != self.hidden
    }
}

/// The weights of one teacher layer that selection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    AttnNorm,
    FfnNorm,
    Q,
    K,
    V,
    O,
    Gate,
    Down,
    Up,
}

impl Weight {
    fn hf(self) -> &'static str {
        match self {
            Weight::AttnNorm => "input_layernorm.weight",
            Weight::FfnNorm => "post_attention_layernorm.weight",
            Weight::Q => "self_attn.q_proj.weight",
            Weight::K => "self_attn.k_proj.weight",
            Weight::V => "self_attn.v_proj.weight",
            Weight::O => "self_attn.o_proj.weight",
            Weight::Gate => "mlp.gate_proj.weight",
            Weight::Down => "mlp.down_proj.weight",
            Weight::Up => "mlp.up_proj.weight",
        }
    }
    fn meta(self) -> &'static str {
        match self {
            Weight::AttnNorm => "attention_norm.weight",
            Weight::FfnNorm => "ffn_norm.weight",
            Weight::Q => "attention.wq.weight",
            Weight::K => "attention.wk.weight",
            Weight::V => "attention.wv.weight",
            Weight::O => "attention.wo.weight",
            Weight::Gate => "feed_forward.w1.weight",
            Weight::Down => "feed_forward.w2.weight",
            Weight::Up => "feed_forward.w3.weight",
        }
    }
    /// How Meta's model-parallel shards split it: 0 rows, 1 columns, None replicated.
    fn meta_split(self) -> Option<usize> {
        match self {
            Weight::AttnNorm | Weight::FfnNorm => None,
            Weight::Q | Weight::K | Weight::V | Weight::Gate | Weight::Up => Some(0),
            Weight::O | Weight::Down => Some(1),
        }
    }
    /// The full (unsharded) shape.
    fn shape(self, c: &TeacherConfig) -> Vec<usize> {
        match self {
            Weight::AttnNorm | Weight::FfnNorm => vec![c.hidden],
            Weight::Q | Weight::O => vec![c.hidden, c.hidden],
            Weight::K | Weight::V => vec![c.kv_dim, c.hidden],
            Weight::Gate | Weight::Up => vec![c.intermediate, c.hidden],
            Weight::Down => vec![c.hidden, c.intermediate],
        }
    }
}

/// A LLaMA checkpoint opened for selection: its files are memory-mapped, nothing is read yet.
pub struct TeacherCheckpoint {
    pub path: PathBuf,
    pub layout: TeacherLayout,
    pub config: TeacherConfig,
    pub dtype: DType,
    /// One store for Hugging Face; one per model-parallel shard for Meta; none for GGUF.
    stores: Vec<TensorStore>,
    /// The file of a GGUF teacher.
    gguf: Option<GgufFile>,
    /// The element type gathered rows come in: `dtype`, except for GGUF teachers, whose rows
    /// are decoded straight into the output's type (see [`TeacherCheckpoint::gather_in`]).
    gather_dtype: DType,
    /// `model.` for the usual Hugging Face names, empty when the checkpoint lacks it.
    hf_prefix: String,
    /// A cheap identity of the files, not their sha256: the sha256 of the index json, or of each
    /// file's first MiB and size. Read in milliseconds; `--hash-teacher` gives the real digests.
    pub fingerprint: String,
    /// How a name was resolved (`llama2-7b -> ...`), for the summary.
    pub resolved_from: Option<String>,
}

/// Short names for well-known teachers.
pub const ALIASES: [(&str, &str); 8] = [
    ("llama2-7b", "meta-llama/Llama-2-7b-hf"),
    ("llama2-7b-chat", "meta-llama/Llama-2-7b-chat-hf"),
    ("llama2-13b", "meta-llama/Llama-2-13b-hf"),
    ("llama2-70b", "meta-llama/Llama-2-70b-hf"),
    ("llama3-8b", "meta-llama/Meta-Llama-3-8B"),
    ("llama3.1-8b", "meta-llama/Llama-3.1-8B"),
    ("llama3.2-1b", "meta-llama/Llama-3.2-1B"),
    ("mistral-7b", "mistralai/Mistral-7B-v0.1"),
];

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
fn hub_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HF_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            base.join("huggingface")
        });
    home.join("hub")
}

/// Turns what the user typed into a directory or file: an existing path, an alias, or a repo id
/// in the local hub cache. Never touches the network.
pub fn resolve(spec: &str) -> Result<(PathBuf, Option<String>)> {
    let as_path = PathBuf::from(spec);
    if as_path.exists() {
        return Ok((as_path, None));
    }
    let repo = ALIASES
        .iter()
        .find(|(a, _)| a.eq_ignore_ascii_case(spec))
        .map(|(_, r)| r.to_string())
        .unwrap_or_else(|| spec.to_string());
    let mut looked = vec![as_path];
    if repo.contains('/') {
        let dir = hub_cache().join(format!("models--{}", repo.replace('/', "--")));
        let snapshots = dir.join("snapshots");
        // refs/main names the snapshot the hub client would use.
        // refs/main names the snapshot the hub client would use: a commit hash, never a path.
        let refs_main = dir.join("refs").join("main");
        if let Ok(rev) = illama_formats::input::read_text_bounded(&refs_main, 4096, "hub ref") {
            let rev = rev.trim();
            if !is_revision(rev) {
                return Err(SelectError::Teacher(format!(
                    "{}: '{}' is not a revision hash",
                    refs_main.display(),
                    rev.escape_default().take(80).collect::<String>()
                )));
            }
            let snap = snapshots.join(rev);
            if snap.is_dir() {
                return Ok((snap, Some(format!("{spec} -> {repo} (hub cache)"))));
            }
            looked.push(snap);
        }
        let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&snapshots)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| {
                (
                    e.metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH),
                    e.path(),
                )
            })
            .collect();
        found.sort();
        if let Some((_, snap)) = found.pop() {
            return Ok((snap, Some(format!("{spec} -> {repo} (hub cache)"))));
        }
        looked.push(snapshots.join("*"));
    }
    Err(SelectError::TeacherNotFound {
        spec: spec.to_string(),
        looked,
    })
}

/// A hub revision as `refs/main` holds it: a commit hash (hex digits; 40 for git, 64 in some
/// mirrors). Anything else, `..` or a path above all, is refused rather than followed.
fn is_revision(rev: &str) -> bool {
    (7..=64).contains(&rev.len()) && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

impl TeacherCheckpoint {
    /// Opens a teacher given as a path or a model name.
    pub fn open(spec: &str) -> Result<TeacherCheckpoint> {
        let (path, resolved_from) = resolve(spec)?;
        let mut t = Self::open_path(&path)?;
        t.resolved_from = resolved_from;
        Ok(t)
    }

    pub fn open_path(path: &Path) -> Result<TeacherCheckpoint> {
        let dir = match path.parent() {
            _ if path.is_dir() => path.to_path_buf(),
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let meta_shards = meta_shards(&dir)?;
        let is_meta = dir.join("params.json").is_file()
            && (path.is_dir() && !meta_shards.is_empty()
                || path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("consolidated.")));
        if is_meta {
            Self::open_meta(&dir, &meta_shards)
        } else if path.is_file() && illama_formats::gguf::is_gguf_file(path)? {
            Self::open_gguf(path)
        } else if let Some(file) = gguf::only_gguf_in(path)? {
            Self::open_gguf(&file)
        } else {
            Self::open_hf(path, &dir)
        }
    }

    fn open_hf(path: &Path, dir: &Path) -> Result<TeacherCheckpoint> {
        let store = TensorStore::open(path)?;
        let q_suffix = format!("layers.0.{}", Weight::Q.hf());
        let prefix = store
            .tensors()
            .iter()
            .find_map(|t| t.name.strip_suffix(&q_suffix))
            .ok_or_else(|| SelectError::Teacher(format!(
                "{}: no tensor named like model.{q_suffix}: not a LLaMA checkpoint in Hugging Face layout (or Meta layout without params.json)",
                path.display()
            )))?
            .to_string();
        let from_files = infer_hf_config(&store, &prefix)?;
        let config = match read_json(&dir.join("config.json"))? {
            Some(c) => {
                let get = |k: &str| c.get(k).and_then(|v| v.as_u64()).map(|v| v as usize);
                let heads = get("num_attention_heads");
                let declared = TeacherConfig {
                    hidden: get("hidden_size").unwrap_or(from_files.hidden),
                    intermediate: get("intermediate_size").unwrap_or(from_files.intermediate),
                    layers: get("num_hidden_layers").unwrap_or(from_files.layers),
                    heads,
                    kv_heads: get("num_key_value_heads").or(heads),
                    kv_dim: from_files.kv_dim,
                };
                check_declared(&dir.join("config.json"), &declared, &from_files)?;
                declared
            }
            None => from_files,
        };
        let fingerprint = fingerprint(&store)?;
        let q = store.require(&format!("{prefix}layers.0.{}", Weight::Q.hf()))?;
        let t = TeacherCheckpoint {
            path: path.to_path_buf(),
            layout: TeacherLayout::HuggingFace,
            dtype: q.dtype,
            gather_dtype: q.dtype,
            config,
            stores: vec![store],
            gguf: None,
            hf_prefix: prefix,
            fingerprint,
            resolved_from: None,
        };
        t.check_all_shapes()?;
        Ok(t)
    }

    fn open_meta(dir: &Path, shards: &[PathBuf]) -> Result<TeacherCheckpoint> {
        if shards.is_empty() {
            return Err(SelectError::Teacher(format!(
                "{}: params.json but no consolidated.NN.pth",
                dir.display()
            )));
        }
        let params_path = dir.join("params.json");
        let params = read_json(&params_path)?.expect("checked to exist");
        let get = |k: &str| params.get(k).and_then(|v| v.as_u64()).map(|v| v as usize);
        let missing =
            |k: &str| SelectError::Teacher(format!("{}: no '{k}'", params_path.display()));
        let hidden = get("dim").ok_or_else(|| missing("dim"))?;
        let layers = get("n_layers").ok_or_else(|| missing("n_layers"))?;
        let heads = get("n_heads").ok_or_else(|| missing("n_heads"))?;
        let kv_heads = get("n_kv_heads").unwrap_or(heads);
        let multiple_of = get("multiple_of").unwrap_or(256);
        let mut intermediate = 2 * (4 * hidden) / 3;
        if let Some(m) = params.get("ffn_dim_multiplier").and_then(|v| v.as_f64()) {
            intermediate = (m * intermediate as f64) as usize;
        }
        let intermediate = intermediate.div_ceil(multiple_of) * multiple_of;
        if heads == 0 || hidden % heads != 0 {
            return Err(SelectError::Teacher(format!(
                "{}: dim {hidden} is not divisible by n_heads {heads}",
                params_path.display()
            )));
        }
        let config = TeacherConfig {
            hidden,
            intermediate,
            layers,
            heads: Some(heads),
            kv_heads: Some(kv_heads),
            kv_dim: kv_heads * (hidden / heads),
        };
        let mut stores = Vec::with_capacity(shards.len());
        for s in shards {
            stores.push(TensorStore::open(s)?);
        }
        let mut h = Sha256::new();
        for s in &stores {
            h.update(fingerprint(s)?.as_bytes());
        }
        let q = stores[0].require(&format!("layers.0.{}", Weight::Q.meta()))?;
        let t = TeacherCheckpoint {
            path: dir.to_path_buf(),
            layout: TeacherLayout::Meta,
            dtype: q.dtype,
            gather_dtype: q.dtype,
            config,
            stores,
            gguf: None,
            hf_prefix: String::new(),
            fingerprint: hex(&h.finalize()),
            resolved_from: None,
        };
        t.check_all_shapes()?;
        Ok(t)
    }

    /// Every weight selection may use exists with the shape the config implies.
    fn check_all_shapes(&self) -> Result<()> {
        for layer in 0..self.config.layers {
            for w in [
                Weight::AttnNorm,
                Weight::FfnNorm,
                Weight::Q,
                Weight::K,
                Weight::V,
                Weight::O,
                Weight::Gate,
                Weight::Down,
                Weight::Up,
            ] {
                self.matrix(layer, w)?;
            }
        }
        Ok(())
    }

    /// Gather GGUF rows straight in `dtype` (the output's): decoding a row gives f32 values, so
    /// casting those once is exact where gathering in the teacher's dtype first would round F32
    /// norms of an F16 file through f16. Other layouts gather in the stored dtype, as stored.
    pub(crate) fn gather_in(&mut self, dtype: DType) {
        if self.layout == TeacherLayout::Gguf {
            self.gather_dtype = dtype;
        }
    }

    /// The element type gathered rows come in.
    pub(crate) fn gather_dtype(&self) -> DType {
        self.gather_dtype
    }

    /// Number of files holding the teacher's tensors (shards of a Hugging Face checkpoint, or
    /// Meta's model-parallel `consolidated.NN.pth`).
    pub fn shard_count(&self) -> usize {
        self.stores.iter().map(|s| s.files().count()).sum::<usize>() + self.gguf.iter().count()
    }

    /// Every file the teacher was read from: tensor files, index and config files. An output
    /// must never be one of them.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for s in &self.stores {
            out.extend(s.files().map(Path::to_path_buf));
            out.extend(s.index_file().map(Path::to_path_buf));
        }
        if let Some(g) = &self.gguf {
            // A GGUF teacher is its one file: a config.json beside it was never read.
            out.push(g.path.clone());
            return out;
        }
        let dir = if self.path.is_dir() {
            self.path.clone()
        } else {
            self.path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        };
        for name in ["config.json", "params.json"] {
            let p = dir.join(name);
            if p.is_file() {
                out.push(p);
            }
        }
        out
    }

    /// The stored tensors behind a weight, for summaries and for releasing memory.
    pub fn sources(&self, layer: usize, w: Weight) -> Vec<(&TensorStore, &TensorInfo)> {
        match self.layout {
            TeacherLayout::HuggingFace => {
                let name = format!("{}layers.{layer}.{}", self.hf_prefix, w.hf());
                self.stores[0]
                    .get(&name)
                    .map(|t| vec![(&self.stores[0], t)])
                    .unwrap_or_default()
            }
            TeacherLayout::Meta => {
                let name = format!("layers.{layer}.{}", w.meta());
                let take = if w.meta_split().is_none() {
                    1
                } else {
                    self.stores.len()
                };
                self.stores[..take]
                    .iter()
                    .filter_map(|s| s.get(&name).map(|t| (s, t)))
                    .collect()
            }
            TeacherLayout::Gguf => Vec::new(),
        }
    }

    pub fn source_names(&self, layer: usize, w: Weight) -> Vec<String> {
        if let Some(file) = &self.gguf {
            let name = gguf::tensor_name(layer, w);
            return match file.tensor(&name) {
                Some(t) => vec![format!("{name} ({})", t.ggml_type)],
                None => vec![name],
            };
        }
        let names: Vec<String> = self
            .sources(layer, w)
            .iter()
            .map(|(_, t)| t.name.clone())
            .collect();
        match self.layout {
            TeacherLayout::Meta if self.stores.len() > 1 && w.meta_split().is_some() => {
                vec![format!("{} (x{} shards)", names[0], names.len())]
            }
            _ => names,
        }
    }

    /// Drops the mapped pages of a weight from our resident set.
    pub fn release(&self, layer: usize, w: Weight) {
        for (store, t) in self.sources(layer, w) {
            store.release(t);
        }
    }

    /// One weight as a logical matrix in Hugging Face row order.
    pub(crate) fn matrix(&self, layer: usize, w: Weight) -> Result<Matrix<'_>> {
        Ok(Matrix {
            cols: *w.shape(&self.config).get(1).unwrap_or(&1),
            dtype: self.gather_dtype,
            blocks: vec![self.row_block(layer, w)?],
        })
    }

    /// Several weights stacked along rows (q, k, v).
    pub(crate) fn stacked(&self, layer: usize, ws: &[Weight]) -> Result<Matrix<'_>> {
        let mut blocks = Vec::with_capacity(ws.len());
        for &w in ws {
            blocks.push(self.row_block(layer, w)?);
        }
        Ok(Matrix {
            cols: self.config.hidden,
            dtype: self.gather_dtype,
            blocks,
        })
    }

    fn row_block(&self, layer: usize, w: Weight) -> Result<RowBlock<'_>> {
        if let Some(file) = &self.gguf {
            return gguf::row_block(file, &self.config, self.gather_dtype, layer, w);
        }
        let shape = w.shape(&self.config);
        let (rows, cols) = (shape[0], *shape.get(1).unwrap_or(&1));
        let sources = self.sources(layer, w);
        let expected_name = match self.layout {
            TeacherLayout::HuggingFace => format!("{}layers.{layer}.{}", self.hf_prefix, w.hf()),
            TeacherLayout::Meta | TeacherLayout::Gguf => format!("layers.{layer}.{}", w.meta()),
        };
        let parts = if self.layout == TeacherLayout::Meta && w.meta_split().is_some() {
            self.stores.len()
        } else {
            1
        };
        if sources.len() != parts {
            let file = match self.layout {
                TeacherLayout::Meta => "a consolidated.NN.pth shard".into(),
                _ => self.stores[0].path().display().to_string(),
            };
            return Err(SelectError::Teacher(format!(
                "the teacher lacks {expected_name} ({file})"
            )));
        }
        let mut pieces = Vec::with_capacity(sources.len());
        for (i, (store, t)) in sources.iter().enumerate() {
            let (r, c) = match (w.meta_split(), parts) {
                (_, 1) => (rows, cols),
                (Some(0), n) => (rows / n, cols),
                (_, n) => (rows, cols / n),
            };
            let want: Vec<usize> = if shape.len() == 1 {
                vec![r]
            } else {
                vec![r, c]
            };
            if t.shape != want || t.dtype != self.dtype {
                return Err(SelectError::Teacher(format!(
                    "{}: {} is {} {:?}, expected {} {:?} for hidden {}, intermediate {}, kv rows {}",
                    store.file_of(t).display(),
                    t.name,
                    t.dtype,
                    t.shape,
                    self.dtype,
                    want,
                    self.config.hidden,
                    self.config.intermediate,
                    self.config.kv_dim
                )));
            }
            let (row0, col0) = match (w.meta_split(), parts) {
                (_, 1) => (0, 0),
                (Some(0), _) => (i * r, 0),
                _ => (0, i * c),
            };
            let storage = &store.storages()[t.storage];
            pieces.push(Piece {
                view: store.view(t)?,
                in_file: storage.file_offset().map(|_| (*store, storage)),
                row0,
                col0,
                rows: r,
                cols: c,
            });
        }
        let meta_rope_head_dim = match (self.layout, w) {
            (TeacherLayout::Meta, Weight::Q | Weight::K) => {
                Some(self.config.hidden / self.config.heads.expect("Meta configs have heads"))
            }
            _ => None,
        };
        Ok(RowBlock {
            rows,
            meta_rope_head_dim,
            source: RowSource::Pieces(pieces),
        })
    }
}

fn meta_shards(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| SelectError::Teacher(format!("{}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.starts_with("consolidated.") && n.ends_with(".pth")
        })
        .collect();
    shards.sort();
    for (i, s) in shards.iter().enumerate() {
        let want = format!("consolidated.{i:02}.pth");
        if s.file_name().is_some_and(|n| n.to_string_lossy() != want) {
            return Err(SelectError::Teacher(format!(
                "{}: model-parallel shards must be consolidated.00.pth .. consolidated.{:02}.pth; {want} is missing",
                dir.display(),
                shards.len() - 1
            )));
        }
    }
    Ok(shards)
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if path.symlink_metadata().is_err() {
        return Ok(None);
    }
    const MAX_CONFIG_BYTES: u64 = 16 << 20;
    let text = illama_formats::input::read_bounded(path, MAX_CONFIG_BYTES, "config file")
        .map_err(|e| SelectError::Teacher(e.to_string()))?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| SelectError::Teacher(format!("{}: not valid JSON: {e}", path.display())))
}

/// Hyper-parameters read off the tensor shapes.
fn infer_hf_config(store: &TensorStore, prefix: &str) -> Result<TeacherConfig> {
    let shape = |layer: usize, w: Weight| -> Result<Vec<usize>> {
        Ok(store
            .require(&format!("{prefix}layers.{layer}.{}", w.hf()))?
            .shape
            .clone())
    };
    let q = shape(0, Weight::Q)?;
    let k = shape(0, Weight::K)?;
    let gate = shape(0, Weight::Gate)?;
    if q.len() != 2 || k.len() != 2 || gate.len() != 2 {
        return Err(SelectError::Teacher(
            "layer 0's projections are not matrices".into(),
        ));
    }
    let marker = format!(".{}", Weight::Q.hf());
    let layers = store
        .tensors()
        .iter()
        .filter_map(|t| {
            t.name
                .strip_prefix(&format!("{prefix}layers."))?
                .strip_suffix(&marker)?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |m| m + 1);
    Ok(TeacherConfig {
        hidden: q[1],
        intermediate: gate[0],
        layers,
        heads: None,
        kv_heads: None,
        kv_dim: k[0],
    })
}

fn check_declared(path: &Path, declared: &TeacherConfig, files: &TeacherConfig) -> Result<()> {
    let pairs = [
        ("hidden_size", declared.hidden, files.hidden),
        (
            "intermediate_size",
            declared.intermediate,
            files.intermediate,
        ),
        ("num_hidden_layers", declared.layers, files.layers),
    ];
    for (key, d, f) in pairs {
        if d != f {
            return Err(SelectError::Teacher(format!(
                "{}: {key} is {d} but the weights say {f}",
                path.display()
            )));
        }
    }
    if let (Some(h), Some(kv)) = (declared.heads, declared.kv_heads) {
        if h == 0 || declared.hidden % h != 0 || kv * (declared.hidden / h) != files.kv_dim {
            return Err(SelectError::Teacher(format!(
                "{}: {h} heads and {kv} key/value heads do not match k_proj's {} rows",
                path.display(),
                files.kv_dim
            )));
        }
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// sha256 of the index json when there is one, else of each file's first MiB (the safetensors
/// header, or a torch zip's data.pkl) and length. Cheap, and changes whenever the files do in
/// practice; it is not the files' sha256 (`--hash-teacher` records those).
fn fingerprint(store: &TensorStore) -> Result<String> {
    if let Some(index) = store.index_file() {
        let bytes = illama_formats::input::read_bounded(index, 256 << 20, "shard index")
            .map_err(|e| SelectError::Teacher(e.to_string()))?;
        return Ok(hex(&Sha256::digest(&bytes)));
    }
    let files: Vec<PathBuf> = store.files().map(Path::to_path_buf).collect();
    fingerprint_of_files(&files)
}

/// sha256 over each file's first MiB and length.
fn fingerprint_of_files(files: &[PathBuf]) -> Result<String> {
    use std::io::Read;
    let mut h = Sha256::new();
    for f in files {
        let mut head = Vec::new();
        let file = illama_formats::input::open_regular(f)
            .map_err(|e| SelectError::Teacher(e.to_string()))?;
        let len = file
            .metadata()
            .map_err(|e| SelectError::Teacher(format!("{}: {e}", f.display())))?
            .len();
        file.take(1 << 20)
            .read_to_end(&mut head)
            .map_err(|e| SelectError::Teacher(format!("{}: {e}", f.display())))?;
        h.update(&head);
        h.update(len.to_le_bytes());
    }
    Ok(hex(&h.finalize()))
}
