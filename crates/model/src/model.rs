//! The iLLaMA network: patch embedding, class token appended LAST, learned positions, LLaMA
//! blocks with a soft causal mask, RMSNorm, and a head on the last token.

use crate::layers::{Attention, Mlp, RmsNorm, Rope};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use illama_arch::IllamaConfig;

pub const NORM_EPS: f64 = 1e-6;

#[derive(Debug, Clone)]
pub struct Block {
    pub norm1: RmsNorm,
    pub attn: Attention,
    pub norm2: RmsNorm,
    pub mlp: Mlp,
    /// Stochastic-depth rate of this block (training only).
    pub drop_path: f64,
}

impl Block {
    fn new(c: &IllamaConfig, drop_path: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Block {
            norm1: RmsNorm::new(c.dim, NORM_EPS, vb.pp("norm1"))?,
            attn: Attention::new(c.dim, c.heads, vb.pp("attn"))?,
            norm2: RmsNorm::new(c.dim, NORM_EPS, vb.pp("norm2"))?,
            mlp: Mlp::new(c.dim, c.mlp_hidden, vb.pp("mlp"))?,
            drop_path,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        mask: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let a = self
            .attn
            .forward(&self.norm1.forward(x, !train)?, rope, mask, train)?;
        let x = (x + drop_path(&a, self.drop_path, train)?)?;
        let m = self.mlp.forward(&self.norm2.forward(&x, !train)?)?;
        x + drop_path(&m, self.drop_path, train)?
    }
}

/// Zeroes each sample's residual branch with probability `p`, scaling survivors by 1/(1-p).
fn drop_path(x: &Tensor, p: f64, train: bool) -> Result<Tensor> {
    if !train || p <= 0.0 {
        return Ok(x.clone());
    }
    let b = x.dim(0)?;
    let keep = 1.0 - p;
    let u = Tensor::rand(0f32, 1f32, b, x.device())?;
    let mask = u.lt(keep as f32)?.to_dtype(x.dtype())?;
    let mut shape = vec![b];
    shape.resize(x.rank(), 1);
    x.broadcast_mul(&(mask.reshape(shape)? / keep)?)
}

/// The soft mask `r * ones + (1 - r) * tril(ones)` for `n` tokens; `None` when r = 1 (all ones).
pub fn soft_mask(n: usize, r: f64, device: &Device, dtype: DType) -> Result<Option<Tensor>> {
    if r >= 1.0 {
        return Ok(None);
    }
    let v: Vec<f32> = (0..n * n)
        .map(|i| {
            let (row, col) = (i / n, i % n);
            let causal = if col <= row { 1.0 } else { 0.0 };
            (r * 1.0 + (1.0 - r) * causal) as f32
        })
        .collect();
    Ok(Some(Tensor::from_vec(v, (n, n), device)?.to_dtype(dtype)?))
}

#[derive(Debug, Clone)]
pub struct Illama {
    pub config: IllamaConfig,
    /// The patch-embedding convolution as a matrix [D, 3*16*16] (a stride-16 16x16 convolution
    /// is a matmul over flattened patches: same result, much faster backward on CPU).
    pub patch_weight: Tensor,
    pub patch_bias: Tensor,
    pub cls_token: Tensor,
    pub pos_embed: Tensor,
    pub blocks: Vec<Block>,
    pub norm: RmsNorm,
    pub head: Linear,
    rope: Rope,
    /// Default soft-mask rate r (0 = causal, the trained models' final state).
    pub soft_mask_rate: f64,
}

impl Illama {
    /// Builds the network, taking (or, for a VarMap, creating) every parameter from `vb`.
    pub fn new(config: IllamaConfig, drop_path_rate: f64, vb: VarBuilder) -> Result<Self> {
        config.validate().map_err(candle_core::Error::msg)?;
        let c = config;
        let fan_in = c.in_chans * c.patch_size * c.patch_size;
        let pe = vb.pp("patch_embed").pp("proj");
        let init = crate::init::torch_default_uniform(fan_in);
        let patch_weight = pe
            .get_with_hints(
                (c.dim, c.in_chans, c.patch_size, c.patch_size),
                "weight",
                init,
            )?
            .reshape((c.dim, fan_in))?;
        let patch_bias = pe.get_with_hints(c.dim, "bias", init)?;
        let cls_token =
            vb.get_with_hints((1, 1, c.dim), "cls_token", crate::init::trunc_normal(0.02))?;
        let pos_embed = vb.get_with_hints(
            (1, c.num_patches() + 1, c.dim),
            "pos_embed",
            crate::init::trunc_normal(0.02),
        )?;
        let blocks = (0..c.depth)
            .map(|i| {
                // torch.linspace(0, drop_path, depth)[i]
                let rate = if c.depth > 1 {
                    drop_path_rate * i as f64 / (c.depth - 1) as f64
                } else {
                    0.0
                };
                Block::new(&c, rate, vb.pp("blocks").pp(i))
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(c.dim, NORM_EPS, vb.pp("norm"))?;
        let head = crate::layers::linear(c.dim, c.num_classes, true, vb.pp("head"))?;
        let rope = Rope::new(c.head_dim(), c.num_patches() + 1, vb.device(), DType::F32)?;
        Ok(Illama {
            config,
            patch_weight,
            patch_bias,
            cls_token,
            pos_embed,
            blocks,
            norm,
            head,
            rope,
            soft_mask_rate: 0.0,
        })
    }

    pub fn device(&self) -> &Device {
        self.cls_token.device()
    }

    pub fn dtype(&self) -> DType {
        self.cls_token.dtype()
    }

    /// [B, 3, H, W] -> [B, N, D]: each 16x16 patch flattened (channel, row, column) and projected.
    fn patch_embed(&self, images: &Tensor) -> Result<Tensor> {
        let (b, ch, h, w) = images.dims4()?;
        let p = self.config.patch_size;
        let (gh, gw) = (h / p, w / p);
        if h % p != 0 || w % p != 0 || gh * gw != self.config.num_patches() {
            candle_core::bail!(
                "input {h}x{w} does not match the model's {0}x{0} (load the model with that input size)",
                self.config.img_size
            );
        }
        let patches = images
            .reshape((b, ch, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, gh * gw, ch * p * p))?;
        patches
            .broadcast_matmul(&self.patch_weight.t()?)?
            .broadcast_add(&self.patch_bias)
    }

    /// Logits for normalised images [B, 3, S, S], with soft-mask rate `r`.
    pub fn forward_with(&self, images: &Tensor, r: f64, train: bool) -> Result<Tensor> {
        let images = images.to_dtype(self.dtype())?;
        let x = self.patch_embed(&images)?;
        let b = x.dim(0)?;
        let cls = self.cls_token.broadcast_as((b, 1, self.config.dim))?;
        let mut x = Tensor::cat(&[&x, &cls], 1)?.broadcast_add(&self.pos_embed)?;
        let n = x.dim(1)?;
        let mask = soft_mask(n, r, self.device(), self.dtype())?;
        for block in &self.blocks {
            x = block.forward(&x, &self.rope, mask.as_ref(), train)?;
        }
        let x = self.norm.forward(&x, !train)?;
        let last = x.narrow(1, n - 1, 1)?.squeeze(1)?;
        self.head.forward(&last)
    }

    /// Inference logits at the model's soft-mask rate.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        self.forward_with(images, self.soft_mask_rate, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_path_zeroes_whole_samples_and_rescales_survivors() {
        let x = Tensor::ones((2000, 3, 4), DType::F32, &Device::Cpu).unwrap();
        let y = drop_path(&x, 0.25, true).unwrap();
        let per_sample: Vec<Vec<f32>> = y.flatten_from(1).unwrap().to_vec2().unwrap();
        let mut dropped = 0;
        for s in &per_sample {
            let first = s[0];
            assert!(
                s.iter().all(|&v| v == first),
                "a sample is dropped whole or kept whole"
            );
            if first == 0.0 {
                dropped += 1;
            } else {
                assert!((first - 1.0 / 0.75).abs() < 1e-6);
            }
        }
        let rate = dropped as f64 / 2000.0;
        assert!((rate - 0.25).abs() < 0.05, "drop rate {rate}");
        // Inference leaves the branch alone.
        let z = drop_path(&x, 0.25, false).unwrap();
        assert_eq!(z.sum_all().unwrap().to_scalar::<f32>().unwrap(), 24000.0);
    }

    #[test]
    fn soft_mask_blends_causal_and_full() {
        let m: Vec<Vec<f32>> = soft_mask(3, 0.5, &Device::Cpu, DType::F32)
            .unwrap()
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(
            m,
            vec![
                vec![1.0, 0.5, 0.5],
                vec![1.0, 1.0, 0.5],
                vec![1.0, 1.0, 1.0]
            ]
        );
        assert!(soft_mask(3, 1.0, &Device::Cpu, DType::F32)
            .unwrap()
            .is_none());
    }
}
