//! The arithmetic of the hand-written training path: strided matrix products on the `gemm`
//! crate, and the row-wise passes (RMSNorm, RoPE, softmax with the soft mask, SwiGLU) forward
//! and backward. Everything is f32 on plain slices; reductions over rows use a fixed split and
//! a sequential combine, so that a step gives the same bits on every run.

use gemm::Parallelism;
use rayon::prelude::*;
use std::sync::Mutex;

/// Defines `fn $name` three times: as written, and compiled for AVX2 + FMA and for AVX-512,
/// chosen at run time (the default build targets plain x86-64, which leaves the elementwise
/// loops 4 wide).
macro_rules! vectorised {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn portable($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    portable($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    portable($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has all three features.
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has both features.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}

/// Values per parallel task of an elementwise pass: big enough to amortise scheduling.
const CHUNK: usize = 16384;

/// A matrix inside a slice: element (i, j) at `offset + i * rs + j * cs`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Strided {
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Strided {
    /// A row-major block of `rows x cols` values starting at `offset`, rows `rs` apart.
    pub fn rows(offset: usize, rows: usize, cols: usize, rs: usize) -> Strided {
        Strided {
            offset,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    /// A dense row-major matrix.
    pub fn dense(rows: usize, cols: usize) -> Strided {
        Strided::rows(0, rows, cols, cols)
    }

    pub fn t(self) -> Strided {
        Strided {
            offset: self.offset,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// One past the last element it touches.
    fn end(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            return self.offset;
        }
        self.offset + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1
    }

    fn check(&self, len: usize, what: &str) {
        assert!(
            self.end() <= len,
            "{what}: {self:?} reaches past {len} values"
        );
    }
}

/// How many threads one large product may use.
pub(crate) fn threads() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `dst (+)= lhs x rhs`: `accumulate` adds to what `dst` holds instead of overwriting it. Each
/// matrix is its slice and its view into it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    dst: &mut [f32],
    d: Strided,
    lhs: &[f32],
    l: Strided,
    rhs: &[f32],
    r: Strided,
    accumulate: bool,
    par: Parallelism,
) {
    d.check(dst.len(), "matmul output");
    // SAFETY: the output view lies inside `dst`, which is borrowed mutably for the call.
    unsafe { matmul_raw(dst.as_mut_ptr(), d, lhs, l, rhs, r, accumulate, par) }
}

/// `lhs x rhs` as a dense row-major `rows x cols` matrix in a [`buffer`] (no zero-fill: the
/// product overwrites every element).
pub(crate) fn product(
    rows: usize,
    cols: usize,
    lhs: &[f32],
    l: Strided,
    rhs: &[f32],
    r: Strided,
    par: Parallelism,
) -> Vec<f32> {
    let mut out = buffer(rows * cols);
    matmul(
        &mut out,
        Strided::dense(rows, cols),
        lhs,
        l,
        rhs,
        r,
        false,
        par,
    );
    out
}

/// Buffers handed back after use, for the next block or step: a fresh buffer is zero-filled,
/// a pass over memory each (see docs/benchmarks.md), and every buffer here is overwritten
/// whole by its next user.
static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// At most this many buffers wait in the pool (a block uses about a dozen).
const POOL_BUFFERS: usize = 48;

/// A buffer of `len` values whose contents are unspecified (the caller overwrites them all).
pub(crate) fn buffer(len: usize) -> Vec<f32> {
    let reused = POOL.lock().ok().and_then(|mut pool| {
        let i = pool.iter().position(|b| b.len() == len)?;
        Some(pool.swap_remove(i))
    });
    reused.unwrap_or_else(|| vec![0f32; len])
}

/// Hands buffers back to the pool.
pub(crate) fn give_back(buffers: impl IntoIterator<Item = Vec<f32>>) {
    if let Ok(mut pool) = POOL.lock() {
        for b in buffers {
            if pool.len() < POOL_BUFFERS && !b.is_empty() {
                pool.push(b);
            }
        }
    }
}

/// [`matmul`] into memory that other threads write at the same time, at other elements.
///
/// # Safety
/// `dst` must be valid for every element of `d`, and no other thread may read or write those
/// elements during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul_raw(
    dst: *mut f32,
    d: Strided,
    lhs: &[f32],
    l: Strided,
    rhs: &[f32],
    r: Strided,
    accumulate: bool,
    par: Parallelism,
) {
    l.check(lhs.len(), "matmul left operand");
    r.check(rhs.len(), "matmul right operand");
    assert!(
        l.rows == d.rows && r.cols == d.cols && l.cols == r.rows,
        "matmul shapes: {l:?} x {r:?} -> {d:?}"
    );
    if d.rows == 0 || d.cols == 0 {
        return;
    }
    gemm::gemm(
        d.rows,
        d.cols,
        l.cols,
        dst.add(d.offset),
        d.cs as isize,
        d.rs as isize,
        accumulate,
        lhs.as_ptr().add(l.offset),
        l.cs as isize,
        l.rs as isize,
        rhs.as_ptr().add(r.offset),
        r.cs as isize,
        r.rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        par,
    );
}

/// A buffer that parallel tasks write at disjoint strided places (see [`matmul_raw`]).
#[derive(Clone, Copy)]
pub(crate) struct SharedOut<'a> {
    ptr: *mut f32,
    len: usize,
    /// Borrows the buffer for as long as the tasks may write it.
    buffer: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: only used through `matmul_raw`/`rows_mut`, whose callers write disjoint elements.
unsafe impl Send for SharedOut<'_> {}
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    pub fn new(buf: &'a mut [f32]) -> SharedOut<'a> {
        SharedOut {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            buffer: std::marker::PhantomData,
        }
    }

    /// # Safety
    /// As [`matmul_raw`]: no other task touches the elements of `d` meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn matmul(
        &self,
        d: Strided,
        lhs: &[f32],
        l: Strided,
        rhs: &[f32],
        r: Strided,
        accumulate: bool,
    ) {
        d.check(self.len, "matmul output");
        matmul_raw(self.ptr, d, lhs, l, rhs, r, accumulate, Parallelism::None)
    }
}

/// Sums `per_row(row_index, row)` vectors of length `width` over all rows of `data` (rows of
/// `stride` values), split in fixed pieces combined in order: the same bits whatever the
/// threads do.
pub(crate) fn sum_rows(
    rows: usize,
    width: usize,
    per_row: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    const ROWS_PER_PIECE: usize = 64;
    let pieces: Vec<Vec<f32>> = (0..rows.div_ceil(ROWS_PER_PIECE))
        .into_par_iter()
        .map(|p| {
            let mut acc = vec![0f32; width];
            for r in p * ROWS_PER_PIECE..((p + 1) * ROWS_PER_PIECE).min(rows) {
                per_row(r, &mut acc);
            }
            acc
        })
        .collect();
    let mut total = vec![0f32; width];
    for p in pieces {
        total.iter_mut().zip(&p).for_each(|(t, v)| *t += v);
    }
    total
}

/// Column sums of a dense `rows x width` matrix (a bias gradient).
pub(crate) fn column_sums(m: &[f32], width: usize) -> Vec<f32> {
    sum_rows(m.len() / width, width, |r, acc| {
        acc.iter_mut()
            .zip(&m[r * width..(r + 1) * width])
            .for_each(|(a, v)| *a += v)
    })
}

fn rows_per_task(width: usize) -> usize {
    (CHUNK / width.max(1)).max(1)
}

// ---------------------------------------------------------------------------------------------
// Loops the compiler turns into vector code

/// `e^x` to within 2 ulp for x in [-87, 88] (clamped outside, NaN kept), without a call, so
/// that loops using it are vectorised: `2^n * e^r` with `n = round(x / ln 2)`, `|r| <= ln 2 / 2`,
/// and a degree-6 polynomial for `e^r` (Cephes' `expf` coefficients). libm's `expf` per
/// element was the largest cost after the matrix products.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n from the low bits of `t`, which hold n (an `as i32` cast would not vectorise).
    e * f32::from_bits(t.to_bits().wrapping_add(127) << 23)
}

/// Sum of `a[i] * b[i]` over eight lanes (a fixed order: the same bits on every run).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (a, b) in ac.zip(bc) {
        for i in 0..8 {
            lanes[i] += a[i] * b[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(a, b)| a * b).sum();
    lanes.iter().sum::<f32>() + tail
}

// ---------------------------------------------------------------------------------------------
// RMSNorm: h = x * r * w, r = 1 / sqrt(mean(x^2) + eps)

pub(crate) fn rms_forward(x: &[f32], w: &[f32], eps: f32, h: &mut [f32], rstd: &mut [f32]) {
    let d = w.len();
    let per = rows_per_task(d);
    h.par_chunks_mut(d * per)
        .zip(x.par_chunks(d * per))
        .zip(rstd.par_chunks_mut(per))
        .for_each(|((h, x), rstd)| rms_forward_rows(x, w, eps, h, rstd));
}

vectorised! {
    fn rms_forward_rows(x: &[f32], w: &[f32], eps: f32, h: &mut [f32], rstd: &mut [f32]) {
        let d = w.len();
        for ((h, x), r) in h.chunks_mut(d).zip(x.chunks(d)).zip(rstd.iter_mut()) {
            let ms = dot(x, x) / d as f32;
            *r = 1.0 / (ms + eps).sqrt();
            for ((h, x), w) in h.iter_mut().zip(x).zip(w) {
                *h = x * *r * w;
            }
        }
    }
}

/// Adds the input gradient of RMSNorm to `dx` and returns the weight gradient:
/// `xhat = x r`, `dxhat = dh w`, `dx += r (dxhat - xhat mean(dxhat xhat))`, `dw = sum dh xhat`.
pub(crate) fn rms_backward(
    x: &[f32],
    w: &[f32],
    rstd: &[f32],
    dh: &[f32],
    dx: &mut [f32],
) -> Vec<f32> {
    let d = w.len();
    let per = rows_per_task(d);
    dx.par_chunks_mut(d * per)
        .zip(x.par_chunks(d * per).zip(dh.par_chunks(d * per)))
        .zip(rstd.par_chunks(per))
        .for_each_init(
            || vec![0f32; d],
            |scratch, ((dx, (x, dh)), rstd)| rms_backward_rows(x, w, rstd, dh, dx, scratch),
        );
    sum_rows(rstd.len(), d, |row, acc| {
        let r = rstd[row];
        let (x, g) = (&x[row * d..(row + 1) * d], &dh[row * d..(row + 1) * d]);
        for ((a, x), g) in acc.iter_mut().zip(x).zip(g) {
            *a += g * x * r;
        }
    })
}

vectorised! {
    fn rms_backward_rows(
        x: &[f32],
        w: &[f32],
        rstd: &[f32],
        dh: &[f32],
        dx: &mut [f32],
        scratch: &mut [f32],
    ) {
        let d = w.len();
        for (((dx, x), dh), &r) in dx
            .chunks_mut(d)
            .zip(x.chunks(d))
            .zip(dh.chunks(d))
            .zip(rstd)
        {
            // dxhat = dh * w, kept in `scratch` for the second pass.
            scratch
                .iter_mut()
                .zip(dh.iter().zip(w))
                .for_each(|(s, (g, w))| *s = g * w);
            let mean = dot(scratch, x) * r / d as f32;
            for ((dx, x), s) in dx.iter_mut().zip(x).zip(scratch.iter()) {
                *dx += r * (s - x * r * mean);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The qkv rows: bias, interleaved RoPE on q and k, the attention scale on q

/// Rotation tables and the attention geometry of one qkv row `[q | k | v]` of `3 * heads * hd`.
pub(crate) struct QkvRows<'a> {
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// [tokens, head_dim / 2] each.
    pub cos: &'a [f32],
    pub sin: &'a [f32],
    pub scale: f32,
}

impl QkvRows<'_> {
    fn rotate(&self, v: &mut [f32], token: usize, inverse: bool) {
        let half = self.head_dim / 2;
        let (cos, sin) = (
            &self.cos[token * half..(token + 1) * half],
            &self.sin[token * half..(token + 1) * half],
        );
        let sign = if inverse { -1.0 } else { 1.0 };
        for head in v.chunks_mut(self.head_dim) {
            for j in 0..half {
                let (a, b) = (head[2 * j], head[2 * j + 1]);
                let (c, s) = (cos[j], sign * sin[j]);
                head[2 * j] = a * c - b * s;
                head[2 * j + 1] = a * s + b * c;
            }
        }
    }

    /// Forward, in place on `qkv` [rows, 3C]: add the bias, rotate q and k, scale q.
    pub fn forward(&self, qkv: &mut [f32], bias: &[f32]) {
        let width = 3 * self.heads * self.head_dim;
        let c = width / 3;
        let per = rows_per_task(width);
        qkv.par_chunks_mut(width * per)
            .enumerate()
            .for_each(|(task, rows)| {
                for (k, row) in rows.chunks_mut(width).enumerate() {
                    let token = (task * per + k) % self.tokens;
                    row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                    let (q, rest) = row.split_at_mut(c);
                    self.rotate(q, token, false);
                    q.iter_mut().for_each(|v| *v *= self.scale);
                    self.rotate(&mut rest[..c], token, false);
                }
            });
    }

    /// Backward, in place on the gradient `dqkv` [rows, 3C] of the rotated, scaled rows.
    pub fn backward(&self, dqkv: &mut [f32]) {
        let width = 3 * self.heads * self.head_dim;
        let c = width / 3;
        let per = rows_per_task(width);
        dqkv.par_chunks_mut(width * per)
            .enumerate()
            .for_each(|(task, rows)| {
                for (k, row) in rows.chunks_mut(width).enumerate() {
                    let token = (task * per + k) % self.tokens;
                    let (q, rest) = row.split_at_mut(c);
                    q.iter_mut().for_each(|v| *v *= self.scale);
                    self.rotate(q, token, true);
                    self.rotate(&mut rest[..c], token, true);
                }
            });
    }
}

// ---------------------------------------------------------------------------------------------
// softmax, then the soft mask multiplied in

vectorised! {
    /// Softmax of each row of the `n x n` scores, in place, and `masked = softmax * mask` when
    /// there is a mask (`masked` is then `n x n` too).
    pub(crate) fn softmax_rows(s: &mut [f32], n: usize, mask: Option<&[f32]>, masked: &mut [f32]) {
        for (i, row) in s.chunks_mut(n).enumerate() {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut lanes = [0f32; 8];
            for chunk in row.chunks_mut(8) {
                for (v, l) in chunk.iter_mut().zip(lanes.iter_mut()) {
                    *v = exp(*v - max);
                    *l += *v;
                }
            }
            let inv = 1.0 / lanes.iter().sum::<f32>();
            match mask {
                Some(m) => {
                    let (m, out) = (&m[i * n..(i + 1) * n], &mut masked[i * n..(i + 1) * n]);
                    for ((v, m), o) in row.iter_mut().zip(m).zip(out) {
                        *v *= inv;
                        *o = *v * m;
                    }
                }
                None => row.iter_mut().for_each(|v| *v *= inv),
            }
        }
    }
}

/// `out = a * b`, element by element.
pub(crate) fn multiply(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
        *o = a * b;
    }
}

vectorised! {
    /// With `p = y * m` (y the softmax): from `dp` (in place) to the gradient of the scores,
    /// `dy = dp * m`, `ds = y (dy - sum(y dy))`.
    pub(crate) fn softmax_mask_backward(y: &[f32], mask: Option<&[f32]>, dp: &mut [f32], n: usize) {
        for (i, (dp, y)) in dp.chunks_mut(n).zip(y.chunks(n)).enumerate() {
            if let Some(m) = mask {
                dp.iter_mut()
                    .zip(&m[i * n..(i + 1) * n])
                    .for_each(|(d, m)| *d *= m);
            }
            let dot = dot(y, dp);
            dp.iter_mut().zip(y).for_each(|(d, y)| *d = y * (*d - dot));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU gate: g = silu(a) * b

#[inline(always)]
fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + exp(-a))
}

/// `gate = silu(a) * b` where each row of `ab` is `a` then `b`, `f` values each.
pub(crate) fn swiglu_forward(ab: &[f32], f: usize, gate: &mut [f32]) {
    let per = rows_per_task(f);
    gate.par_chunks_mut(f * per)
        .zip(ab.par_chunks(2 * f * per))
        .for_each(|(g, ab)| swiglu_forward_rows(ab, f, g));
}

vectorised! {
    fn swiglu_forward_rows(ab: &[f32], f: usize, gate: &mut [f32]) {
        for (g, ab) in gate.chunks_mut(f).zip(ab.chunks(2 * f)) {
            let (a, b) = ab.split_at(f);
            for ((g, a), b) in g.iter_mut().zip(a).zip(b) {
                *g = a * sigmoid(*a) * b;
            }
        }
    }
}

/// From the gate's inputs (rows of `a` then `b`) and the gradient `dg` of its output: each `a`
/// becomes `da` and each `b` becomes `db`, in place (the inputs are not needed afterwards).
pub(crate) fn swiglu_backward(ab: &mut [f32], f: usize, dg: &[f32]) {
    let per = rows_per_task(f);
    ab.par_chunks_mut(2 * f * per)
        .zip(dg.par_chunks(f * per))
        .for_each(|(ab, dg)| swiglu_backward_rows(ab, f, dg));
}

vectorised! {
    fn swiglu_backward_rows(ab: &mut [f32], f: usize, dg: &[f32]) {
        for (ab, dg) in ab.chunks_mut(2 * f).zip(dg.chunks(f)) {
            let (a, b) = ab.split_at_mut(f);
            for ((a, b), g) in a.iter_mut().zip(b.iter_mut()).zip(dg) {
                let s = sigmoid(*a);
                let da = g * *b * s * (1.0 + *a * (1.0 - s));
                let db = g * *a * s;
                *a = da;
                *b = db;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Residual branches with stochastic depth

/// `out = x + keep[sample] * (branch + bias)` over rows of `width`, `tokens` rows per sample
/// (`keep`: `None` when no sample is dropped or rescaled).
pub(crate) fn residual_add(
    x: &[f32],
    branch: &[f32],
    bias: Option<&[f32]>,
    keep: Option<&[f32]>,
    tokens: usize,
    width: usize,
    out: &mut [f32],
) {
    let per = rows_per_task(width);
    out.par_chunks_mut(width * per)
        .zip(
            x.par_chunks(width * per)
                .zip(branch.par_chunks(width * per)),
        )
        .enumerate()
        .for_each(|(task, (out, (x, br)))| {
            for (k, ((o, x), br)) in out
                .chunks_mut(width)
                .zip(x.chunks(width))
                .zip(br.chunks(width))
                .enumerate()
            {
                let s = keep.map_or(1.0, |keep| keep[(task * per + k) / tokens]);
                match bias {
                    Some(bias) => {
                        for (((o, x), b), bias) in o.iter_mut().zip(x).zip(br).zip(bias) {
                            *o = x + s * (b + bias);
                        }
                    }
                    None => {
                        for ((o, x), b) in o.iter_mut().zip(x).zip(br) {
                            *o = x + s * b;
                        }
                    }
                }
            }
        });
}

/// The last of every `tokens` rows of `width` values: [samples, width].
pub(crate) fn last_token_rows(m: &[f32], tokens: usize, width: usize) -> Vec<f32> {
    let samples = m.len() / (tokens * width);
    let mut out = buffer(samples * width);
    for (o, sample) in out.chunks_mut(width).zip(m.chunks(tokens * width)) {
        o.copy_from_slice(&sample[(tokens - 1) * width..]);
    }
    out
}

/// The inverse of [`last_token_rows`]: `rows` [samples, width] placed as the last of every
/// `tokens` rows, zeros elsewhere.
pub(crate) fn scatter_last_token_rows(rows: &[f32], tokens: usize, width: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows.len() * tokens];
    for (sample, r) in out.chunks_mut(tokens * width).zip(rows.chunks(width)) {
        sample[(tokens - 1) * width..].copy_from_slice(r);
    }
    out
}

/// `g * keep[sample]` per row: the gradient reaching a dropped-path branch.
pub(crate) fn scale_samples(g: &[f32], keep: &[f32], tokens: usize, width: usize) -> Vec<f32> {
    let mut out = buffer(g.len());
    let per = rows_per_task(width);
    out.par_chunks_mut(width * per)
        .zip(g.par_chunks(width * per))
        .enumerate()
        .for_each(|(task, (o, g))| {
            for (k, (o, g)) in o.chunks_mut(width).zip(g.chunks(width)).enumerate() {
                let s = keep[(task * per + k) / tokens];
                o.iter_mut().zip(g).for_each(|(o, g)| *o = s * g);
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0f32;
        for i in 0..=175_000 {
            let x = -87.0 + i as f32 / 1000.0;
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1000.0) < 1e-37 && exp(1000.0).is_finite());
    }

    #[test]
    fn dot_covers_every_element() {
        let a: Vec<f32> = (0..37).map(|i| i as f32).collect();
        assert_eq!(dot(&a, &a), (0..37).map(|i| i * i).sum::<i32>() as f32);
    }
}
