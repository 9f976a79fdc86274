//! A teacher weight as one logical matrix, however it is stored: a single tensor, row blocks
//! stacked (q/k/v), model-parallel pieces (Meta shards), rows in Meta's interleaved-RoPE order.
//! GGUF tensors (possibly block-quantised) as rows read one at a time.
//! Gathering reads only the selected rows. Whole rows stored in place are read through the
//! memory map, each thread keeping only the few megabytes around its current row mapped (see
//! [`MapWindow`]). Rows split over model-parallel pieces and strided views are read through the
//! map too, and stay mapped until the caller releases the teacher weight (one weight at most).

use half::{bf16, f16};
use illama_formats::gguf::{GgufFile, GgufTensor};
use illama_formats::{DType, FormatError, MapMode, MapWindow, Storage, TensorStore, TensorView};

/// Part of a row block held by one stored tensor (a model-parallel shard, or the whole block).
pub(crate) struct Piece<'a> {
    pub view: TensorView<'a>,
    /// The storage when it lies uncompressed in the file: whole rows are then read in place
    /// through a [`MapWindow`], which maps the pages around the rows being read and gives them
    /// back as it moves on (reading them without the window would leave every page touched
    /// counted against the resident set).
    pub in_file: Option<(&'a TensorStore, &'a Storage)>,
    pub row0: usize,
    pub col0: usize,
    pub rows: usize,
    pub cols: usize,
}

/// Rows of the logical matrix coming from one teacher weight (q, k or v; or the only one).
pub(crate) struct RowBlock<'a> {
    pub rows: usize,
    /// Meta stores wq/wk rows in interleaved-RoPE order; Hugging Face row `i` of head `h` is
    /// Meta row `h * hd + 2 * (i % (hd/2)) + i / (hd/2)` (transformers' `permute`).
    pub meta_rope_head_dim: Option<usize>,
    pub source: RowSource<'a>,
}

/// Where a row block's elements are stored.
pub(crate) enum RowSource<'a> {
    /// Stored tensors tiling the block (one, or one per model-parallel shard).
    Pieces(Vec<Piece<'a>>),
    /// One GGUF tensor, read a row at a time, dequantised when its type is not the matrix's.
    Gguf {
        file: &'a GgufFile,
        tensor: &'a GgufTensor,
    },
}

pub(crate) struct Matrix<'a> {
    pub blocks: Vec<RowBlock<'a>>,
    pub cols: usize,
    pub dtype: DType,
}

fn hf_to_meta_row(row: usize, head_dim: usize) -> usize {
    let (head, i) = (row / head_dim, row % head_dim);
    let half = head_dim / 2;
    head * head_dim + 2 * (i % half) + i / half
}

/// Fewer rows than this are gathered on the calling thread alone.
const ROWS_PER_THREAD: usize = 32;

/// Rows a gathering thread takes at a time (see [`Work`]).
const ROWS_PER_BLOCK: usize = 16;

/// Rows sampled to decide whether a gather needs read-ahead hints (see [`Matrix::prefetch`]).
const RESIDENCY_PROBES: usize = 16;

/// The most threads one gather uses. Each keeps up to two [`MapWindow`] chunks (4 MiB) of the
/// teacher mapped, and past a few threads the rows come no faster: reading them is bound by
/// memory bandwidth, not by cores.
const MAX_GATHER_THREADS: usize = 4;

fn gather_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_GATHER_THREADS))
    })
}

/// A selected row stored whole in one uncompressed piece: the bytes from its first to its last
/// selected column, read in place through the memory map.
struct MappedRow<'a> {
    store: &'a TensorStore,
    storage: &'a Storage,
    /// Byte offset into the storage of the row's first selected column.
    at: u64,
    len: u64,
}

impl Matrix<'_> {
    /// The elements at `rows x cols` (C order), in the matrix's dtype, into `out`, which holds
    /// exactly that many (its previous contents are all overwritten). For a vector the only
    /// column is 0. Large selections are split by rows over one thread per core: reading the rows
    /// out of the page cache is most of the time selection takes.
    pub fn gather(
        &self,
        rows: &[usize],
        cols: &[usize],
        out: &mut [u8],
    ) -> Result<(), FormatError> {
        let row_bytes = cols.len() * self.dtype.size();
        assert_eq!(out.len(), rows.len() * row_bytes, "gather: output size");
        let span = column_span(cols);
        let mode = self.prefetch(rows, span);
        let threads = gather_threads().min(rows.len() / ROWS_PER_THREAD).max(1);
        if out.is_empty() {
            return Ok(());
        }
        if threads == 1 {
            return self.gather_rows(rows, cols, span, out, mode, &mut MapWindow::default());
        }
        let blocks: Vec<_> = rows
            .chunks(ROWS_PER_BLOCK)
            .zip(out.chunks_mut(ROWS_PER_BLOCK * row_bytes))
            .map(Some)
            .collect();
        let per_thread = blocks.len().div_ceil(threads);
        let runs = (0..threads)
            .map(|t| (t * per_thread).min(blocks.len())..((t + 1) * per_thread).min(blocks.len()))
            .collect();
        let work = std::sync::Mutex::new(Work { runs, blocks });
        let work = &work;
        let worker = move |me: usize| -> Result<(), FormatError> {
            let mut window = MapWindow::default();
            while let Some((part, dst)) = Work::next(work, me) {
                self.gather_rows(part, cols, span, dst, mode, &mut window)?;
            }
            Ok(())
        };
        std::thread::scope(|s| {
            let helpers: Vec<_> = (1..threads).map(|me| s.spawn(move || worker(me))).collect();
            let mine = worker(0);
            helpers
                .into_iter()
                .map(|h| h.join().expect("a gathering thread panicked"))
                .chain([mine])
                .collect()
        })
    }

    /// Row `r`'s selected span when it can be read in place (see [`MappedRow`]); `span` is the
    /// lowest and highest selected column.
    fn mapped_row(&self, r: usize, span: Option<(usize, usize)>) -> Option<MappedRow<'_>> {
        let (block, mut local) = self.block_of(r);
        if let Some(hd) = block.meta_rope_head_dim {
            local = hf_to_meta_row(local, hd);
        }
        let RowSource::Pieces(pieces) = &block.source else {
            return None;
        };
        let mut in_row = pieces
            .iter()
            .filter(|p| (p.row0..p.row0 + p.rows).contains(&local));
        let (p, None) = (in_row.next()?, in_row.next()) else {
            return None;
        };
        let (store, storage) = p.in_file?;
        let (base, stride) = row_base(p, local - p.row0);
        let (first, last) = span?;
        let es = self.dtype.size();
        (p.col0 == 0 && p.cols == self.cols && stride == 1).then(|| MappedRow {
            store,
            storage,
            at: ((base + first) * es) as u64,
            len: ((last + 1 - first) * es) as u64,
        })
    }

    /// On a cold page cache, hints the kernel to read every selected row now (one
    /// `posix_fadvise(WILLNEED)` each), so the rows arrive in parallel instead of one page
    /// fault at a time. A few rows are probed first: when they are all cached, as they are when
    /// the teacher was read recently, no hint is sent (each costs a system call). Returns how
    /// to map the rows: whole chunks when cached, only the rows otherwise.
    fn prefetch(&self, rows: &[usize], span: Option<(usize, usize)>) -> MapMode {
        let step = (rows.len() / RESIDENCY_PROBES).max(1);
        let cached = rows
            .iter()
            .step_by(step)
            .filter_map(|&r| self.mapped_row(r, span))
            .all(|m| m.store.storage_resident(m.storage, m.at, m.len) == Some(true));
        if cached {
            return MapMode::WholeChunks;
        }
        for m in rows.iter().filter_map(|&r| self.mapped_row(r, span)) {
            m.store.prefetch_storage_range(m.storage, m.at, m.len);
        }
        MapMode::Exact
    }

    /// Rows `rows` into `dst`, `cols.len()` elements each; `span` is `cols`' lowest and
    /// highest.
    fn gather_rows<'a>(
        &'a self,
        rows: &[usize],
        cols: &[usize],
        span: Option<(usize, usize)>,
        dst: &mut [u8],
        mode: MapMode,
        window: &mut MapWindow<'a>,
    ) -> Result<(), FormatError> {
        let es = self.dtype.size();
        let mut raw = Vec::new();
        let mut row_f32 = Vec::new();
        // The GGUF row in `raw`/`row_f32` (file offset of its tensor, row), read once for all
        // the elements a vector gives.
        let mut loaded: Option<(u64, usize)> = None;
        for (&r, dst) in rows.iter().zip(dst.chunks_exact_mut(cols.len() * es)) {
            if let Some(m) = self.mapped_row(r, span) {
                let src = m.store.read_mapped(window, m.storage, m.at, m.len, mode)?;
                let first = span.map_or(0, |(first, _)| first);
                match es {
                    2 => pick::<2>(src, first, cols, dst),
                    4 => pick::<4>(src, first, cols, dst),
                    8 => pick::<8>(src, first, cols, dst),
                    _ => pick::<1>(src, first, cols, dst),
                }
                continue;
            }
            let (block, mut local) = self.block_of(r);
            if let Some(hd) = block.meta_rope_head_dim {
                local = hf_to_meta_row(local, hd);
            }
            match &block.source {
                RowSource::Pieces(pieces) => gather_pieces(pieces, self.cols, es, local, cols, dst),
                RowSource::Gguf { file, tensor } => {
                    // A vector is one stored row: logical row `local` is its element `local`.
                    let (row, picks) = if tensor.shape.len() == 1 {
                        (0, std::slice::from_ref(&local))
                    } else {
                        (local, cols)
                    };
                    let key = (tensor.offset, row);
                    let plain = tensor.ggml_type.plain_dtype() == Some(self.dtype);
                    if loaded != Some(key) {
                        if plain {
                            file.read_rows(tensor, row, 1, &mut raw)?;
                        } else {
                            row_f32.resize(tensor.row_len(), 0.0);
                            file.read_row_f32(tensor, row, &mut raw, &mut row_f32)?;
                        }
                        loaded = Some(key);
                    }
                    for (&c, d) in picks.iter().zip(dst.chunks_exact_mut(es)) {
                        if plain {
                            d.copy_from_slice(&raw[c * es..(c + 1) * es]);
                        } else {
                            store_as(self.dtype, row_f32[c], d);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn block_of(&self, mut r: usize) -> (&RowBlock<'_>, usize) {
        for b in &self.blocks {
            if r < b.rows {
                return (b, r);
            }
            r -= b.rows;
        }
        panic!("row {r} beyond the matrix");
    }
}

/// The blocks of rows a gather still has to do, shared by its threads. Each thread owns a run
/// of consecutive blocks and takes them front to back; once its run is done it takes blocks
/// from the back of the longest run left. Every thread thus reads through the teacher in order
/// (its [`MapWindow`] moves on smoothly), and none sits idle while another still has rows: the
/// threads share the cores with the writer, which slows one of them at a time.
struct Work<'r, 'o> {
    runs: Vec<std::ops::Range<usize>>,
    /// Each block's rows and its part of the output, taken once.
    blocks: Vec<Option<(&'r [usize], &'o mut [u8])>>,
}

impl<'r, 'o> Work<'r, 'o> {
    fn next(work: &std::sync::Mutex<Self>, me: usize) -> Option<(&'r [usize], &'o mut [u8])> {
        let mut w = work.lock().unwrap_or_else(|e| e.into_inner());
        let block = match w.runs[me].next() {
            Some(b) => b,
            None => w.runs.iter_mut().max_by_key(|r| r.len())?.next_back()?,
        };
        let taken = w.blocks[block].take();
        Some(taken.expect("runs do not overlap, so each block is taken once"))
    }
}

/// The lowest and highest of the selected columns.
fn column_span(cols: &[usize]) -> Option<(usize, usize)> {
    Some((*cols.iter().min()?, *cols.iter().max()?))
}

/// Row `local` of a block stored as pieces that [`Matrix::mapped_row`] cannot read in place
/// (model-parallel pieces, strided or compressed storages): the elements at `cols`, into `dst`.
fn gather_pieces(
    pieces: &[Piece<'_>],
    width: usize,
    es: usize,
    local: usize,
    cols: &[usize],
    dst: &mut [u8],
) {
    let in_row: Vec<&Piece<'_>> = pieces
        .iter()
        .filter(|p| (p.row0..p.row0 + p.rows).contains(&local))
        .collect();
    for (&c, d) in cols.iter().zip(dst.chunks_exact_mut(es)) {
        let p = match in_row.as_slice() {
            [p] if p.col0 == 0 && p.cols == width => p,
            _ => in_row
                .iter()
                .find(|p| (p.col0..p.col0 + p.cols).contains(&c))
                .expect("pieces tile the matrix (checked when built)"),
        };
        let (base, stride) = row_base(p, local - p.row0);
        let at = (base + (c - p.col0) * stride) * es;
        d.copy_from_slice(&p.view.storage[at..at + es]);
    }
}

/// Copies the `N`-byte elements `cols` of `src` (which starts at column `first`) into `dst`;
/// `N` known at compile time makes each copy a register move rather than a `memcpy` call.
fn pick<const N: usize>(src: &[u8], first: usize, cols: &[usize], dst: &mut [u8]) {
    if cols.is_empty() {
        return;
    }
    let es = dst.len() / cols.len();
    if es != N {
        // Element sizes without a specialisation: copied a byte at a time.
        for (d, &c) in dst.chunks_exact_mut(es).zip(cols) {
            let at = (c - first) * es;
            d.copy_from_slice(&src[at..at + es]);
        }
        return;
    }
    for (d, &c) in dst.chunks_exact_mut(N).zip(cols) {
        let at = (c - first) * N;
        let v: [u8; N] = src[at..at + N].try_into().expect("N bytes");
        d.copy_from_slice(&v);
    }
}

/// Writes `v` as one element of `dtype` into `dst`, rounding to nearest even as torch's casts
/// do. GGUF rows are decoded to f32 and gathered in the output's dtype, so each value is rounded
/// once.
fn store_as(dtype: DType, v: f32, dst: &mut [u8]) {
    match dtype {
        DType::F32 => dst.copy_from_slice(&v.to_le_bytes()),
        DType::F16 => dst.copy_from_slice(&f16::from_f32(v).to_le_bytes()),
        DType::BF16 => dst.copy_from_slice(&bf16::from_f32(v).to_le_bytes()),
        DType::F64 => dst.copy_from_slice(&(v as f64).to_le_bytes()),
        _ => unreachable!("GGUF teachers have a float dtype (checked when opened)"),
    }
}

/// Element offset of a piece's row and the stride between its columns.
fn row_base(p: &Piece<'_>, row: usize) -> (usize, usize) {
    let v = &p.view;
    match v.strides.as_slice() {
        [s0, s1] => (v.offset + row * s0, *s1),
        [s0] => (v.offset + row * s0, 0),
        _ => unreachable!("pieces are vectors or matrices (checked when built)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_take_their_own_blocks_in_order_then_the_back_of_the_longest_run() {
        let rows: Vec<usize> = (0..10).collect();
        let mut out = [0u8; 10];
        let blocks = rows.chunks(1).zip(out.chunks_mut(1)).map(Some).collect();
        let work = std::sync::Mutex::new(Work {
            runs: vec![0..2, 2..6, 6..10],
            blocks,
        });
        let take = |me| Work::next(&work, me).map(|(rows, _)| rows[0]);
        assert_eq!(
            take(1),
            Some(2),
            "a thread starts at the front of its own run"
        );
        assert_eq!(take(0), Some(0));
        assert_eq!(take(0), Some(1));
        // Thread 0's run is done: it takes from the back of the longest run left (thread 2's).
        assert_eq!(take(0), Some(9));
        assert_eq!(take(2), Some(6));
        assert_eq!(
            take(0),
            Some(5),
            "thread 1's run (3 left) is now the longest"
        );
        let rest: Vec<usize> = std::iter::from_fn(|| take(1)).collect();
        assert_eq!(
            rest,
            vec![3, 4, 8, 7],
            "every block is handed out exactly once"
        );
        assert_eq!(take(2), None);
    }

    #[test]
    fn meta_row_order_matches_the_hf_permutation() {
        // head_dim 4: HF rows (0,1,2,3) of a head come from Meta rows (0,2,1,3).
        let got: Vec<usize> = (0..8).map(|r| hf_to_meta_row(r, 4)).collect();
        assert_eq!(got, vec![0, 2, 1, 3, 4, 6, 5, 7]);
    }
}
