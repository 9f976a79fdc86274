//! `convert`: any readable checkpoint to safetensors or `.pth`, streamed tensor by tensor.

use crate::cast::{cast_target, CastWriter};
use crate::dtype::DType;
use crate::error::{FormatError, Result};
use crate::output::{AtomicDir, AtomicFile, OutTensor, OutputPolicy};
use crate::progress::Progress;
use crate::provenance::{
    file_name, hash_sources, patch_placeholders, placeholder_json, sha256_file,
};
use crate::store::{Format, OpenOptions, TensorInfo, TensorStore};
use crate::torch;
use crate::write::write_file;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

// Kept here too for existing callers; the types live in `progress` and `write`.
pub use crate::progress::NoProgress;
pub use crate::write::TargetFormat;

#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    pub output: Option<PathBuf>,
    pub to: Option<TargetFormat>,
    pub open: OpenOptions,
    /// Cast floating-point tensors to this type; `None` keeps every dtype.
    pub dtype: Option<DType>,
    /// Split the output into shards of at most this many bytes (the output is then a directory).
    pub max_shard_size: Option<u64>,
    pub verify: bool,
    pub force: bool,
    /// `.pth` only: write `{wrap: state_dict}` instead of the bare state dict.
    pub wrap: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub tensors: usize,
    /// Computed when verifying.
    pub sha256: Option<String>,
}

/// What `convert` did, for people (the CLI prints it) and scripts (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct ConvertReport {
    pub input: PathBuf,
    pub input_format: Format,
    pub output: PathBuf,
    pub output_format: TargetFormat,
    pub files: Vec<OutputFile>,
    pub index: Option<PathBuf>,
    pub tensors: usize,
    pub tensor_bytes: u64,
    /// Where the tensors were taken from and why (`'model' holds ...`).
    pub root: Option<String>,
    /// Tensors that shared a storage in the source and are now independent copies.
    pub unshared: Vec<Vec<String>>,
    /// Tensors cast, as `name: from -> to`, counted by pair.
    pub cast: BTreeMap<String, usize>,
    /// Non-tensor entries stored as JSON in the safetensors `__metadata__`.
    pub recorded_in_metadata: Vec<String>,
    /// Entries not converted, with why.
    pub not_converted: Vec<NotConverted>,
    pub source_sha256: BTreeMap<String, String>,
    pub verified: bool,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotConverted {
    pub name: String,
    pub kind: String,
    pub why: String,
    /// Tensors the entry holds (convert the entry itself to keep them).
    pub tensors: usize,
}

/// Largest JSON value kept in `__metadata__`.
const MAX_METADATA_VALUE: usize = 64 << 10;

/// The output format `convert` will write for these options.
pub fn target_format(input: Format, opts: &ConvertOptions) -> TargetFormat {
    opts.to
        .or_else(|| {
            opts.output
                .as_deref()
                .and_then(TargetFormat::from_extension)
        })
        .unwrap_or(if input == Format::Safetensors {
            TargetFormat::Pth
        } else {
            TargetFormat::Safetensors
        })
}

fn default_output(
    input: &Path,
    store: &TensorStore,
    target: TargetFormat,
    sharded: bool,
) -> PathBuf {
    let base = if store.index_file().is_some() || input.is_dir() {
        store.path().to_path_buf()
    } else {
        input.to_path_buf()
    };
    if sharded {
        let stem = base
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "checkpoint".into());
        let stem = stem.split('.').next().unwrap_or(&stem).to_string();
        base.with_file_name(format!("{stem}-{}", target.extension()))
    } else {
        base.with_extension(target.extension())
    }
}

/// Converts `input` as `opts` say. Nothing appears at the output path unless every file was
/// written completely (and verified, with `verify`).
pub fn convert(
    input: &Path,
    opts: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<ConvertReport> {
    let store = TensorStore::open_with(input, &opts.open)?;
    let target = target_format(store.format(), opts);
    let sharded = store.index_file().is_some() || opts.max_shard_size.is_some();
    let output = opts
        .output
        .clone()
        .unwrap_or_else(|| default_output(input, &store, target, sharded));
    let policy = OutputPolicy::new(opts.force)
        .protect([input])
        .protect(store.files())
        .protect(store.index_file());
    if store.tensors().is_empty() {
        return Err(FormatError::Invalid(format!(
            "{}: no tensors to convert",
            input.display()
        )));
    }
    if let Some(w) = &opts.wrap {
        if target != TargetFormat::Pth || sharded {
            return Err(FormatError::Invalid(format!(
                "wrapping the state dict under '{w}' applies to single-file .pth output only (sharded checkpoints hold bare state dicts)"
            )));
        }
    }

    let mut report = ConvertReport {
        input: input.to_path_buf(),
        input_format: store.format(),
        output: output.clone(),
        output_format: target,
        files: Vec::new(),
        index: None,
        tensors: store.tensors().len(),
        tensor_bytes: 0,
        root: store.root_choice().describe(),
        unshared: store.shared_storage_groups(),
        cast: BTreeMap::new(),
        recorded_in_metadata: Vec::new(),
        not_converted: Vec::new(),
        source_sha256: BTreeMap::new(),
        verified: false,
        warnings: store.warnings(),
    };
    let metadata = build_metadata(&store, target, &mut report)?;
    for t in store.tensors() {
        let to = cast_target(t.dtype, opts.dtype);
        report.tensor_bytes += t.numel() * to.size() as u64;
        if to != t.dtype {
            *report
                .cast
                .entry(format!("{} -> {}", t.dtype, to))
                .or_default() += 1;
        }
    }
    let groups = plan_shards(&store, opts, sharded);

    progress.begin("converting", report.tensor_bytes);
    // Hash the inputs (recorded in safetensors metadata only) on a second thread while the main
    // one copies tensors.
    let hash = target == TargetFormat::Safetensors;
    let (files, source_sha) = std::thread::scope(|scope| -> Result<_> {
        let hashing = scope.spawn(|| {
            if hash {
                hash_sources(&store)
            } else {
                Ok(BTreeMap::new())
            }
        });
        let written = if sharded {
            write_sharded(
                &store,
                opts,
                &policy,
                target,
                &output,
                &groups,
                &metadata,
                progress,
                &mut report,
            )
        } else {
            write_single(&store, opts, &policy, target, &output, &metadata, progress)
        };
        let hashes = hashing.join().expect("hashing thread panicked")?;
        Ok((written?, hashes))
    })?;
    progress.end();
    report.source_sha256 = source_sha;

    // Replace the placeholders in the headers, then verify, then move into place.
    let (mut pending, commit) = files;
    for f in &pending {
        if target == TargetFormat::Safetensors {
            patch_placeholders(&f.tmp_path, &report.source_sha256, &store)?;
        }
    }
    if opts.verify {
        verify(&store, opts.dtype, &pending, progress)?;
        for f in &mut pending {
            f.sha256 = Some(sha256_file(&f.tmp_path)?);
        }
        report.verified = true;
    }
    let final_paths = commit.commit()?;
    report.files = pending
        .into_iter()
        .zip(final_paths)
        .map(|(f, path)| OutputFile {
            path,
            bytes: f.bytes,
            tensors: f.names.len(),
            sha256: f.sha256,
        })
        .collect();
    if sharded && report.files.len() > 1 {
        report.index = Some(output.join(target.index_name()));
    }
    Ok(report)
}

/// Provenance, plus the small non-tensor entries a torch checkpoint carried.
fn build_metadata(
    store: &TensorStore,
    target: TargetFormat,
    report: &mut ConvertReport,
) -> Result<BTreeMap<String, String>> {
    let mut md = BTreeMap::new();
    let provenance_keys = [
        "format",
        "illama_tools.version",
        "source.file",
        "source.sha256",
    ];
    if target == TargetFormat::Safetensors {
        for (k, v) in store.metadata() {
            if !provenance_keys.contains(&k.as_str()) {
                md.insert(k.clone(), v.clone());
            }
        }
        md.insert("format".into(), "pt".into());
        md.insert(
            "illama_tools.version".into(),
            env!("CARGO_PKG_VERSION").into(),
        );
        let names: Vec<String> = store.files().map(file_name).collect();
        let source = match store.index_file() {
            Some(i) => file_name(i),
            None => names.join(","),
        };
        md.insert("source.file".into(), source);
        md.insert("source.sha256".into(), placeholder_json(store));
    } else if store
        .metadata()
        .keys()
        .any(|k| !provenance_keys.contains(&k.as_str()))
    {
        let keys: Vec<&String> = store.metadata().keys().collect();
        report.not_converted.push(NotConverted {
            name: "__metadata__".into(),
            kind: format!("safetensors metadata ({} keys)", keys.len()),
            why: ".pth files have no place for it".into(),
            tensors: 0,
        });
    }
    let entries = store.other_entries().iter().chain(store.non_tensors());
    for e in entries {
        let why = if e.tensors > 0 {
            format!(
                "holds {} tensors outside the converted entry (convert entry '{}' on its own to keep them)",
                e.tensors, e.name
            )
        } else if target == TargetFormat::Pth {
            "the .pth output holds tensors only".into()
        } else {
            let json = serde_json::to_string(&e.value).unwrap_or_default();
            if json.len() > MAX_METADATA_VALUE {
                format!("{} bytes as JSON, too large for the metadata", json.len())
            } else if md.contains_key(&e.name) || e.name.is_empty() {
                let key = format!("pth.{}", e.name);
                md.insert(key.clone(), json);
                report.recorded_in_metadata.push(key);
                continue;
            } else {
                md.insert(e.name.clone(), json);
                report.recorded_in_metadata.push(e.name.clone());
                continue;
            }
        };
        report.not_converted.push(NotConverted {
            name: e.name.clone(),
            kind: e.kind.clone(),
            why,
            tensors: e.tensors,
        });
    }
    Ok(md)
}

/// Tensor indices per output file.
fn plan_shards(store: &TensorStore, opts: &ConvertOptions, sharded: bool) -> Vec<Vec<usize>> {
    let tensors = store.tensors();
    if !sharded {
        return vec![(0..tensors.len()).collect()];
    }
    let out_bytes = |t: &TensorInfo| t.numel() * cast_target(t.dtype, opts.dtype).size() as u64;
    let mut groups: Vec<Vec<usize>> = Vec::new();
    match opts.max_shard_size {
        Some(limit) => {
            let mut size = 0u64;
            for (i, t) in tensors.iter().enumerate() {
                let b = out_bytes(t);
                if groups.is_empty() || (size + b > limit && !groups.last().unwrap().is_empty()) {
                    groups.push(Vec::new());
                    size = 0;
                }
                groups.last_mut().unwrap().push(i);
                size += b;
            }
        }
        None => {
            // Mirror the input's sharding.
            let mut by_file: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for (i, t) in tensors.iter().enumerate() {
                by_file
                    .entry(store.storages()[t.storage].file)
                    .or_default()
                    .push(i);
            }
            groups = by_file.into_values().collect();
        }
    }
    groups
}

/// A file written to its temporary path, not yet in place.
struct Pending {
    tmp_path: PathBuf,
    bytes: u64,
    names: Vec<String>,
    sha256: Option<String>,
}

/// Moves finished output into place.
enum Commit {
    File(AtomicFile),
    Dir(AtomicDir, Vec<String>),
}

impl Commit {
    fn commit(self) -> Result<Vec<PathBuf>> {
        match self {
            Commit::File(f) => Ok(vec![f.commit()?]),
            Commit::Dir(d, names) => {
                let dest = d.commit()?;
                Ok(names.iter().map(|n| dest.join(n)).collect())
            }
        }
    }
}

fn out_tensors<'a>(
    store: &'a TensorStore,
    indices: &[usize],
    dtype: Option<DType>,
    progress: &'a dyn Progress,
) -> Vec<OutTensor<'a>> {
    indices
        .iter()
        .map(|&i| {
            let t = &store.tensors()[i];
            let to = cast_target(t.dtype, dtype);
            OutTensor {
                name: t.name.clone(),
                dtype: to,
                shape: t.shape.clone(),
                nbytes: t.numel() * to.size() as u64,
                write: Box::new(move |w: &mut dyn Write, out: &Path| {
                    let advance =
                        |n: u64| progress.advance(n * to.size() as u64 / t.dtype.size() as u64);
                    let mut cw = CastWriter::new(w, t.dtype, to)?;
                    store.copy_to(t, &mut cw, out, &advance)
                }),
            }
        })
        .collect()
}

fn write_single(
    store: &TensorStore,
    opts: &ConvertOptions,
    policy: &OutputPolicy,
    target: TargetFormat,
    output: &Path,
    metadata: &BTreeMap<String, String>,
    progress: &dyn Progress,
) -> Result<(Vec<Pending>, Commit)> {
    let mut out = AtomicFile::create(output, policy)?;
    let all: Vec<usize> = (0..store.tensors().len()).collect();
    let tensors = out_tensors(store, &all, opts.dtype, progress);
    let bytes = write_file(
        output,
        out.file(),
        target,
        tensors,
        metadata,
        &torch::PthLayout {
            wrap: opts.wrap.as_deref(),
            ints: &[],
        },
    )?;
    let pending = Pending {
        tmp_path: out.tmp_path().to_path_buf(),
        bytes,
        names: store.tensors().iter().map(|t| t.name.clone()).collect(),
        sha256: None,
    };
    Ok((vec![pending], Commit::File(out)))
}

#[allow(clippy::too_many_arguments)]
fn write_sharded(
    store: &TensorStore,
    opts: &ConvertOptions,
    policy: &OutputPolicy,
    target: TargetFormat,
    output: &Path,
    groups: &[Vec<usize>],
    metadata: &BTreeMap<String, String>,
    progress: &dyn Progress,
    report: &mut ConvertReport,
) -> Result<(Vec<Pending>, Commit)> {
    let dir = AtomicDir::create(output, policy)?;
    let n = groups.len();
    let mut pending = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut weight_map = BTreeMap::new();
    for (i, group) in groups.iter().enumerate() {
        let name = target.shard_names(i, n);
        let path = dir.path().join(&name);
        let mut file = std::fs::File::create(&path).map_err(|e| FormatError::io(&path, e))?;
        let tensors = out_tensors(store, group, opts.dtype, progress);
        let bytes = write_file(
            &path,
            &mut file,
            target,
            tensors,
            metadata,
            &torch::PthLayout {
                wrap: opts.wrap.as_deref(),
                ints: &[],
            },
        )?;
        let tensor_names: Vec<String> = group
            .iter()
            .map(|&t| store.tensors()[t].name.clone())
            .collect();
        for t in &tensor_names {
            weight_map.insert(t.clone(), name.clone());
        }
        pending.push(Pending {
            tmp_path: path,
            bytes,
            names: tensor_names,
            sha256: None,
        });
        names.push(name);
    }
    if n > 1 {
        let index = serde_json::json!({
            "metadata": {"total_size": report.tensor_bytes},
            "weight_map": weight_map,
        });
        let path = dir.path().join(target.index_name());
        let text = serde_json::to_string_pretty(&index).expect("json serialises");
        std::fs::write(&path, text + "\n").map_err(|e| FormatError::io(&path, e))?;
    }
    Ok((pending, Commit::Dir(dir, names)))
}

/// Re-reads every output file and compares each tensor's bytes with the (cast) source.
fn verify(
    store: &TensorStore,
    dtype: Option<DType>,
    files: &[Pending],
    progress: &dyn Progress,
) -> Result<()> {
    progress.begin("verifying", files.iter().map(|f| f.bytes).sum());
    for f in files {
        let out = TensorStore::open(&f.tmp_path)?;
        if out.tensors().len() != f.names.len() {
            return Err(FormatError::Invalid(format!(
                "verify: {} tensors in the output, {} expected",
                out.tensors().len(),
                f.names.len()
            )));
        }
        for name in &f.names {
            let src = store.require(name)?;
            let dst = out.get(name).ok_or_else(|| {
                FormatError::Invalid(format!("verify: '{name}' is missing from the output"))
            })?;
            let to = cast_target(src.dtype, dtype);
            if dst.dtype != to || dst.shape != src.shape {
                return Err(FormatError::Invalid(format!(
                    "verify: '{name}' is {} {:?} in the output, expected {} {:?}",
                    dst.dtype, dst.shape, to, src.shape
                )));
            }
            let mut cmp = CompareWriter {
                out: &out,
                tensor: dst,
                pos: 0,
                buf: Vec::new(),
            };
            // A mismatch surfaces as an I/O error of the comparing writer: report it as itself.
            store
                .copy_to(
                    src,
                    &mut CastWriter::new(&mut cmp, src.dtype, to)?,
                    &f.tmp_path,
                    &|_| {},
                )
                .map_err(|e| match e {
                    FormatError::Io { source, .. }
                        if source.kind() == std::io::ErrorKind::InvalidData =>
                    {
                        FormatError::Invalid(source.to_string())
                    }
                    other => other,
                })?;
            if cmp.pos != dst.nbytes() {
                return Err(FormatError::Invalid(format!(
                    "verify: '{name}' has a different length"
                )));
            }
            progress.advance(dst.nbytes());
        }
    }
    progress.end();
    Ok(())
}

/// Compares a stream of bytes with a tensor of the output, read back with `pread`.
struct CompareWriter<'a> {
    out: &'a TensorStore,
    tensor: &'a TensorInfo,
    pos: u64,
    buf: Vec<u8>,
}

impl Write for CompareWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mismatch = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
        if self.pos + data.len() as u64 > self.tensor.nbytes() {
            return Err(mismatch(format!(
                "verify: '{}' is longer in the source",
                self.tensor.name
            )));
        }
        self.buf.resize(data.len(), 0);
        let s = &self.out.storages()[self.tensor.storage];
        let offset = (self.tensor.storage_offset * self.tensor.dtype.size()) as u64;
        self.out
            .read_storage_at(s, offset + self.pos, &mut self.buf)
            .map_err(|e| mismatch(e.to_string()))?;
        if self.buf != data {
            return Err(mismatch(format!(
                "verify: '{}' differs from the source near byte {}",
                self.tensor.name, self.pos
            )));
        }
        self.pos += data.len() as u64;
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--verify` reads the written file back and compares every byte with the source: a
    /// single flipped byte in a tensor, or a changed tensor size, is reported, naming it.
    #[test]
    fn verify_catches_a_changed_byte_in_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.safetensors");
        let w: Vec<u8> = (0..64u8).collect();
        let b: Vec<u8> = vec![7u8; 16];
        let tensors = vec![
            OutTensor::from_bytes("a.weight", DType::F32, vec![4, 4], w.clone()),
            OutTensor::from_bytes("a.bias", DType::F32, vec![4], b.clone()),
        ];
        let mut f = std::fs::File::create(&src).unwrap();
        write_file(
            &src,
            &mut f,
            TargetFormat::Safetensors,
            tensors,
            &BTreeMap::new(),
            &Default::default(),
        )
        .unwrap();
        let store = TensorStore::open(&src).unwrap();
        for target in [TargetFormat::Safetensors, TargetFormat::Pth] {
            let out = dir.path().join(format!("out.{}", target.extension()));
            let report = convert(
                &src,
                &ConvertOptions {
                    output: Some(out.clone()),
                    to: Some(target),
                    verify: true,
                    ..Default::default()
                },
                &NoProgress,
            )
            .unwrap();
            assert!(report.verified);
            let pending = |path: &Path| Pending {
                tmp_path: path.to_path_buf(),
                bytes: 0,
                names: vec!["a.bias".into(), "a.weight".into()],
                sha256: None,
            };
            // The output as written verifies.
            verify(&store, None, &[pending(&out)], &NoProgress).unwrap();
            // One byte of a.weight's data changed (the last 16 bytes of data are a.bias or
            // a.weight depending on order: find a.weight's bytes and flip one).
            let mut bytes = std::fs::read(&out).unwrap();
            let at = bytes
                .windows(w.len())
                .position(|x| x == w.as_slice())
                .expect("the tensor's bytes are in the file");
            bytes[at + 9] ^= 0x40;
            let bad = dir.path().join(format!("bad.{}", target.extension()));
            std::fs::write(&bad, &bytes).unwrap();
            let err = verify(&store, None, &[pending(&bad)], &NoProgress)
                .unwrap_err()
                .to_string();
            assert!(err.contains("a.weight"), "{target:?}: {err}");
        }
    }
}
