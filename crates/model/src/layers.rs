//! The pieces of an iLLaMA block. Each is written from differentiable primitive ops when
//! training (candle's fused kernels record no gradient), and may use a fused kernel when not.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// RMSNorm computed in f32, cast back to the input dtype, then scaled (the reference order).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(RmsNorm {
            weight: vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?,
            eps,
        })
    }

    /// `fused` uses candle's one-pass kernel (no gradient: inference only) for f32 inputs.
    pub fn forward(&self, x: &Tensor, fused: bool) -> Result<Tensor> {
        let dtype = x.dtype();
        if fused && dtype == DType::F32 {
            return candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps as f32);
        }
        if crate::fused::applies(x) {
            return crate::fused::rms_norm(x, &self.weight, self.eps);
        }
        let xf = x.to_dtype(DType::F32)?;
        let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xf.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
        normed.to_dtype(dtype)?.broadcast_mul(&self.weight)
    }
}

/// Rotary embedding tables for `tokens` positions: cos and sin of `pos * theta^(-2j/hd)`,
/// computed in f32 as the reference's `precompute_freqs_cis`.
#[derive(Debug, Clone)]
pub struct Rope {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl Rope {
    pub fn new(
        head_dim: usize,
        tokens: usize,
        device: &candle_core::Device,
        dtype: DType,
    ) -> Result<Self> {
        let half = head_dim / 2;
        let freqs: Vec<f32> = (0..half)
            .map(|j| 1.0 / 10000f32.powf((2 * j) as f32 / head_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(tokens * half);
        let mut sin = Vec::with_capacity(tokens * half);
        for t in 0..tokens {
            for &f in &freqs {
                let angle = t as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(Rope {
            cos: Tensor::from_vec(cos, (tokens, half), device)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, (tokens, half), device)?.to_dtype(dtype)?,
        })
    }

    /// Rotates consecutive pairs of `x` [B, heads, tokens, head_dim] (the interleaved form), in
    /// f32 whatever the model's dtype, as the reference does (`xq.float()`, then `type_as`).
    pub fn apply(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let out = if train && crate::fused::applies(&xf) {
            crate::fused::rope_i(&xf, &self.cos, &self.sin)?
        } else if train {
            candle_nn::rotary_emb::rope_i_slow(&xf, &self.cos, &self.sin)?
        } else {
            candle_nn::rotary_emb::rope_i(&xf.contiguous()?, &self.cos, &self.sin)?
        };
        out.to_dtype(dtype)
    }
}

/// Multi-head attention with RoPE on q and k, softmax, then the soft mask multiplied in (no
/// renormalisation).
#[derive(Debug, Clone)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    pub fn new(dim: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Attention {
            qkv: linear(dim, 3 * dim, true, vb.pp("qkv"))?,
            proj: linear(dim, dim, true, vb.pp("proj"))?,
            heads,
            scale: ((dim / heads) as f64).powf(-0.5),
        })
    }

    /// `cd`: the dtype of the matmuls (bf16 under mixed precision, else `x`'s). RoPE runs in f32
    /// and the softmax and the mask in `x`'s dtype (f32 under mixed precision, as PyTorch's
    /// autocast computes softmax); the output comes back in `x`'s dtype for the residual sum.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        mask: Option<&Tensor>,
        train: bool,
        cd: DType,
    ) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let hd = c / self.heads;
        if train && crate::fused::applies(x) {
            return self.forward_train(x, rope, mask, cd);
        }
        // [B, N, 3, H, hd] -> [3, B, H, N, hd]
        let qkv = self
            .qkv
            .forward_as(x, cd)?
            .reshape((b, n, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = rope.apply(&qkv.get(0)?, train)?;
        let k = rope.apply(&qkv.get(1)?, train)?;
        let v = qkv.get(2)?.contiguous()?;
        // Scaling q instead of the scores is exact for power-of-two scales (head dim 64, every
        // preset) and within an ulp otherwise, and touches N*hd values instead of N*N.
        let q = (q * self.scale)?.contiguous()?;
        let attn = q.matmul(&k.contiguous()?.t()?)?.to_dtype(x.dtype())?;
        let attn = if train {
            candle_nn::ops::softmax(&attn, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&attn)?
        };
        let attn = match mask {
            Some(m) => attn.broadcast_mul(m)?,
            None => attn,
        };
        let out = attn
            .to_dtype(cd)?
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, n, c))?;
        self.proj.forward_as(&out, cd)?.to_dtype(x.dtype())
    }
}

impl Attention {
    /// The training path on the CPU with `x` in f32: q, k and v from three slices of the qkv
    /// weight (the backward of slicing the fused activation would pad three full-size gradients
    /// with zeros), and the fused kernels for RoPE and softmax-then-mask (in f32; the matmuls in
    /// `cd`).
    fn forward_train(
        &self,
        x: &Tensor,
        rope: &Rope,
        mask: Option<&Tensor>,
        cd: DType,
    ) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let hd = c / self.heads;
        let part = |i: usize| -> Result<Tensor> {
            let w = self.qkv.weight.narrow(0, i * c, c)?;
            let bias = self
                .qkv
                .bias
                .as_ref()
                .map(|b| b.narrow(0, i * c, c))
                .transpose()?;
            Linear::new(w, bias)
                .forward_as(x, cd)?
                .reshape((b, n, self.heads, hd))?
                .transpose(1, 2)
        };
        let rotate = |t: Tensor| -> Result<Tensor> {
            crate::fused::rope_i(&t.to_dtype(DType::F32)?, &rope.cos, &rope.sin)?.to_dtype(cd)
        };
        let q = rotate(part(0)?)?;
        let k = rotate(part(1)?)?;
        let v = part(2)?.contiguous()?;
        let q = (q * self.scale)?;
        let attn = q.matmul(&k.t()?)?.to_dtype(DType::F32)?;
        let mask = mask
            .map(|m| m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
            .transpose()?;
        let attn = crate::fused::softmax_mask(&attn, mask.as_deref())?.to_dtype(cd)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?;
        self.proj.forward_as(&out, cd)?.to_dtype(x.dtype())
    }
}

/// SwiGLU: `fc2(silu(fc1(x)) * fc3(x))`, no biases.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    pub fc3: Linear,
}

impl Mlp {
    pub fn new(dim: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Mlp {
            fc1: linear(dim, hidden, false, vb.pp("fc1"))?,
            fc2: linear(hidden, dim, false, vb.pp("fc2"))?,
            fc3: linear(dim, hidden, false, vb.pp("fc3"))?,
        })
    }

    /// `cd`: the dtype of the matmuls and the gate; the output comes back in `x`'s dtype.
    pub fn forward(&self, x: &Tensor, cd: DType) -> Result<Tensor> {
        let (a, b) = (self.fc1.forward_as(x, cd)?, self.fc3.forward_as(x, cd)?);
        let gated = if crate::fused::applies(&a) {
            crate::fused::swiglu(&a, &b)?
        } else {
            (a.silu()? * b)?
        };
        self.fc2.forward_as(&gated, cd)?.to_dtype(x.dtype())
    }
}

/// `x W^T + b` over the last axis. Unlike `candle_nn::Linear`, which multiplies each batch
/// element by a broadcast copy of `W`, the leading axes are folded into one matrix: one large
/// matmul forward, and in backward one matmul for `dW` instead of a per-sample product and a
/// sum over the batch.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Linear {
        Linear { weight, bias }
    }

    /// The layer computed in `dtype`: input, weight and bias cast to it (the casts are
    /// differentiable, so an f32 weight still receives an f32 gradient), output in `dtype`.
    pub fn forward_as(&self, x: &Tensor, dtype: DType) -> Result<Tensor> {
        if self.weight.dtype() == dtype {
            return self.forward(&x.to_dtype(dtype)?);
        }
        let cast = Linear::new(
            self.weight.to_dtype(dtype)?,
            self.bias.as_ref().map(|b| b.to_dtype(dtype)).transpose()?,
        );
        cast.forward(&x.to_dtype(dtype)?)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let input = *dims.last().unwrap_or(&0);
        let rows = x.elem_count() / input.max(1);
        let y = x.reshape((rows, input))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = self.weight.dim(0)?;
        }
        y.reshape(shape)
    }
}

/// A linear layer initialised as the reference does: weights trunc_normal(std .02), biases 0.
pub fn linear(input: usize, output: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get_with_hints((output, input), "weight", crate::init::trunc_normal(0.02))?;
    let bias = if bias {
        Some(vb.get_with_hints(output, "bias", candle_nn::Init::Const(0.0))?)
    } else {
        None
    };
    Ok(Linear::new(weight, bias))
}
