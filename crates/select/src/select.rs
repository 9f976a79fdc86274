//! Planning and writing a selection: which teacher elements feed each student tensor, gathered
//! lazily while the output file is written, so at most one tensor is in memory at a time.

use crate::error::SelectError;
use crate::hashing::FileHashes;
use crate::indices::{describe, ElementSelection, LayerSelection};
use crate::teacher::{TeacherCheckpoint, TeacherConfig, TeacherLayout, Weight};
use illama_arch::{BlockTensor, IllamaConfig};
use illama_formats::cast::{cast_bytes, cast_target};
use illama_formats::{write_file, Progress, TargetFormat};
use illama_formats::{AtomicFile, DType, FormatError, OutTensor, OutputPolicy};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

type Result<T> = std::result::Result<T, SelectError>;

/// Safetensors, or the OrderedDict `.pth` the reference trainer loads with `--finetune`.

#[derive(Debug, Clone)]
pub struct SelectOptions {
    /// A path, an alias (`llama2-7b`) or a hub repo id found in the local cache.
    pub teacher: String,
    pub student: IllamaConfig,
    /// `tiny`, `small`, `base`, `large` or `custom`.
    pub student_name: String,
    pub layers: LayerSelection,
    pub elements: ElementSelection,
    /// Cast to this float type; `None` keeps the teacher's dtype (the reference).
    pub dtype: Option<DType>,
    pub format: TargetFormat,
    /// Default: `illama_ws_<student>.<ext>` in the current directory.
    pub output: Option<PathBuf>,
    pub force: bool,
    /// Also record the sha256 of every teacher file (hashed on other threads while selecting).
    pub hash_teacher: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StudentTensorReport {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// Teacher tensors it is selected from.
    pub sources: Vec<String>,
    /// Per dimension, the key of its index set in [`SelectReport::index_sets`].
    pub indices: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TeacherReport {
    pub path: PathBuf,
    pub resolved_from: Option<String>,
    pub layout: TeacherLayout,
    pub shards: usize,
    pub dtype: DType,
    pub config: TeacherConfig,
    /// A cheap identity of the files (see [`TeacherCheckpoint::fingerprint`]), not their sha256.
    pub fingerprint: String,
    /// With `hash_teacher`: each teacher file's name and sha256, as `sha256sum` prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<BTreeMap<String, String>>,
    /// With `hash_teacher`: seconds selection waited for the hashes after writing the tensors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_wait_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SelectReport {
    pub teacher: TeacherReport,
    pub student_name: String,
    pub student: IllamaConfig,
    /// Teacher layer of each student block.
    pub layers: Vec<usize>,
    pub layer_selection: String,
    pub element_selection: String,
    pub seed: Option<u64>,
    pub dtype: DType,
    pub output: PathBuf,
    pub format: TargetFormat,
    pub bytes: u64,
    pub tensors: Vec<StudentTensorReport>,
    /// `"teacher->student"` size pairs and the indices they select.
    pub index_sets: BTreeMap<String, serde_json::Value>,
    pub notes: Vec<String>,
}

/// How one student tensor is made.
enum Source {
    /// One teacher weight, rows x cols.
    Single(Weight),
    /// Rows of q, k, v concatenated, selected together (the reference).
    StackedQkv,
    /// q, k, v selected separately into [D, D] each (grouped-query teachers).
    SeparateQkv,
}

struct Planned {
    name: String,
    shape: Vec<usize>,
    layer: usize,
    source: Source,
    /// (teacher size, student size) per dimension; vectors have one.
    dims: Vec<(usize, usize)>,
}

fn check_fits(t: &TeacherConfig, s: &IllamaConfig) -> Result<()> {
    let mut too_big = Vec::new();
    if s.dim > t.hidden {
        too_big.push(format!("dim {} > teacher hidden {}", s.dim, t.hidden));
    }
    if s.mlp_hidden > t.intermediate {
        too_big.push(format!(
            "mlp hidden {} > teacher intermediate {}",
            s.mlp_hidden, t.intermediate
        ));
    }
    if s.depth > t.layers {
        too_big.push(format!("depth {} > teacher layers {}", s.depth, t.layers));
    }
    if t.grouped_query() && s.dim > t.kv_dim {
        too_big.push(format!(
            "dim {} > teacher key/value rows {}",
            s.dim, t.kv_dim
        ));
    }
    if too_big.is_empty() {
        Ok(())
    } else {
        Err(SelectError::Student(format!(
            "larger than the teacher: {}",
            too_big.join(", ")
        )))
    }
}

fn plan(t: &TeacherConfig, s: &IllamaConfig, layers: &[usize]) -> Vec<Planned> {
    let (d, h, td, ti) = (s.dim, s.mlp_hidden, t.hidden, t.intermediate);
    let mut out = Vec::new();
    for (block, &layer) in layers.iter().enumerate() {
        // The reference's order: norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2, mlp.fc3.
        let items = [
            (
                BlockTensor::Norm1,
                Source::Single(Weight::AttnNorm),
                vec![(td, d)],
            ),
            if t.grouped_query() {
                (
                    BlockTensor::QkvWeight,
                    Source::SeparateQkv,
                    vec![(td, d), (td, d)],
                )
            } else {
                (
                    BlockTensor::QkvWeight,
                    Source::StackedQkv,
                    vec![(3 * td, 3 * d), (td, d)],
                )
            },
            (
                BlockTensor::ProjWeight,
                Source::Single(Weight::O),
                vec![(td, d), (td, d)],
            ),
            (
                BlockTensor::Norm2,
                Source::Single(Weight::FfnNorm),
                vec![(td, d)],
            ),
            (
                BlockTensor::Fc1,
                Source::Single(Weight::Gate),
                vec![(ti, h), (td, d)],
            ),
            (
                BlockTensor::Fc2,
                Source::Single(Weight::Down),
                vec![(td, d), (ti, h)],
            ),
            (
                BlockTensor::Fc3,
                Source::Single(Weight::Up),
                vec![(ti, h), (td, d)],
            ),
        ];
        for (bt, source, dims) in items {
            out.push(Planned {
                name: bt.key(block),
                shape: s.block_shape(bt),
                layer,
                source,
                dims,
            });
        }
    }
    out
}

fn key(t: usize, s: usize) -> String {
    format!("{t}->{s}")
}

/// The selected elements of one student tensor, in the teacher's gather dtype, into `buf`
/// (resized to fit; its old contents are all overwritten, so a buffer is reused without being
/// cleared). Teacher pages touched are released right after, so resident memory does not grow
/// with the teacher's size.
fn gather(
    teacher: &TeacherCheckpoint,
    p: &Planned,
    index_sets: &BTreeMap<String, Vec<usize>>,
    tc: &TeacherConfig,
    dim: usize,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let idx = |t: usize, s: usize| &index_sets[&key(t, s)];
    let rows = idx(p.dims[0].0, p.dims[0].1);
    let cols: Vec<usize> = p.dims.get(1).map_or(vec![0], |&(t, s)| idx(t, s).clone());
    let row_bytes = cols.len() * teacher.gather_dtype().size();
    let qkv = [Weight::Q, Weight::K, Weight::V];
    let used: &[Weight] = match &p.source {
        Source::Single(weight) => {
            buf.resize(rows.len() * row_bytes, 0);
            teacher.matrix(p.layer, *weight)?.gather(rows, &cols, buf)?;
            std::slice::from_ref(weight)
        }
        Source::StackedQkv => {
            buf.resize(rows.len() * row_bytes, 0);
            teacher.stacked(p.layer, &qkv)?.gather(rows, &cols, buf)?;
            &qkv
        }
        Source::SeparateQkv => {
            let (q_rows, kv_rows) = (idx(tc.hidden, dim), idx(tc.kv_dim, dim));
            buf.resize((q_rows.len() + 2 * kv_rows.len()) * row_bytes, 0);
            let (q, kv) = buf.split_at_mut(q_rows.len() * row_bytes);
            let (k, v) = kv.split_at_mut(kv_rows.len() * row_bytes);
            teacher
                .matrix(p.layer, Weight::Q)?
                .gather(q_rows, &cols, q)?;
            teacher
                .matrix(p.layer, Weight::K)?
                .gather(kv_rows, &cols, k)?;
            teacher
                .matrix(p.layer, Weight::V)?
                .gather(kv_rows, &cols, v)?;
            &qkv
        }
    };
    for &weight in used {
        teacher.release(p.layer, weight);
    }
    Ok(())
}

/// Selects the student's weights from the teacher and writes them.
pub fn select(opts: &SelectOptions, progress: &dyn Progress) -> Result<SelectReport> {
    opts.student.validate()?;
    let mut teacher = TeacherCheckpoint::open(&opts.teacher)?;
    let tc = teacher.config.clone();
    check_fits(&tc, &opts.student)?;
    let layers = opts.layers.layers(tc.layers, opts.student.depth)?;
    let planned = plan(&tc, &opts.student, &layers);
    let teacher_files = teacher.files();
    let hashes = opts
        .hash_teacher
        .then(|| FileHashes::spawn(teacher_files.clone()));
    let out_dtype = cast_target(teacher.dtype, opts.dtype);
    teacher.gather_in(out_dtype);

    // Every (teacher, student) size pair is computed once and shared by all layers.
    let mut index_sets: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for p in &planned {
        let mut pairs = p.dims.clone();
        if let Source::SeparateQkv = p.source {
            pairs.push((tc.kv_dim, opts.student.dim));
        }
        for (t, s) in pairs {
            if let std::collections::btree_map::Entry::Vacant(e) = index_sets.entry(key(t, s)) {
                e.insert(opts.elements.indices(t, s)?);
            }
        }
    }

    let mut notes = Vec::new();
    if teacher.layout == TeacherLayout::Meta {
        notes.push("Meta layout: wq/wk rows permuted into Hugging Face order before selection, so the selected elements are those the reference takes from the Hugging Face conversion".into());
        if teacher.shard_count() > 1 {
            notes.push(format!(
                "{} model-parallel shards assembled (wq/wk/wv/w1/w3 by rows, wo/w2 by columns)",
                teacher.shard_count()
            ));
        }
        if opts.dtype.is_none() {
            notes.push(format!("dtype {} kept from the Meta checkpoint; the Hugging Face release (and so the reference output) is F16: cast to f16 for its exact bytes", teacher.dtype));
        }
    }
    if teacher.layout == TeacherLayout::Gguf {
        notes.push("GGUF: attn_q/attn_k rows permuted from llama.cpp's interleaved rotary order into Hugging Face order before selection".into());
        let types = teacher.weight_types();
        if teacher.dtype == DType::F32 && types.iter().any(|t| t != "F32") {
            notes.push(format!(
                "weights stored as {}: the selected rows are dequantised to f32 (only those rows are read)",
                types.join(", ")
            ));
        }
    }
    if tc.grouped_query() {
        notes.push(format!(
            "grouped-query teacher ({} key/value rows for hidden {}): q, k and v selected separately into [{d}, {d}] each, then concatenated",
            tc.kv_dim,
            tc.hidden,
            d = opts.student.dim
        ));
    }
    if out_dtype != teacher.dtype {
        notes.push(format!("cast from {} to {out_dtype}", teacher.dtype));
    }

    let ext = match opts.format {
        TargetFormat::Safetensors => "safetensors",
        TargetFormat::Pth => "pth",
    };
    let output = opts
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("illama_ws_{}.{ext}", opts.student_name)));

    let reports: Vec<StudentTensorReport> = planned
        .iter()
        .map(|p| StudentTensorReport {
            name: p.name.clone(),
            shape: p.shape.clone(),
            dtype: out_dtype,
            sources: match p.source {
                Source::Single(w) => teacher.source_names(p.layer, w),
                Source::StackedQkv | Source::SeparateQkv => [Weight::Q, Weight::K, Weight::V]
                    .iter()
                    .flat_map(|&w| teacher.source_names(p.layer, w))
                    .collect(),
            },
            indices: match p.source {
                Source::SeparateQkv => vec![
                    format!(
                        "{} | {k} | {k}",
                        key(tc.hidden, opts.student.dim),
                        k = key(tc.kv_dim, opts.student.dim)
                    ),
                    key(tc.hidden, opts.student.dim),
                ],
                _ => p.dims.iter().map(|&(t, s)| key(t, s)).collect(),
            },
        })
        .collect();

    let total: u64 = planned
        .iter()
        .map(|p| p.shape.iter().product::<usize>() as u64 * out_dtype.size() as u64)
        .sum();
    // The hashes are known only after the tensors are written: the header holds placeholders of
    // the same length, replaced in place before the file is committed.
    let names = file_names(&teacher_files);
    let placeholders: Vec<String> = (0..names.len())
        .map(|i| format!("{:-<64}", format!("sha256-pending-{i}-")))
        .collect();
    let mut metadata = metadata(opts, &teacher, &layers, out_dtype);
    if hashes.is_some() {
        let map: BTreeMap<&str, &str> = names
            .iter()
            .map(String::as_str)
            .zip(placeholders.iter().map(String::as_str))
            .collect();
        metadata.insert(
            "teacher.sha256".into(),
            serde_json::to_string(&map).unwrap_or_default(),
        );
    }
    progress.begin("selecting", total);
    let policy = OutputPolicy::new(opts.force).protect(&teacher_files);
    let mut file = AtomicFile::create(&output, &policy)?;

    // One thread gathers the tensors, in the order the writer takes them, while this one writes:
    // reading the teacher's rows and writing the output overlap. The channel holds none, so at
    // most two tensors are in memory (one being gathered, one being written).
    let order = opts.format.data_order(
        &planned
            .iter()
            .map(|p| (p.name.as_str(), out_dtype))
            .collect::<Vec<_>>(),
    );
    // Gathers tensor `i` into `buf` and returns the bytes to write: `buf` itself, or its cast.
    let produce = |i: usize, mut buf: Vec<u8>| -> std::result::Result<Vec<u8>, FormatError> {
        gather(
            &teacher,
            &planned[i],
            &index_sets,
            &tc,
            opts.student.dim,
            &mut buf,
        )
        .map_err(|e| FormatError::Invalid(e.to_string()))?;
        if out_dtype == teacher.gather_dtype() {
            Ok(buf)
        } else {
            cast_bytes(teacher.gather_dtype(), out_dtype, &buf)
        }
    };
    let bytes = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(0);
        // Written tensors' buffers go back to the gathering thread, which reuses them: two
        // buffers serve the whole selection, with no fresh (zeroed, page-faulted) memory per
        // tensor.
        let (spent_tx, spent_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let order = &order;
        scope.spawn(move || {
            for &i in order {
                let r = produce(i, spent_rx.try_recv().unwrap_or_default());
                let failed = r.is_err();
                // A closed channel means the writer stopped (its error is reported there).
                if tx.send((i, r)).is_err() || failed {
                    break;
                }
            }
        });
        let rx = &rx;
        let tensors: Vec<OutTensor<'_>> = planned
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let spent_tx = spent_tx.clone();
                OutTensor {
                    name: p.name.clone(),
                    dtype: out_dtype,
                    shape: p.shape.clone(),
                    nbytes: p.shape.iter().product::<usize>() as u64 * out_dtype.size() as u64,
                    write: Box::new(move |w: &mut dyn Write, out: &std::path::Path| {
                        let (got, bytes) = rx.recv().map_err(|_| {
                            FormatError::Invalid("the gathering thread stopped".into())
                        })?;
                        if got != i {
                            return Err(FormatError::Invalid(format!(
                                "tensor {} asked for out of the planned order",
                                p.name
                            )));
                        }
                        let bytes = bytes?;
                        w.write_all(&bytes).map_err(|e| FormatError::io(out, e))?;
                        progress.advance(bytes.len() as u64);
                        // The gathering thread may have finished; the buffer is then dropped.
                        let _ = spent_tx.send(bytes);
                        Ok(())
                    }),
                }
            })
            .collect();
        write_file(
            &output,
            file.file(),
            opts.format,
            tensors,
            &metadata,
            &Default::default(),
        )
    })?;
    let mut sha256 = None;
    let mut hash_wait_seconds = None;
    if let Some(h) = hashes {
        progress.end();
        let hashed = h.wait()?;
        hash_wait_seconds = Some(hashed.waited.as_secs_f64());
        if opts.format == TargetFormat::Safetensors {
            let patches: Vec<(String, String)> = placeholders
                .iter()
                .cloned()
                .zip(hashed.sha256.iter().map(|(_, h)| h.clone()))
                .collect();
            illama_formats::safetensors_io::patch_header(file.file(), &output, &patches)?;
        }
        sha256 = Some(
            names
                .into_iter()
                .zip(hashed.sha256.into_iter().map(|(_, h)| h))
                .collect(),
        );
    }
    let output = file.commit()?;
    progress.end();

    Ok(SelectReport {
        teacher: TeacherReport {
            path: teacher.path.clone(),
            resolved_from: teacher.resolved_from.clone(),
            layout: teacher.layout,
            shards: teacher.shard_count(),
            dtype: teacher.dtype,
            config: tc,
            fingerprint: teacher.fingerprint.clone(),
            sha256,
            hash_wait_seconds,
        },
        student_name: opts.student_name.clone(),
        student: opts.student,
        layers,
        layer_selection: opts.layers.name().into(),
        element_selection: opts.elements.name().into(),
        seed: match opts.elements {
            ElementSelection::Random { seed } => Some(seed),
            _ => None,
        },
        dtype: out_dtype,
        output,
        format: opts.format,
        bytes,
        tensors: reports,
        index_sets: index_sets
            .iter()
            .map(|(k, v)| (k.clone(), describe(v)))
            .collect(),
        notes,
    })
}

/// Each file's name as the teacher's folder lists it (its path when two share a name).
fn file_names(files: &[PathBuf]) -> Vec<String> {
    let base: Vec<String> = files
        .iter()
        .map(|f| {
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| f.display().to_string())
        })
        .collect();
    let unique = base.iter().collect::<std::collections::BTreeSet<_>>().len() == base.len();
    if unique {
        base
    } else {
        files.iter().map(|f| f.display().to_string()).collect()
    }
}

fn metadata(
    opts: &SelectOptions,
    teacher: &TeacherCheckpoint,
    layers: &[usize],
    dtype: DType,
) -> BTreeMap<String, String> {
    let json = |v: serde_json::Value| v.to_string();
    let mut md = BTreeMap::new();
    md.insert("format".into(), "pt".into());
    md.insert(
        "illama_tools.version".into(),
        env!("CARGO_PKG_VERSION").into(),
    );
    md.insert("teacher.path".into(), teacher.path.display().to_string());
    md.insert(
        "teacher.layout".into(),
        json(serde_json::to_value(teacher.layout).unwrap_or_default()),
    );
    md.insert("teacher.fingerprint".into(), teacher.fingerprint.clone());
    md.insert(
        "teacher.config".into(),
        json(serde_json::to_value(&teacher.config).unwrap_or_default()),
    );
    md.insert("selection.layers".into(), json(serde_json::json!(layers)));
    md.insert("selection.layer_method".into(), opts.layers.name().into());
    md.insert(
        "selection.element_method".into(),
        opts.elements.name().into(),
    );
    if let ElementSelection::Random { seed } = opts.elements {
        md.insert("selection.seed".into(), seed.to_string());
    }
    md.insert("student.name".into(), opts.student_name.clone());
    md.insert(
        illama_arch::STUDENT_CONFIG_KEY.into(),
        json(serde_json::to_value(opts.student).unwrap_or_default()),
    );
    md.insert("dtype".into(), dtype.to_string());
    md
}
