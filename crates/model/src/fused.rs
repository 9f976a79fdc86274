//! Fused CPU kernels, with their backward passes, for the training path: softmax followed by the
//! soft mask, RMSNorm, interleaved RoPE and the SwiGLU gate.
//!
//! Built from candle's primitive ops each of these is 4-10 graph nodes, and every node costs a
//! full pass over memory forward, a few more backward, and a zero-filled gradient buffer in
//! candle's gradient store: on a 2-core CPU those passes cost more than the matmuls. Here each
//! is one node whose backward is one or two passes. They compute exactly what the primitive
//! versions compute (up to summation order), which the tests check, forward and backward.
//!
//! f32 on the CPU only; other devices and dtypes use the primitive versions (see `layers`).

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Error, Layout, Result, Shape,
    Tensor,
};
use rayon::prelude::*;
use std::sync::Arc;

/// Whether the fused kernels apply to `x`.
pub fn applies(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| Error::msg("fused kernel: input is not contiguous"))?;
    Ok(&s.as_slice::<f32>()?[a..b])
}

/// Rows of `len` values processed in parallel chunks big enough to amortise the scheduling.
fn rows_per_task(len: usize) -> usize {
    (16384 / len.max(1)).max(1)
}

// ---------------------------------------------------------------------------------------------
// softmax(x) * mask over the last axis

/// `softmax(x, -1) * mask` for `x` [.., n, n] and `mask` [n, n] (`None`: no mask), as the
/// reference's attention computes it (the mask multiplies the probabilities, no renormalising).
pub fn softmax_mask(x: &Tensor, mask: Option<&[f32]>) -> Result<Tensor> {
    let n = x.dim(candle_core::D::Minus1)?;
    if let Some(m) = mask {
        if m.len() != n * n {
            candle_core::bail!("soft mask has {} values for {n} tokens", m.len());
        }
    }
    x.contiguous()?.apply_op1(SoftmaxMask {
        mask: mask.map(|m| Arc::new(m.to_vec())),
        n,
    })
}

struct SoftmaxMask {
    mask: Option<Arc<Vec<f32>>>,
    n: usize,
}

fn softmax_row(x: &[f32], y: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f32;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = (v - max).exp();
        sum += *o;
    }
    let inv = 1.0 / sum;
    y.iter_mut().for_each(|o| *o *= inv);
}

impl CustomOp1 for SoftmaxMask {
    fn name(&self) -> &'static str {
        "softmax-mask"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let n = self.n;
        let mut out = vec![0f32; x.len()];
        let per = rows_per_task(n);
        out.par_chunks_mut(n * per)
            .zip(x.par_chunks(n * per))
            .enumerate()
            .for_each(|(task, (o, x))| {
                for (k, (o, x)) in o.chunks_mut(n).zip(x.chunks(n)).enumerate() {
                    softmax_row(x, o);
                    if let Some(m) = &self.mask {
                        let row = (task * per + k) % n;
                        o.iter_mut()
                            .zip(&m[row * n..(row + 1) * n])
                            .for_each(|(o, m)| *o *= m);
                    }
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.contiguous()?;
        Ok(Some(arg.apply_op2_no_bwd(
            &g,
            &SoftmaxMaskBackward {
                mask: self.mask.clone(),
                n: self.n,
            },
        )?))
    }
}

/// With `y = softmax(x)` and `out = y * m`: `dy = g * m`, `dx = y * (dy - sum(y * dy))`. `y` is
/// recomputed from `x` (where `m` is 0 it cannot be read back from `out`).
struct SoftmaxMaskBackward {
    mask: Option<Arc<Vec<f32>>>,
    n: usize,
}

impl CustomOp2 for SoftmaxMaskBackward {
    fn name(&self) -> &'static str {
        "softmax-mask-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(s1, l1)?, slice(s2, l2)?);
        let n = self.n;
        let mut dx = vec![0f32; x.len()];
        let per = rows_per_task(n);
        dx.par_chunks_mut(n * per)
            .zip(x.par_chunks(n * per).zip(g.par_chunks(n * per)))
            .enumerate()
            .for_each(|(task, (dx, (x, g)))| {
                let mut y = vec![0f32; n];
                for (k, ((dx, x), g)) in dx
                    .chunks_mut(n)
                    .zip(x.chunks(n))
                    .zip(g.chunks(n))
                    .enumerate()
                {
                    softmax_row(x, &mut y);
                    let row = (task * per + k) % n;
                    let m = self.mask.as_ref().map(|m| &m[row * n..(row + 1) * n]);
                    // dx first holds dy.
                    match m {
                        Some(m) => dx
                            .iter_mut()
                            .zip(g.iter().zip(m))
                            .for_each(|(d, (g, m))| *d = g * m),
                        None => dx.copy_from_slice(g),
                    }
                    let dot: f32 = y.iter().zip(dx.iter()).map(|(y, d)| y * d).sum();
                    dx.iter_mut().zip(&y).for_each(|(d, y)| *d = y * (*d - dot));
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

/// `x / sqrt(mean(x^2, -1) + eps) * weight` over the last axis.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, RmsNorm { eps: eps as f32 })
}

#[derive(Clone, Copy)]
struct RmsNorm {
    eps: f32,
}

fn rinv(x: &[f32], eps: f32) -> f32 {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (slice(s1, l1)?, slice(s2, l2)?);
        let d = w.len();
        let mut out = vec![0f32; x.len()];
        let per = rows_per_task(d);
        out.par_chunks_mut(d * per)
            .zip(x.par_chunks(d * per))
            .for_each(|(o, x)| {
                for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                    let r = rinv(x, self.eps);
                    for ((o, x), w) in o.iter_mut().zip(x).zip(w) {
                        *o = x * r * w;
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &g, &RmsNormDx { eps: self.eps })?;
        let dw = x.apply_op2_no_bwd(
            &g,
            &RmsNormDw {
                eps: self.eps,
                d: w.elem_count(),
            },
        )?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `xhat = x r`, `dxhat = g w`: `dx = r (dxhat - xhat mean(dxhat xhat))`.
struct RmsNormDx {
    eps: f32,
}

impl CustomOp3 for RmsNormDx {
    fn name(&self) -> &'static str {
        "rms-norm-dx"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, g) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let d = w.len();
        let mut dx = vec![0f32; x.len()];
        let per = rows_per_task(d);
        dx.par_chunks_mut(d * per)
            .zip(x.par_chunks(d * per).zip(g.par_chunks(d * per)))
            .for_each(|(dx, (x, g))| {
                for ((dx, x), g) in dx.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)) {
                    let r = rinv(x, self.eps);
                    let mean: f32 = x
                        .iter()
                        .zip(g)
                        .zip(w)
                        .map(|((x, g), w)| g * w * x * r)
                        .sum::<f32>()
                        / d as f32;
                    for (((dx, x), g), w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                        *dx = r * (g * w - x * r * mean);
                    }
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// `dw = sum over rows of g xhat`.
struct RmsNormDw {
    eps: f32,
    d: usize,
}

impl CustomOp2 for RmsNormDw {
    fn name(&self) -> &'static str {
        "rms-norm-dw"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(s1, l1)?, slice(s2, l2)?);
        let d = self.d;
        let per = rows_per_task(d) * 8;
        let dw = x
            .par_chunks(d * per)
            .zip(g.par_chunks(d * per))
            .map(|(x, g)| {
                let mut acc = vec![0f32; d];
                for (x, g) in x.chunks(d).zip(g.chunks(d)) {
                    let r = rinv(x, self.eps);
                    for ((a, x), g) in acc.iter_mut().zip(x).zip(g) {
                        *a += g * x * r;
                    }
                }
                acc
            })
            .reduce(
                || vec![0f32; d],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        Ok((CpuStorage::F32(dw), Shape::from(d)))
    }
}

// ---------------------------------------------------------------------------------------------
// Interleaved RoPE

/// Rotates consecutive pairs of `x` [B, H, T, hd] by the angles whose cos/sin tables are
/// [T, hd/2] (candle's `rope_i`).
pub fn rope_i(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (_, _, t, hd) = x.dims4()?;
    let table = |v: &Tensor| -> Result<Arc<Vec<f32>>> {
        Ok(Arc::new(v.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?))
    };
    let (cos, sin) = (table(cos)?, table(sin)?);
    if cos.len() != t * hd / 2 || sin.len() != cos.len() {
        candle_core::bail!("rope tables do not match {t} tokens of {hd} values");
    }
    x.contiguous()?.apply_op1(Rope {
        cos,
        sin,
        t,
        hd,
        inverse: false,
    })
}

struct Rope {
    cos: Arc<Vec<f32>>,
    sin: Arc<Vec<f32>>,
    t: usize,
    hd: usize,
    /// Rotate by the opposite angles (the backward pass).
    inverse: bool,
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rope-interleaved"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let (t, hd) = (self.t, self.hd);
        let sign = if self.inverse { -1.0 } else { 1.0 };
        let mut out = vec![0f32; x.len()];
        let per = rows_per_task(hd);
        out.par_chunks_mut(hd * per)
            .zip(x.par_chunks(hd * per))
            .enumerate()
            .for_each(|(task, (o, x))| {
                for (k, (o, x)) in o.chunks_mut(hd).zip(x.chunks(hd)).enumerate() {
                    let pos = (task * per + k) % t;
                    let cos = &self.cos[pos * hd / 2..(pos + 1) * hd / 2];
                    let sin = &self.sin[pos * hd / 2..(pos + 1) * hd / 2];
                    for j in 0..hd / 2 {
                        let (a, b) = (x[2 * j], x[2 * j + 1]);
                        let (c, s) = (cos[j], sign * sin[j]);
                        o[2 * j] = a * c - b * s;
                        o[2 * j + 1] = a * s + b * c;
                    }
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Rope {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            t: self.t,
            hd: self.hd,
            inverse: !self.inverse,
        })?))
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU gate

/// `silu(a) * b`.
pub fn swiglu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, SwiGlu)
}

struct SwiGlu;

fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + (-a).exp())
}

fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(16384)
        .zip(a.par_chunks(16384).zip(b.par_chunks(16384)))
        .for_each(|(o, (a, b))| {
            for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                *o = f(*a, *b);
            }
        });
    out
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (slice(s1, l1)?, slice(s2, l2)?);
        let out = zip_map(a, b, |a, b| a * sigmoid(a) * b);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let da = a.apply_op3_no_bwd(b, &g, &SwiGluDa)?;
        let db = a.apply_op2_no_bwd(&g, &SwiGluDb)?;
        Ok((Some(da), Some(db)))
    }
}

/// `d silu(a) b / da = g b s (1 + a (1 - s))`, `s = sigmoid(a)`.
struct SwiGluDa;

impl CustomOp3 for SwiGluDa {
    fn name(&self) -> &'static str {
        "swiglu-da"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b, g) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let mut out = vec![0f32; a.len()];
        out.par_chunks_mut(16384)
            .zip(
                a.par_chunks(16384)
                    .zip(b.par_chunks(16384).zip(g.par_chunks(16384))),
            )
            .for_each(|(o, (a, (b, g)))| {
                for (((o, a), b), g) in o.iter_mut().zip(a).zip(b).zip(g) {
                    let s = sigmoid(*a);
                    *o = g * b * s * (1.0 + a * (1.0 - s));
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `d silu(a) b / db = g silu(a)`.
struct SwiGluDb;

impl CustomOp2 for SwiGluDb {
    fn name(&self) -> &'static str {
        "swiglu-db"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, g) = (slice(s1, l1)?, slice(s2, l2)?);
        let out = zip_map(a, g, |a, g| g * a * sigmoid(a));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Var, D};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Output and input gradients (under a random upstream gradient) of `fused` and
    /// `reference` agree.
    fn same(
        inputs: &[Tensor],
        fused: impl Fn(&[Tensor]) -> Result<Tensor>,
        reference: impl Fn(&[Tensor]) -> Result<Tensor>,
        tol: f32,
    ) {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (y1, y2) = (fused(&ts).unwrap(), reference(&ts).unwrap());
        assert!(max_diff(&y1, &y2) < tol, "forward {}", max_diff(&y1, &y2));
        let up = rand(y1.dims(), 99);
        let g1 = (&y1 * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&y2 * &up).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, t) in ts.iter().enumerate() {
            let (a, b) = (g1.get(t).unwrap(), g2.get(t).unwrap());
            assert!(max_diff(a, b) < tol, "input {i}: {}", max_diff(a, b));
        }
    }

    #[test]
    fn softmax_mask_matches_the_primitive_ops() {
        let n = 7;
        let mask: Vec<f32> = (0..n * n)
            .map(|i| if i % n <= i / n { 1.0 } else { 0.3 })
            .collect();
        let m = Tensor::from_vec(mask.clone(), (n, n), &Device::Cpu).unwrap();
        same(
            &[rand(&[2, 3, n, n], 1)],
            |x| softmax_mask(&x[0], Some(&mask)),
            |x| candle_nn::ops::softmax(&x[0], D::Minus1)?.broadcast_mul(&m),
            1e-6,
        );
        same(
            &[rand(&[2, 3, n, n], 2)],
            |x| softmax_mask(&x[0], None),
            |x| candle_nn::ops::softmax(&x[0], D::Minus1),
            1e-6,
        );
    }

    #[test]
    fn rms_norm_matches_the_primitive_ops() {
        same(
            &[rand(&[3, 5, 16], 3), rand(&[16], 4)],
            |t| rms_norm(&t[0], &t[1], 1e-6),
            |t| {
                let ms = t[0].sqr()?.mean_keepdim(D::Minus1)?;
                t[0].broadcast_div(&(ms + 1e-6)?.sqrt()?)?
                    .broadcast_mul(&t[1])
            },
            1e-5,
        );
    }

    #[test]
    fn rope_matches_candles_differentiable_rope() {
        let (t, hd) = (5, 8);
        let cos = rand(&[t, hd / 2], 5);
        let sin = rand(&[t, hd / 2], 6);
        same(
            &[rand(&[2, 3, t, hd], 7)],
            |x| rope_i(&x[0], &cos, &sin),
            |x| candle_nn::rotary_emb::rope_i_slow(&x[0], &cos, &sin),
            1e-6,
        );
    }

    #[test]
    fn swiglu_matches_the_primitive_ops() {
        same(
            &[rand(&[4, 9], 8), rand(&[4, 9], 9)],
            |t| swiglu(&t[0], &t[1]),
            |t| t[0].silu()? * &t[1],
            1e-5,
        );
    }
}
