//! The blocks' training pass on the CPU in f32 with a hand-written backward pass.
//!
//! Why not candle's autograd: every graph node costs a pass over memory forward and, in
//! backward, a zero-filled gradient buffer plus an addition into it; the attention runs as
//! `batch x heads` small products, each split over all threads. On a 2-core CPU that made the
//! backward pass 1.6-2.8x slower than PyTorch's. Here a block is a handful of large products
//! (the `gemm` crate, the same kernels candle uses) and fused row passes, the attention of each
//! (sample, head) is one task on one thread, and activations are kept only where backward needs
//! them.
//!
//! It computes what [`crate::Block`]'s training path computes (the tests compare every gradient
//! with candle's autograd); the patch embedding, the final norm, the head and the loss stay on
//! candle's autograd (see [`crate::TrainForward`]).

mod kernels;

use crate::model::Block;
use candle_core::{Result, Tensor};
use kernels::{buffer, give_back, matmul, product, threads, QkvRows, SharedOut, Strided};
use rayon::prelude::*;

/// The sizes of one pass: `batch` samples of `tokens` tokens of `dim` values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub batch: usize,
    pub tokens: usize,
    pub dim: usize,
    pub heads: usize,
    pub hidden: usize,
}

impl Dims {
    fn rows(&self) -> usize {
        self.batch * self.tokens
    }

    fn head_dim(&self) -> usize {
        self.dim / self.heads
    }
}

/// What the backward pass of one block needs from its forward pass.
struct BlockTape {
    x: Vec<f32>,
    rstd1: Vec<f32>,
    h1: Vec<f32>,
    /// [rows, 3C]: q rotated and scaled, k rotated, v.
    qkv: Vec<f32>,
    /// [batch, heads, N, N]: the softmax of the scores, before the mask.
    probs: Vec<f32>,
    /// The heads' outputs before the projection: [rows, C], or only the last token's rows
    /// [batch, C] in the last block (see `last_token_only`).
    attn_out: Vec<f32>,
    /// Whether everything after the attention ran on the last token's rows only: the last
    /// block, whose other rows nothing reads (the head takes the last token).
    last_token_only: bool,
    x1: Vec<f32>,
    rstd2: Vec<f32>,
    h2: Vec<f32>,
    /// [rows, 2F]: each row `fc1(h2)` then `fc3(h2)`.
    fc13: Vec<f32>,
    gate: Vec<f32>,
    /// Per-sample factors of the drop-path of the attention and MLP branches.
    keep_attn: Option<Vec<f32>>,
    keep_mlp: Option<Vec<f32>>,
}

impl BlockTape {
    /// Hands the large buffers back for reuse (inference keeps no tape).
    fn give_back(self) {
        give_back([
            self.x,
            self.h1,
            self.qkv,
            self.probs,
            self.attn_out,
            self.x1,
            self.h2,
            self.fc13,
            self.gate,
        ]);
    }
}

/// The forward pass of all blocks, kept for [`BlocksTape::backward`].
pub(crate) struct BlocksTape {
    dims: Dims,
    blocks: Vec<Block>,
    /// Each block's weights as its forward pass read them, and its tape.
    tapes: Vec<(Weights, BlockTape)>,
    mask: Option<Vec<f32>>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    eps: f32,
}

/// The per-sample drop-path factors of one block's branches (`None`: every sample kept as is).
pub(crate) struct DropFactors {
    pub attn: Option<Vec<f32>>,
    pub mlp: Option<Vec<f32>>,
}

/// The gradient of each parameter of a block, by the parameter's tensor.
pub(crate) type ParamGrads = Vec<(Tensor, Vec<f32>)>;

/// A tensor's values as f32 (a copy: the weights of a block are small next to its activations).
fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// The weights of one block (biases empty when the layer has none).
struct Weights {
    norm1: Vec<f32>,
    qkv_w: Vec<f32>,
    qkv_b: Vec<f32>,
    proj_w: Vec<f32>,
    proj_b: Vec<f32>,
    norm2: Vec<f32>,
    /// fc1's rows then fc3's: [2F, C], one product for both.
    fc13: Vec<f32>,
    fc2: Vec<f32>,
}

impl Weights {
    fn of(b: &Block) -> Result<Weights> {
        let bias = |t: &Option<Tensor>| -> Result<Vec<f32>> {
            t.as_ref()
                .map(values)
                .transpose()
                .map(|v| v.unwrap_or_default())
        };
        Ok(Weights {
            norm1: values(&b.norm1.weight)?,
            qkv_w: values(&b.attn.qkv.weight)?,
            qkv_b: bias(&b.attn.qkv.bias)?,
            proj_w: values(&b.attn.proj.weight)?,
            proj_b: bias(&b.attn.proj.bias)?,
            norm2: values(&b.norm2.weight)?,
            fc13: [values(&b.mlp.fc1.weight)?, values(&b.mlp.fc3.weight)?].concat(),
            fc2: values(&b.mlp.fc2.weight)?,
        })
    }
}

impl BlocksTape {
    /// Runs `blocks` on `x` [batch, tokens, dim] (row-major values) with the soft mask
    /// `mask` [N, N] (`None`: all ones) and each block's drop-path factors. Returns the last
    /// token's output [batch, dim] (all the head reads: the last block computes nothing else
    /// after its attention) and, if `keep_tape`, the tape for [`BlocksTape::backward`].
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        blocks: &[Block],
        dims: Dims,
        x: Vec<f32>,
        mask: Option<Vec<f32>>,
        rope: (&Tensor, &Tensor),
        keep: Vec<DropFactors>,
        eps: f64,
        keep_tape: bool,
    ) -> Result<(Vec<f32>, Option<BlocksTape>)> {
        let mut tape = BlocksTape {
            dims,
            blocks: blocks.to_vec(),
            tapes: Vec::with_capacity(blocks.len()),
            mask,
            cos: values(rope.0)?,
            sin: values(rope.1)?,
            eps: eps as f32,
        };
        // The attention tasks write disjoint (sample, head) blocks that must cover whole rows.
        if dims.heads == 0 || dims.dim % dims.heads != 0 || dims.head_dim() % 2 != 0 {
            candle_core::bail!(
                "{} heads do not split {} values into even heads",
                dims.heads,
                dims.dim
            );
        }
        if x.len() != dims.rows() * dims.dim {
            candle_core::bail!(
                "{} values for {} rows of {}",
                x.len(),
                dims.rows(),
                dims.dim
            );
        }
        if tape.cos.len() != dims.tokens * dims.head_dim() / 2 {
            candle_core::bail!("rope tables do not match {} tokens", dims.tokens);
        }
        let mut x = x;
        let last = blocks.len().saturating_sub(1);
        for (i, (block, keep)) in blocks.iter().zip(keep).enumerate() {
            let w = Weights::of(block)?;
            let (out, t) = tape.block_forward(&w, x, keep, i == last);
            if keep_tape {
                tape.tapes.push((w, t));
            } else {
                t.give_back();
            }
            x = out;
        }
        Ok((x, keep_tape.then_some(tape)))
    }

    fn qkv_rows(&self) -> QkvRows<'_> {
        let hd = self.dims.head_dim();
        QkvRows {
            tokens: self.dims.tokens,
            heads: self.dims.heads,
            head_dim: hd,
            cos: &self.cos,
            sin: &self.sin,
            scale: (hd as f32).powf(-0.5),
        }
    }

    fn block_forward(
        &self,
        w: &Weights,
        x: Vec<f32>,
        keep: DropFactors,
        last_token_only: bool,
    ) -> (Vec<f32>, BlockTape) {
        let DropFactors {
            attn: keep_attn,
            mlp: keep_mlp,
        } = keep;
        let Dims {
            batch,
            tokens: n,
            dim: c,
            heads,
            hidden: f,
        } = self.dims;
        let rows = self.dims.rows();
        let hd = self.dims.head_dim();
        let par = threads();

        let mut h1 = buffer(rows * c);
        let mut rstd1 = vec![0f32; rows];
        kernels::rms_forward(&x, &w.norm1, self.eps, &mut h1, &mut rstd1);

        let mut qkv = product(
            rows,
            3 * c,
            &h1,
            Strided::dense(rows, c),
            &w.qkv_w,
            Strided::dense(3 * c, c).t(),
            par,
        );
        self.qkv_rows().forward(&mut qkv, &w.qkv_b);

        // Attention: one task per (sample, head), each on one thread.
        let mut probs = buffer(batch * heads * n * n);
        let mut attn_out = buffer(rows * c);
        let out = SharedOut::new(&mut attn_out);
        let mask = self.mask.as_deref();
        probs.par_chunks_mut(n * n).enumerate().for_each_init(
            || vec![0f32; n * n],
            |masked, (bh, y)| {
                let (b, h) = (bh / heads, bh % heads);
                let base = b * n * 3 * c + h * hd;
                let q = Strided::rows(base, n, hd, 3 * c);
                let k = Strided::rows(base + c, n, hd, 3 * c);
                let v = Strided::rows(base + 2 * c, n, hd, 3 * c);
                let nn = Strided::dense(n, n);
                matmul(y, nn, &qkv, q, &qkv, k.t(), false, gemm::Parallelism::None);
                kernels::softmax_rows(y, n, mask, masked);
                let p: &[f32] = if mask.is_some() { masked } else { y };
                // SAFETY: rows of sample b, columns of head h: no other task's elements.
                unsafe {
                    out.matmul(
                        Strided::rows(b * n * c + h * hd, n, hd, c),
                        p,
                        nn,
                        &qkv,
                        v,
                        false,
                    )
                }
            },
        );

        // After the attention, the rows that go on: all, or the last token of each sample.
        let (rows, n) = if last_token_only {
            (batch, 1)
        } else {
            (rows, n)
        };
        let attn_out = if last_token_only {
            let last = kernels::last_token_rows(&attn_out, self.dims.tokens, c);
            give_back([attn_out]);
            last
        } else {
            attn_out
        };
        let x_last = last_token_only.then(|| kernels::last_token_rows(&x, self.dims.tokens, c));
        let branch = product(
            rows,
            c,
            &attn_out,
            Strided::dense(rows, c),
            &w.proj_w,
            Strided::dense(c, c).t(),
            par,
        );
        let mut x1 = buffer(rows * c);
        let bias = (!w.proj_b.is_empty()).then_some(&w.proj_b[..]);
        let x_in = x_last.as_deref().unwrap_or(&x);
        kernels::residual_add(x_in, &branch, bias, keep_attn.as_deref(), n, c, &mut x1);
        give_back([branch]);
        give_back(x_last);

        let mut h2 = buffer(rows * c);
        let mut rstd2 = vec![0f32; rows];
        kernels::rms_forward(&x1, &w.norm2, self.eps, &mut h2, &mut rstd2);
        let fc13 = product(
            rows,
            2 * f,
            &h2,
            Strided::dense(rows, c),
            &w.fc13,
            Strided::dense(2 * f, c).t(),
            par,
        );
        let mut gate = buffer(rows * f);
        kernels::swiglu_forward(&fc13, f, &mut gate);
        let branch = product(
            rows,
            c,
            &gate,
            Strided::dense(rows, f),
            &w.fc2,
            Strided::dense(c, f).t(),
            par,
        );
        let mut x2 = buffer(rows * c);
        kernels::residual_add(&x1, &branch, None, keep_mlp.as_deref(), n, c, &mut x2);
        give_back([branch]);
        (
            x2,
            BlockTape {
                x,
                rstd1,
                h1,
                qkv,
                probs,
                attn_out,
                last_token_only,
                x1,
                rstd2,
                h2,
                fc13,
                gate,
                keep_attn,
                keep_mlp,
            },
        )
    }

    /// From the gradient of the last block's output to the gradient of the first block's
    /// input, with every block parameter's gradient.
    pub fn backward(mut self, dout: Vec<f32>) -> Result<(Vec<f32>, ParamGrads)> {
        let mut grads = ParamGrads::new();
        let mut d = dout;
        while let Some((w, t)) = self.tapes.pop() {
            let block = self.blocks[self.tapes.len()].clone();
            d = self.block_backward(&block, &w, t, d, &mut grads);
        }
        Ok((d, grads))
    }

    fn block_backward(
        &self,
        block: &Block,
        w: &Weights,
        mut t: BlockTape,
        mut dx: Vec<f32>,
        grads: &mut ParamGrads,
    ) -> Vec<f32> {
        let Dims {
            tokens: n,
            dim: c,
            heads,
            hidden: f,
            ..
        } = self.dims;
        let rows = self.dims.rows();
        let hd = self.dims.head_dim();
        let par = threads();
        // The rows after the attention: all, or the last token's (`dx` has as many).
        let (mrows, mtokens) = if t.last_token_only {
            (self.dims.batch, 1)
        } else {
            (rows, n)
        };
        let rc = Strided::dense(mrows, c);
        let rf = Strided::dense(mrows, f);

        // MLP branch: x2 = x1 + keep * fc2(gate).
        let scaled = t
            .keep_mlp
            .as_ref()
            .map(|keep| kernels::scale_samples(&dx, keep, mtokens, c));
        let dm: &[f32] = scaled.as_deref().unwrap_or(&dx);
        let d_fc2 = product(c, f, dm, rc.t(), &t.gate, rf, par);
        let mut dgate = t.gate;
        matmul(
            &mut dgate,
            rf,
            dm,
            rc,
            &w.fc2,
            Strided::dense(c, f),
            false,
            par,
        );
        give_back(scaled);
        kernels::swiglu_backward(&mut t.fc13, f, &dgate);
        give_back([dgate]);
        let d13 = t.fc13;
        let rf2 = Strided::dense(mrows, 2 * f);
        let mut d_fc13 = product(2 * f, c, &d13, rf2.t(), &t.h2, rc, par);
        let mut dh2 = t.h2;
        matmul(
            &mut dh2,
            rc,
            &d13,
            rf2,
            &w.fc13,
            Strided::dense(2 * f, c),
            false,
            par,
        );
        give_back([d13]);
        let d_fc3 = d_fc13.split_off(f * c);
        // dx now becomes the gradient of x1.
        let d_norm2 = kernels::rms_backward(&t.x1, &w.norm2, &t.rstd2, &dh2, &mut dx);
        give_back([dh2]);

        // Attention branch: x1 = x + keep * (proj(attn_out) + bias).
        let scaled = t
            .keep_attn
            .as_ref()
            .map(|keep| kernels::scale_samples(&dx, keep, mtokens, c));
        let da: &[f32] = scaled.as_deref().unwrap_or(&dx);
        let d_proj_b = kernels::column_sums(da, c);
        let d_proj = product(c, c, da, rc.t(), &t.attn_out, rc, par);
        let mut d_out = t.attn_out;
        matmul(
            &mut d_out,
            rc,
            da,
            rc,
            &w.proj_w,
            Strided::dense(c, c),
            false,
            par,
        );
        give_back(scaled);
        let (d_out, mut dx) = if t.last_token_only {
            let full = kernels::scatter_last_token_rows(&d_out, n, c);
            let dx_full = kernels::scatter_last_token_rows(&dx, n, c);
            give_back([d_out, dx]);
            (full, dx_full)
        } else {
            (d_out, dx)
        };
        let rc = Strided::dense(rows, c);

        let mut dqkv = buffer(rows * 3 * c);
        let out = SharedOut::new(&mut dqkv);
        let mask = self.mask.as_deref();
        let qkv = &t.qkv;
        t.probs.par_chunks(n * n).enumerate().for_each_init(
            || (vec![0f32; n * n], vec![0f32; n * n]),
            |(dp, masked), (bh, y)| {
                let (b, h) = (bh / heads, bh % heads);
                let base = b * n * 3 * c + h * hd;
                let q = Strided::rows(base, n, hd, 3 * c);
                let k = Strided::rows(base + c, n, hd, 3 * c);
                let v = Strided::rows(base + 2 * c, n, hd, 3 * c);
                let dout = Strided::rows(b * n * c + h * hd, n, hd, c);
                let nn = Strided::dense(n, n);
                let none = gemm::Parallelism::None;
                matmul(dp, nn, &d_out, dout, qkv, v.t(), false, none);
                let p: &[f32] = match mask {
                    Some(m) => {
                        kernels::multiply(y, m, masked);
                        masked
                    }
                    None => y,
                };
                // SAFETY: each task writes the rows of its sample and the columns of its
                // head in the q, k and v parts: no other task's elements.
                unsafe {
                    out.matmul(v, p, nn.t(), &d_out, dout, false);
                }
                kernels::softmax_mask_backward(y, mask, dp, n);
                unsafe {
                    out.matmul(q, dp, nn, qkv, k, false);
                    out.matmul(k, dp, nn.t(), qkv, q, false);
                }
            },
        );
        give_back([d_out]);
        self.qkv_rows().backward(&mut dqkv);
        let d_qkv_b = kernels::column_sums(&dqkv, 3 * c);
        let r3c = Strided::dense(rows, 3 * c);
        let d_qkv = product(3 * c, c, &dqkv, r3c.t(), &t.h1, rc, par);
        let mut dh1 = t.h1;
        matmul(
            &mut dh1,
            rc,
            &dqkv,
            r3c,
            &w.qkv_w,
            Strided::dense(3 * c, c),
            false,
            par,
        );
        give_back([dqkv]);
        let d_norm1 = kernels::rms_backward(&t.x, &w.norm1, &t.rstd1, &dh1, &mut dx);
        give_back([dh1, t.x, t.x1, t.qkv, t.probs]);

        grads.push((block.norm1.weight.clone(), d_norm1));
        grads.push((block.attn.qkv.weight.clone(), d_qkv));
        if let Some(b) = &block.attn.qkv.bias {
            grads.push((b.clone(), d_qkv_b));
        }
        grads.push((block.attn.proj.weight.clone(), d_proj));
        if let Some(b) = &block.attn.proj.bias {
            grads.push((b.clone(), d_proj_b));
        }
        grads.push((block.norm2.weight.clone(), d_norm2));
        grads.push((block.mlp.fc1.weight.clone(), d_fc13));
        grads.push((block.mlp.fc2.weight.clone(), d_fc2));
        grads.push((block.mlp.fc3.weight.clone(), d_fc3));
        dx
    }
}
