//! A teacher weight as one logical matrix, however it is stored: a single tensor, row blocks
//! stacked (q/k/v), model-parallel pieces (Meta shards), rows in Meta's interleaved-RoPE order.
//! GGUF tensors (possibly block-quantised) as rows read one at a time.
//! Gathering reads only the selected rows, straight from the memory map or with `pread`.

use half::{bf16, f16};
use illama_formats::gguf::{GgufFile, GgufTensor};
use illama_formats::{DType, FormatError, Storage, TensorStore, TensorView};

/// Part of a row block held by one stored tensor (a model-parallel shard, or the whole block).
pub(crate) struct Piece<'a> {
    pub view: TensorView<'a>,
    /// The storage when it lies uncompressed in the file: rows are then read with `pread`,
    /// which leaves the resident set flat (touching the mapping would count whole page folios,
    /// megabytes at a time, against it) and costs one copy.
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

impl Matrix<'_> {
    /// The elements at `rows x cols` (C order), in the matrix's dtype. For a vector the only
    /// column is 0. Large selections are split by rows over one thread per core: reading the
    /// rows (a copy out of the page cache) is most of the time selection takes.
    pub fn gather(&self, rows: &[usize], cols: &[usize]) -> Result<Vec<u8>, FormatError> {
        self.prefetch(rows, cols);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cores.min(rows.len() / ROWS_PER_THREAD).max(1);
        if threads == 1 {
            return self.gather_rows(rows, cols);
        }
        let parts: Vec<Result<Vec<u8>, FormatError>> = std::thread::scope(|s| {
            let handles: Vec<_> = rows
                .chunks(rows.len().div_ceil(threads))
                .map(|part| s.spawn(move || self.gather_rows(part, cols)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a gathering thread panicked"))
                .collect()
        });
        let mut out = Vec::with_capacity(rows.len() * cols.len() * self.dtype.size());
        for p in parts {
            out.extend_from_slice(&p?);
        }
        Ok(out)
    }

    /// Hints the kernel to read every selected row of the stored pieces now: on a cold page
    /// cache the rows then arrive in parallel instead of one synchronous read at a time.
    fn prefetch(&self, rows: &[usize], cols: &[usize]) {
        let es = self.dtype.size();
        let (Some(&first), Some(&last)) = (cols.iter().min(), cols.iter().max()) else {
            return;
        };
        for &r in rows {
            let (block, mut local) = self.block_of(r);
            if let Some(hd) = block.meta_rope_head_dim {
                local = hf_to_meta_row(local, hd);
            }
            if let RowSource::Pieces(pieces) = &block.source {
                for p in pieces {
                    if let (Some((store, storage)), true) =
                        (p.in_file, (p.row0..p.row0 + p.rows).contains(&local))
                    {
                        let (base, stride) = row_base(p, local - p.row0);
                        if stride == 1 && p.col0 == 0 && p.cols == self.cols {
                            let lo = ((base + first) * es) as u64;
                            store.prefetch_storage_range(
                                storage,
                                lo,
                                ((last + 1 - first) * es) as u64,
                            );
                        }
                    }
                }
            }
        }
    }

    fn gather_rows(&self, rows: &[usize], cols: &[usize]) -> Result<Vec<u8>, FormatError> {
        let es = self.dtype.size();
        let mut out = Vec::with_capacity(rows.len() * cols.len() * es);
        let mut raw = Vec::new();
        let mut row_f32 = Vec::new();
        // The GGUF row in `raw`/`row_f32` (file offset of its tensor, row), read once for all
        // the elements a vector gives.
        let mut loaded: Option<(u64, usize)> = None;
        for &r in rows {
            let (block, mut local) = self.block_of(r);
            if let Some(hd) = block.meta_rope_head_dim {
                local = hf_to_meta_row(local, hd);
            }
            match &block.source {
                RowSource::Pieces(pieces) => {
                    gather_pieces(pieces, self.cols, es, local, cols, &mut raw, &mut out)?
                }
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
                    for &c in picks {
                        if plain {
                            out.extend_from_slice(&raw[c * es..(c + 1) * es]);
                        } else {
                            push_as(self.dtype, row_f32[c], &mut out);
                        }
                    }
                }
            }
        }
        Ok(out)
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

/// Row `local` of a block stored as pieces: the elements at `cols`.
fn gather_pieces(
    pieces: &[Piece<'_>],
    width: usize,
    es: usize,
    local: usize,
    cols: &[usize],
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    let in_row: Vec<&Piece<'_>> = pieces
        .iter()
        .filter(|p| (p.row0..p.row0 + p.rows).contains(&local))
        .collect();
    if let [p] = in_row.as_slice() {
        if p.col0 == 0 && p.cols == width {
            let (base, stride) = row_base(p, local - p.row0);
            if let (Some((store, storage)), 1, Some(&first), Some(&last)) =
                (p.in_file, stride, cols.iter().min(), cols.iter().max())
            {
                // The span from the lowest to the highest selected column, in one read.
                scratch.resize((last + 1 - first) * es, 0);
                store.read_storage_at(storage, ((base + first) * es) as u64, scratch)?;
                let start = out.len();
                out.resize(start + cols.len() * es, 0);
                let dst = &mut out[start..];
                match es {
                    2 => pick::<2>(scratch, first, cols, dst),
                    4 => pick::<4>(scratch, first, cols, dst),
                    8 => pick::<8>(scratch, first, cols, dst),
                    _ => pick::<1>(scratch, first, cols, dst),
                }
                return Ok(());
            }
            let data = &p.view.storage[..];
            for &c in cols {
                let at = (base + c * stride) * es;
                out.extend_from_slice(&data[at..at + es]);
            }
            return Ok(());
        }
    }
    for &c in cols {
        let p = in_row
            .iter()
            .find(|p| (p.col0..p.col0 + p.cols).contains(&c))
            .expect("pieces tile the matrix (checked when built)");
        let (base, stride) = row_base(p, local - p.row0);
        let at = (base + (c - p.col0) * stride) * es;
        out.extend_from_slice(&p.view.storage[at..at + es]);
    }
    Ok(())
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

/// Appends `v` as one element of `dtype`, rounding to nearest even as torch's casts do. GGUF
/// rows are decoded to f32 and gathered in the output's dtype, so each value is rounded once.
fn push_as(dtype: DType, v: f32, out: &mut Vec<u8>) {
    match dtype {
        DType::F32 => out.extend_from_slice(&v.to_le_bytes()),
        DType::F16 => out.extend_from_slice(&f16::from_f32(v).to_le_bytes()),
        DType::BF16 => out.extend_from_slice(&bf16::from_f32(v).to_le_bytes()),
        DType::F64 => out.extend_from_slice(&(v as f64).to_le_bytes()),
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
    fn meta_row_order_matches_the_hf_permutation() {
        // head_dim 4: HF rows (0,1,2,3) of a head come from Meta rows (0,2,1,3).
        let got: Vec<usize> = (0..8).map(|r| hf_to_meta_row(r, 4)).collect();
        assert_eq!(got, vec![0, 2, 1, 3, 4, 6, 5, 7]);
    }
}
