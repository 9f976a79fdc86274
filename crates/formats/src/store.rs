//! [`TensorStore`]: one view over a checkpoint file or a directory of shards that lists tensors
//! without reading their data and yields any tensor's bytes on demand.

use crate::dtype::DType;
use crate::error::{FormatError, Result};
use crate::source::{MapMode, MapWindow, SourceFile, Storage};
use crate::torch;
use crate::tree::{self, Leaf, Node, RootChoice};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The on-disk format of a checkpoint, detected from the bytes, never from the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Safetensors,
    /// `torch.save` zip (torch >= 1.6): `.pth`, `.pt`, `.bin`.
    TorchZip,
    /// `torch.save(..., _use_new_zipfile_serialization=False)` and torch < 1.6.
    TorchLegacy,
    /// llama.cpp's GGUF: read by [`crate::gguf`] (inspect, select), not by [`TensorStore`].
    Gguf,
}

impl Format {
    pub fn is_torch(self) -> bool {
        matches!(self, Format::TorchZip | Format::TorchLegacy)
    }
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::TorchZip => "pytorch zip",
            Format::TorchLegacy => "pytorch legacy",
            Format::Gguf => "gguf",
        }
    }
}

/// Detects the format of a file from its first bytes (16 are enough).
pub fn detect_format(path: &Path, head: &[u8]) -> Result<Format> {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(Format::TorchZip);
    }
    if crate::gguf::is_gguf(head) {
        return Ok(Format::Gguf);
    }
    // PROTO n, LONG1 of 10 bytes: the legacy magic number.
    if head.len() >= 14
        && head[0] == 0x80
        && head[2..4] == [0x8a, 0x0a]
        && head[4..14] == torch::LEGACY_MAGIC
    {
        return Ok(Format::TorchLegacy);
    }
    // An 8-byte header length, then the JSON header.
    if head.len() >= 9 && head[8] == b'{' {
        return Ok(Format::Safetensors);
    }
    let why = if head.first() == Some(&0x80) {
        "a Python pickle, but not one written by torch.save".to_string()
    } else if head.len() < 9 {
        format!(
            "neither safetensors nor a PyTorch checkpoint: only {} bytes long",
            head.len()
        )
    } else {
        format!(
            "neither safetensors nor a PyTorch checkpoint: starts with bytes {:02x?}",
            &head[..8]
        )
    };
    Err(FormatError::UnknownFormat {
        path: path.to_path_buf(),
        why,
    })
}

/// A tensor: its name, element type and shape, and where its elements sit in a storage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Strides in elements.
    pub strides: Vec<usize>,
    /// Offset of the first element in the storage, in elements.
    pub storage_offset: usize,
    /// Index into [`TensorStore::storages`].
    #[serde(skip)]
    pub storage: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
    pub fn nbytes(&self) -> u64 {
        self.numel() * self.dtype.size() as u64
    }
    /// True when the elements are stored densely in C order (dimensions of size 1 may have any
    /// stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return self.numel() == 0;
            }
            expected = expected.saturating_mul(d);
        }
        true
    }
}

/// A value in a torch checkpoint that is not a tensor (epoch, args, optimizer hyper-parameters).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NonTensor {
    /// Dotted path from the checkpoint's root.
    pub name: String,
    /// `int`, `argparse.Namespace`, `dict (3 entries, 0 tensors)`, ...
    pub kind: String,
    /// Its value as JSON (opaque objects as their state).
    pub value: serde_json::Value,
    /// Tensors inside it that were not taken (only for entries outside the chosen root).
    pub tensors: usize,
}

/// How to interpret a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Take tensors from this entry (`model`, `model_ema`, `state_dict`, dotted paths allowed);
    /// `Some("")` takes the whole tree; `None` decides automatically.
    pub key: Option<String>,
    /// Remove this prefix (`module.`) from tensor names that have it.
    pub strip_prefix: Option<String>,
}

/// A checkpoint opened for reading: tensor descriptions in memory, tensor bytes in the files.
#[derive(Debug)]
pub struct TensorStore {
    path: PathBuf,
    format: Format,
    files: Vec<SourceFile>,
    /// The index json of a sharded checkpoint.
    index: Option<PathBuf>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    storages: Vec<Storage>,
    metadata: BTreeMap<String, String>,
    root_choice: RootChoice,
    non_tensors: Vec<NonTensor>,
    other_entries: Vec<NonTensor>,
}

impl TensorStore {
    /// Opens a file (any supported format), an index json, or a directory holding a checkpoint.
    pub fn open(path: impl AsRef<Path>) -> Result<TensorStore> {
        Self::open_with(path, &OpenOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<TensorStore> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| FormatError::io(path, e))?;
        if meta.is_dir() {
            return match crate::shards::find_index(path)? {
                Some(index) => crate::shards::open_sharded(path, &index, opts),
                None => {
                    let file = crate::shards::single_checkpoint_in(path)?;
                    Self::open_file(&file, opts)
                }
            };
        }
        if path.extension().is_some_and(|e| e == "json") {
            let dir = path.parent().unwrap_or(Path::new("."));
            return crate::shards::open_sharded(dir, path, opts);
        }
        Self::open_file(path, opts)
    }

    fn open_file(path: &Path, opts: &OpenOptions) -> Result<TensorStore> {
        let mut store = TensorStore {
            path: path.to_path_buf(),
            format: Format::Safetensors,
            files: Vec::new(),
            index: None,
            tensors: Vec::new(),
            by_name: HashMap::new(),
            storages: Vec::new(),
            metadata: BTreeMap::new(),
            root_choice: RootChoice::Whole,
            non_tensors: Vec::new(),
            other_entries: Vec::new(),
        };
        store.add_file(path, opts)?;
        Ok(store)
    }

    /// An empty store to which shards are added one by one.
    pub(crate) fn empty(path: &Path, index: &Path) -> TensorStore {
        TensorStore {
            path: path.to_path_buf(),
            format: Format::Safetensors,
            files: Vec::new(),
            index: Some(index.to_path_buf()),
            tensors: Vec::new(),
            by_name: HashMap::new(),
            storages: Vec::new(),
            metadata: BTreeMap::new(),
            root_choice: RootChoice::Whole,
            non_tensors: Vec::new(),
            other_entries: Vec::new(),
        }
    }

    /// Opens one file and appends its tensors. Returns the names added.
    pub(crate) fn add_file(&mut self, path: &Path, opts: &OpenOptions) -> Result<Vec<String>> {
        let src = SourceFile::open(path)?;
        let format = detect_format(path, &src.map[..src.map.len().min(16)])?;
        let file_index = self.files.len();
        if file_index == 0 {
            self.format = format;
        } else if format != self.format {
            return Err(FormatError::Invalid(format!(
                "{}: a {} shard among {} shards",
                path.display(),
                format.name(),
                self.format.name()
            )));
        }
        let mut added = Vec::new();
        match format {
            Format::Gguf => {
                return Err(FormatError::Gguf {
                    path: path.to_path_buf(),
                })
            }
            Format::Safetensors => {
                let f = crate::safetensors_io::read_safetensors(&src, file_index)?;
                if file_index == 0 {
                    self.metadata = f.metadata;
                }
                for t in f.tensors {
                    let strides = torch_contiguous_strides(&t.shape);
                    self.storages.push(t.storage);
                    added.push(t.name.clone());
                    self.push_tensor(
                        path,
                        TensorInfo {
                            name: strip(&t.name, opts),
                            dtype: t.dtype,
                            shape: t.shape,
                            strides,
                            storage_offset: 0,
                            storage: self.storages.len() - 1,
                        },
                    )?;
                }
            }
            Format::TorchZip | Format::TorchLegacy => {
                let f = if format == Format::TorchZip {
                    torch::read_zip(&src, file_index)?
                } else {
                    torch::read_legacy(&src, file_index)?
                };
                added = self.add_torch(path, f, opts)?;
            }
        }
        self.files.push(src);
        Ok(added)
    }

    fn add_torch(
        &mut self,
        path: &Path,
        f: torch::TorchFile,
        opts: &OpenOptions,
    ) -> Result<Vec<String>> {
        let tree_error = |why| FormatError::Tree {
            path: path.to_path_buf(),
            why,
        };
        let choice = tree::choose_root(&f.root, opts.key.as_deref()).map_err(tree_error)?;
        let chosen = f
            .root
            .at_path(choice.key().unwrap_or(""))
            .expect("choose_root checked the path");
        // Entries beside the chosen one are reported, never silently dropped.
        if let (Some(key), Node::Dict(entries)) = (choice.key(), &f.root) {
            for (name, node) in entries {
                if name != key.split('.').next().unwrap_or(key) {
                    self.other_entries.push(non_tensor(name.clone(), node));
                }
            }
        }
        self.root_choice = choice;

        let base = self.storages.len();
        let keys: Vec<&String> = f.storages.keys().collect();
        let storage_index: HashMap<&str, usize> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), base + i))
            .collect();
        let mut added = Vec::new();
        let leaves = tree::flatten(chosen).map_err(tree_error)?;
        for leaf in leaves {
            match leaf {
                Leaf::Tensor { name, index } => {
                    let raw = &f.tensors[index];
                    let storage = storage_index[raw.storage_key.as_str()];
                    let info = TensorInfo {
                        name: strip(&name, opts),
                        dtype: raw.dtype,
                        shape: raw.shape.clone(),
                        strides: raw.strides.clone(),
                        storage_offset: raw.storage_offset,
                        storage,
                    };
                    check_bounds(path, &info, &f.storages[raw.storage_key.as_str()])?;
                    added.push(name);
                    self.push_tensor(path, info)?;
                }
                Leaf::Other { name, node } => self.non_tensors.push(non_tensor(name, node)),
            }
        }
        self.storages.extend(f.storages.into_values());
        Ok(added)
    }

    fn push_tensor(&mut self, path: &Path, info: TensorInfo) -> Result<()> {
        if self
            .by_name
            .insert(info.name.clone(), self.tensors.len())
            .is_some()
        {
            return Err(FormatError::BadTensor {
                path: path.to_path_buf(),
                tensor: info.name,
                why: "the name occurs twice".into(),
            });
        }
        self.tensors.push(info);
        Ok(())
    }

    /// The path given to [`open`](Self::open).
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn format(&self) -> Format {
        self.format
    }
    pub fn index_file(&self) -> Option<&Path> {
        self.index.as_deref()
    }
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
    }
    pub fn file_len(&self, file: usize) -> u64 {
        self.files[file].len()
    }
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }
    pub fn storages(&self) -> &[Storage] {
        &self.storages
    }
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }
    pub fn require(&self, name: &str) -> Result<&TensorInfo> {
        self.get(name)
            .ok_or_else(|| FormatError::NoSuchTensor(name.to_string()))
    }
    /// The file a tensor's bytes are in.
    pub fn file_of(&self, t: &TensorInfo) -> &Path {
        &self.files[self.storages[t.storage].file].path
    }
    /// safetensors `__metadata__` (first shard).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
    pub fn root_choice(&self) -> &RootChoice {
        &self.root_choice
    }
    /// Non-tensor values inside the chosen root.
    pub fn non_tensors(&self) -> &[NonTensor] {
        &self.non_tensors
    }
    /// Entries beside the chosen root (`optimizer`, `epoch`, `args`, ...).
    pub fn other_entries(&self) -> &[NonTensor] {
        &self.other_entries
    }
    /// Moves out [`non_tensors`](Self::non_tensors) and [`other_entries`](Self::other_entries), leaving them
    /// empty, for a caller that reports them and would otherwise copy them.
    pub(crate) fn take_non_tensors(&mut self) -> (Vec<NonTensor>, Vec<NonTensor>) {
        (
            std::mem::take(&mut self.non_tensors),
            std::mem::take(&mut self.other_entries),
        )
    }

    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::nbytes).sum()
    }

    /// Groups of tensor names that view one storage (tied weights, views), in storage order.
    pub fn shared_storage_groups(&self) -> Vec<Vec<String>> {
        let mut by_storage: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for t in &self.tensors {
            by_storage
                .entry(t.storage)
                .or_default()
                .push(t.name.clone());
        }
        by_storage.into_values().filter(|g| g.len() > 1).collect()
    }

    /// Things a user converting this file should know: shared storages, strided tensors, data
    /// not aligned to its element size.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        for g in self.shared_storage_groups() {
            w.push(format!("tensors share one storage: {}", g.join(", ")));
        }
        for t in &self.tensors {
            if !t.is_contiguous() {
                w.push(format!(
                    "{} is not contiguous (strides {:?}); it is copied element by element",
                    t.name, t.strides
                ));
            }
            let s = &self.storages[t.storage];
            if let Some(off) = s.file_offset() {
                let start = off + (t.storage_offset * t.dtype.size()) as u64;
                if start % t.dtype.size() as u64 != 0 {
                    w.push(format!(
                        "{} starts at file offset {start}, not a multiple of its element size",
                        t.name
                    ));
                }
            }
            if let crate::source::Location::Deflated { .. } = s.location {
                w.push(format!(
                    "{} is in a compressed zip entry; it is inflated to be read",
                    t.name
                ));
            }
        }
        w
    }

    /// Reads part of a storage with `pread` (no mapping, so the resident set stays flat).
    pub fn read_storage_at(&self, s: &Storage, at: u64, buf: &mut [u8]) -> Result<()> {
        s.read_at(&self.files[s.file], at, buf)
    }

    /// Asks the kernel to start reading bytes `at..at + len` of a storage into the page cache
    /// (`posix_fadvise(WILLNEED)`), so that many scattered reads are in flight at once rather
    /// than one after the other. A hint: storages not stored in place, and errors, are ignored.
    pub fn prefetch_storage_range(&self, s: &Storage, at: u64, len: u64) {
        use std::os::fd::AsRawFd;
        if let Some(start) = s.file_offset() {
            let fd = self.files[s.file].file.as_raw_fd();
            // SAFETY: a plain system call on a descriptor this store owns; no memory is passed.
            unsafe {
                libc::posix_fadvise(
                    fd,
                    (start + at) as libc::off_t,
                    len as libc::off_t,
                    libc::POSIX_FADV_WILLNEED,
                );
            }
        }
    }

    /// Bytes `at..at + len` of a storage stored in place, read through the memory map (no copy)
    /// and kept mapped by `window` until it moves on (see [`MapWindow`]). An error for storages
    /// not stored in place, a range outside the storage, or bytes that cannot be read.
    pub fn read_mapped<'a>(
        &'a self,
        window: &mut MapWindow<'a>,
        s: &Storage,
        at: u64,
        len: u64,
        mode: MapMode,
    ) -> Result<&'a [u8]> {
        let src = &self.files[s.file];
        let start = s.file_offset().ok_or_else(|| {
            FormatError::Invalid(format!(
                "{}: {} is compressed, not readable in place",
                src.path.display(),
                s.key
            ))
        })?;
        if at.checked_add(len).is_none_or(|e| e > s.nbytes) {
            return Err(FormatError::corrupt(
                &src.path,
                format!(
                    "{}: {len} bytes at {at} lie outside its {} bytes",
                    s.key, s.nbytes
                ),
            ));
        }
        window.read(src, start + at, len, mode)
    }

    /// Whether bytes `at..at + len` of a storage stored in place are in the page cache (see
    /// [`SourceFile::resident`]); `None` when the storage is compressed, the range lies outside
    /// it, or the system cannot say.
    pub fn storage_resident(&self, s: &Storage, at: u64, len: u64) -> Option<bool> {
        at.checked_add(len).filter(|&e| e <= s.nbytes)?;
        self.files[s.file].resident(s.file_offset()? + at, len)
    }

    /// Tells the kernel we are done with a tensor's mapped pages, so that they stop counting
    /// against this process's resident memory (they stay in the page cache). Reading the tensor
    /// again simply maps them back in.
    pub fn release(&self, t: &TensorInfo) {
        let s = &self.storages[t.storage];
        if let Some(start) = s.file_offset() {
            self.files[s.file].release(start, s.nbytes);
        }
    }

    /// The bytes of the tensor's storage and the tensor's view into it.
    pub fn view(&self, t: &TensorInfo) -> Result<TensorView<'_>> {
        let s = &self.storages[t.storage];
        Ok(TensorView {
            storage: s.bytes(&self.files[s.file])?,
            dtype: t.dtype,
            shape: t.shape.clone(),
            strides: t.strides.clone(),
            offset: t.storage_offset,
        })
    }

    /// The tensor's elements, contiguous, in C order: borrowed from the file mapping when stored
    /// that way, copied otherwise.
    pub fn bytes(&self, t: &TensorInfo) -> Result<Cow<'_, [u8]>> {
        Ok(self.view(t)?.into_contiguous())
    }

    /// Streams the tensor's contiguous bytes to `w` through a buffer of [`COPY_CHUNK`] bytes, so
    /// that memory stays flat however large the tensor is: contiguous tensors are read with
    /// `pread` (or inflated as they stream, when compressed); strided views are gathered from the
    /// mapping (or from the inflated storage, at most [`crate::source::MAX_INFLATED_BYTES`]) one
    /// chunk at a time.
    /// `out` names the destination in write errors.
    pub fn copy_to(
        &self,
        t: &TensorInfo,
        w: &mut dyn Write,
        out: &Path,
        progress: &dyn Fn(u64),
    ) -> Result<()> {
        const CHUNK: usize = COPY_CHUNK;
        let s = &self.storages[t.storage];
        let src = &self.files[s.file];
        let io = |e: std::io::Error| FormatError::io(out, e);
        let mut emit = |b: &[u8]| -> Result<()> {
            w.write_all(b).map_err(io)?;
            progress(b.len() as u64);
            Ok(())
        };
        if t.numel() == 0 {
            return Ok(());
        }
        if let (true, crate::source::Location::Deflated { entry }) =
            (t.is_contiguous(), &s.location)
        {
            let at = (t.storage_offset * t.dtype.size()) as u64;
            return crate::source::stream_inflated(
                src,
                *entry,
                s.nbytes,
                at,
                t.nbytes(),
                CHUNK,
                &mut emit,
            );
        }
        if t.is_contiguous() && s.file_offset().is_some() {
            let mut at = (t.storage_offset * t.dtype.size()) as u64;
            let mut left = t.nbytes();
            let mut buf = vec![0u8; CHUNK.min(left as usize)];
            while left > 0 {
                let n = (left as usize).min(CHUNK);
                s.read_at(src, at, &mut buf[..n])?;
                w.write_all(&buf[..n]).map_err(io)?;
                progress(n as u64);
                at += n as u64;
                left -= n as u64;
            }
            return Ok(());
        }
        let view = self.view(t)?;
        gather_chunks(
            &view.storage,
            t.dtype.size(),
            &t.shape,
            &t.strides,
            t.storage_offset,
            CHUNK,
            &mut emit,
        )?;
        drop(view);
        self.release(t);
        Ok(())
    }
}

/// Size of the buffer [`TensorStore::copy_to`] streams through.
pub const COPY_CHUNK: usize = 8 << 20;

/// A view whose elements repeat (stride 0, overlapping strides) may be larger than its storage;
/// such a view is refused when it is more than this many times its storage's size...
pub const MAX_VIEW_EXPANSION: u64 = 16;
/// ...and larger than this (so small broadcasts of a few elements stay readable).
pub const MAX_EXPANDED_VIEW_BYTES: u64 = 64 << 20;

fn strip(name: &str, opts: &OpenOptions) -> String {
    match &opts.strip_prefix {
        Some(p) if !p.is_empty() => name.strip_prefix(p.as_str()).unwrap_or(name).to_string(),
        _ => name.to_string(),
    }
}

fn non_tensor(name: String, node: &Node) -> NonTensor {
    NonTensor {
        name,
        kind: node.describe(),
        value: node.to_json(),
        tensors: node.tensor_count(),
    }
}

fn torch_contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1].max(1));
    }
    strides
}

/// Refuses views that would read outside their storage, with overflow-safe arithmetic.
fn check_bounds(path: &Path, t: &TensorInfo, s: &Storage) -> Result<()> {
    let bad = |why: String| FormatError::BadTensor {
        path: path.to_path_buf(),
        tensor: t.name.clone(),
        why,
    };
    let mut numel: u128 = 1;
    let mut last: u128 = t.storage_offset as u128;
    for (&d, &st) in t.shape.iter().zip(&t.strides) {
        numel = numel.saturating_mul(d as u128);
        if d > 0 {
            last = last.saturating_add((d as u128 - 1).saturating_mul(st as u128));
        }
    }
    if numel == 0 {
        return Ok(());
    }
    if numel > u64::MAX as u128 / 16 {
        return Err(bad(format!(
            "absurd shape {}",
            crate::error::excerpt(&format!("{:?}", t.shape))
        )));
    }
    // Every reader (`bytes`, `view`, `copy_to`) materialises at most the logical size, so bounding
    // it here, at open time, bounds them all.
    let logical = numel.saturating_mul(t.dtype.size() as u128);
    if logical > (s.nbytes as u128).saturating_mul(MAX_VIEW_EXPANSION as u128)
        && logical > MAX_EXPANDED_VIEW_BYTES as u128
    {
        return Err(bad(format!(
            "a view of {logical} bytes over a storage of {} bytes repeats elements (strides {}): more than {MAX_VIEW_EXPANSION} times its storage and more than {} MiB",
            s.nbytes,
            crate::error::excerpt(&format!("{:?}", t.strides)),
            MAX_EXPANDED_VIEW_BYTES >> 20
        )));
    }
    let end = (last + 1).saturating_mul(t.dtype.size() as u128);
    if end > s.nbytes as u128 {
        return Err(bad(format!(
            "shape {}, strides {} and offset {} reach byte {end} of storage '{}', which holds {}",
            crate::error::excerpt(&format!("{:?}", t.shape)),
            crate::error::excerpt(&format!("{:?}", t.strides)),
            t.storage_offset,
            crate::error::excerpt(&s.key),
            s.nbytes
        )));
    }
    Ok(())
}

/// A strided view into a storage's bytes.
#[derive(Debug)]
pub struct TensorView<'a> {
    pub storage: Cow<'a, [u8]>,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    /// In elements.
    pub offset: usize,
}

impl<'a> TensorView<'a> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The elements in C order, borrowed when already contiguous.
    pub fn into_contiguous(self) -> Cow<'a, [u8]> {
        let es = self.dtype.size();
        let n = self.numel();
        if n == 0 {
            // torch accepts any storage offset for an empty tensor; there is nothing to read.
            return Cow::Borrowed(&[]);
        }
        let contiguous = TensorInfo {
            name: String::new(),
            dtype: self.dtype,
            shape: self.shape.clone(),
            strides: self.strides.clone(),
            storage_offset: 0,
            storage: 0,
        }
        .is_contiguous();
        if contiguous {
            let start = self.offset * es;
            return match self.storage {
                Cow::Borrowed(b) => Cow::Borrowed(&b[start..start + n * es]),
                Cow::Owned(b) => Cow::Owned(b[start..start + n * es].to_vec()),
            };
        }
        Cow::Owned(gather(
            &self.storage,
            es,
            &self.shape,
            &self.strides,
            self.offset,
        ))
    }
}

/// Copies a strided view into C order.
fn gather(src: &[u8], es: usize, shape: &[usize], strides: &[usize], offset: usize) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n * es);
    gather_chunks(src, es, shape, strides, offset, usize::MAX, &mut |b| {
        out.extend_from_slice(b);
        Ok(())
    })
    .expect("collecting into memory cannot fail");
    out
}

/// Hands a strided view's elements, in C order, to `emit` in pieces of at most `chunk` bytes
/// (copied through one buffer of that size, or borrowed from `src` for long contiguous runs).
fn gather_chunks(
    src: &[u8],
    es: usize,
    shape: &[usize],
    strides: &[usize],
    offset: usize,
    chunk: usize,
    emit: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let n: usize = shape.iter().product();
    if n == 0 {
        return Ok(());
    }
    let chunk = chunk.max(es);
    let mut buf: Vec<u8> = Vec::with_capacity(chunk.min(n.saturating_mul(es)));
    let rank = shape.len();
    let mut idx = vec![0usize; rank];
    let (inner, inner_stride) = if rank == 0 {
        (1, 1)
    } else {
        (shape[rank - 1], strides[rank - 1])
    };
    loop {
        let base = offset + idx.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        if inner_stride == 1 {
            let run = &src[base * es..(base + inner) * es];
            if buf.len() + run.len() <= chunk {
                buf.extend_from_slice(run);
            } else {
                if !buf.is_empty() {
                    emit(&buf)?;
                    buf.clear();
                }
                for piece in run.chunks(chunk) {
                    emit(piece)?;
                }
            }
        } else {
            for j in 0..inner {
                if buf.len() + es > chunk {
                    emit(&buf)?;
                    buf.clear();
                }
                let at = (base + j * inner_stride) * es;
                buf.extend_from_slice(&src[at..at + es]);
            }
        }
        // Advance the multi-index over all dimensions but the innermost.
        let mut d = rank.saturating_sub(1);
        loop {
            if d == 0 {
                if !buf.is_empty() {
                    emit(&buf)?;
                }
                return Ok(());
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_transposes() {
        // 2x3 matrix stored row-major, viewed transposed (3x2, strides (1, 3)).
        let src: Vec<u8> = (0u8..6).collect();
        let out = gather(&src, 1, &[3, 2], &[1, 3], 0);
        assert_eq!(out, vec![0, 3, 1, 4, 2, 5]);
        let out = gather(&src, 1, &[2], &[2], 1);
        assert_eq!(out, vec![1, 3]);
        assert_eq!(gather(&src, 2, &[], &[], 1), vec![2, 3]);
    }

    #[test]
    fn gather_chunks_streams_in_bounded_pieces() {
        let src: Vec<u8> = (0u8..24).collect();
        for chunk in [1, 2, 3, 5, 7, 64] {
            for (shape, strides, es) in [
                (vec![3usize, 4usize], vec![1usize, 3usize], 2usize),
                (vec![2, 6], vec![6, 1], 2),
                (vec![4, 3], vec![0, 1], 1),
            ] {
                let mut pieces = Vec::new();
                gather_chunks(&src, es, &shape, &strides, 0, chunk, &mut |b| {
                    pieces.push(b.to_vec());
                    Ok(())
                })
                .unwrap();
                assert!(pieces.iter().all(|p| p.len() <= chunk.max(es)), "{chunk}");
                assert_eq!(pieces.concat(), gather(&src, es, &shape, &strides, 0));
            }
        }
    }

    /// Views that repeat elements: small broadcasts pass, large ones are refused at the limits.
    #[test]
    fn repeated_elements_are_bounded_at_open() {
        let storage = |nbytes: u64| Storage {
            file: 0,
            key: "0".into(),
            nbytes,
            location: crate::source::Location::Mapped { start: 0 },
        };
        let view = |shape: Vec<usize>, strides: Vec<usize>| TensorInfo {
            name: "w".into(),
            dtype: DType::U8,
            shape,
            strides,
            storage_offset: 0,
            storage: 0,
        };
        let check = |t: &TensorInfo, s: &Storage| check_bounds(Path::new("x.pth"), t, s);
        const MIB: usize = 1 << 20;
        // A broadcast of 3 bytes to 64 MiB: allowed (at the absolute limit)...
        assert!(check(&view(vec![64 * MIB / 4, 4], vec![0, 1]), &storage(4)).is_ok());
        // ...one row more is refused.
        let e = check(&view(vec![64 * MIB / 4 + 1, 4], vec![0, 1]), &storage(4)).unwrap_err();
        assert!(e.to_string().contains("repeats elements"), "{e}");
        // Over an 8 MiB storage: 16 times (128 MiB) is allowed, 17 times is not.
        let s8 = storage(8 << 20);
        assert!(check(&view(vec![16, 8 * MIB], vec![0, 1]), &s8).is_ok());
        assert!(check(&view(vec![17, 8 * MIB], vec![0, 1]), &s8).is_err());
        // The hostile shapes.
        for shape in [vec![16384, 32768], vec![1 << 20, 1 << 20]] {
            let e = check(&view(shape, vec![0, 0]), &storage(1)).unwrap_err();
            assert!(e.to_string().contains("tensor 'w'"), "{e}");
        }
    }

    #[test]
    fn contiguity_ignores_unit_dimensions() {
        let t = |shape: Vec<usize>, strides: Vec<usize>| TensorInfo {
            name: String::new(),
            dtype: DType::F32,
            shape,
            strides,
            storage_offset: 0,
            storage: 0,
        };
        assert!(t(vec![2, 3], vec![3, 1]).is_contiguous());
        assert!(!t(vec![3, 2], vec![1, 3]).is_contiguous());
        assert!(t(vec![1, 3], vec![99, 1]).is_contiguous());
        assert!(t(vec![0, 3], vec![7, 7]).is_contiguous());
        assert!(t(vec![], vec![]).is_contiguous());
    }
}
