//! A teacher weight as one logical matrix, however it is stored: a single tensor, row blocks
//! stacked (q/k/v), model-parallel pieces (Meta shards), rows in Meta's interleaved-RoPE order.
//! Gathering reads only the selected rows, straight from the memory map.

use illama_formats::{DType, TensorView};

/// Part of a row block held by one stored tensor (a model-parallel shard, or the whole block).
pub(crate) struct Piece<'a> {
    pub view: TensorView<'a>,
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
    pub pieces: Vec<Piece<'a>>,
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

impl Matrix<'_> {
    /// The elements at `rows x cols` (C order), in the teacher's dtype. For a vector the only
    /// column is 0.
    pub fn gather(&self, rows: &[usize], cols: &[usize]) -> Vec<u8> {
        let es = self.dtype.size();
        let mut out = Vec::with_capacity(rows.len() * cols.len() * es);
        for &r in rows {
            let (block, mut local) = self.block_of(r);
            if let Some(hd) = block.meta_rope_head_dim {
                local = hf_to_meta_row(local, hd);
            }
            let in_row: Vec<&Piece<'_>> = block
                .pieces
                .iter()
                .filter(|p| (p.row0..p.row0 + p.rows).contains(&local))
                .collect();
            if let [p] = in_row.as_slice() {
                if p.col0 == 0 && p.cols == self.cols {
                    let (base, stride) = row_base(p, local - p.row0);
                    let data = &p.view.storage[..];
                    for &c in cols {
                        let at = (base + c * stride) * es;
                        out.extend_from_slice(&data[at..at + es]);
                    }
                    continue;
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
        }
        out
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
