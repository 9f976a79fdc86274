//! The iLLaMA network: patch embedding, class token appended LAST, learned positions, LLaMA
//! blocks with a soft causal mask, RMSNorm, and a head on the last token.

use crate::layers::{Attention, Linear, Mlp, RmsNorm, Rope};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarBuilder;
use illama_arch::IllamaConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const NORM_EPS: f64 = 1e-6;

#[derive(Debug, Clone)]
pub struct Block {
    pub norm1: RmsNorm,
    pub attn: Attention,
    pub norm2: RmsNorm,
    pub mlp: Mlp,
}

impl Block {
    fn new(c: &IllamaConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Block {
            norm1: RmsNorm::new(c.dim, NORM_EPS, vb.pp("norm1"))?,
            attn: Attention::new(c.dim, c.heads, vb.pp("attn"))?,
            norm2: RmsNorm::new(c.dim, NORM_EPS, vb.pp("norm2"))?,
            mlp: Mlp::new(c.dim, c.mlp_hidden, vb.pp("mlp"))?,
        })
    }

    /// `drop`: this block's drop-path rate and the generator of its masks (training only).
    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        mask: Option<&Tensor>,
        drop: Option<(f64, &mut ChaCha8Rng)>,
        cd: DType,
    ) -> Result<Tensor> {
        let train = drop.is_some();
        let a = self
            .attn
            .forward(&self.norm1.forward(x, !train)?, rope, mask, train, cd)?;
        let Some((p, rng)) = drop else {
            let x = (x + a)?;
            let m = self.mlp.forward(&self.norm2.forward(&x, true)?, cd)?;
            return x + m;
        };
        let x = (x + drop_path(&a, p, rng)?)?;
        let m = self.mlp.forward(&self.norm2.forward(&x, false)?, cd)?;
        x + drop_path(&m, p, rng)?
    }
}

/// Zeroes each sample's residual branch with probability `p`, scaling survivors by 1/(1-p), as
/// timm's `drop_path` does (a sample survives when `keep + U[0,1)` floors to 1, i.e. `u >= p`).
fn drop_path(x: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let b = x.dim(0)?;
    let Some(scale) = drop_path_factors(b, p, rng) else {
        return Ok(x.clone());
    };
    let mut shape = vec![b];
    shape.resize(x.rank(), 1);
    let scale = Tensor::from_vec(scale, shape, x.device())?.to_dtype(x.dtype())?;
    x.broadcast_mul(&scale)
}

/// The per-sample factors of [`drop_path`] (0 or `1 / (1 - p)`), drawing `batch` numbers from
/// `rng`; `None` (drawing nothing) when `p` is 0.
fn drop_path_factors(batch: usize, p: f64, rng: &mut ChaCha8Rng) -> Option<Vec<f32>> {
    if p <= 0.0 {
        return None;
    }
    let keep = 1.0 - p;
    Some(
        (0..batch)
            .map(|_| {
                if rng.random::<f64>() >= p {
                    (1.0 / keep) as f32
                } else {
                    0.0
                }
            })
            .collect(),
    )
}

/// Stochastic depth for one training forward pass: the run's current rate (block `i` of `L`
/// drops with `rate * i / (L - 1)`, the reference's `update_drop_path`) and the seed of this
/// pass's masks, so that a run can be replayed exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DropPath {
    pub rate: f64,
    pub seed: u64,
}

impl DropPath {
    /// `torch.linspace(0, rate, depth)`, the per-block rates.
    pub fn block_rates(&self, depth: usize) -> Vec<f64> {
        match depth {
            0 => Vec::new(),
            1 => vec![0.0],
            _ => (0..depth)
                .map(|i| self.rate * i as f64 / (depth - 1) as f64)
                .collect(),
        }
    }
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

/// The logits of a training forward pass, and what its backward pass needs.
pub struct TrainForward {
    pub logits: Tensor,
    /// The blocks' pass when it ran on the hand-written CPU path; `None`: all in candle's graph.
    blocks: Option<BlocksPass>,
}

struct BlocksPass {
    /// The blocks' input, in candle's graph (patch embedding, class token, positions).
    tokens: Tensor,
    /// The blocks' output, a leaf of the graph of the final norm, the head and the loss.
    blocks_out: Var,
    tape: crate::cpu_train::BlocksTape,
}

impl TrainForward {
    /// The gradient of `loss` (computed from [`TrainForward::logits`]) for every parameter.
    pub fn backward(self, loss: &Tensor) -> Result<GradStore> {
        let Some(pass) = self.blocks else {
            return loss.backward();
        };
        // The head's part on candle's autograd, then the blocks by hand, then the embedding's
        // part on candle's autograd again, through `sum(tokens * d_tokens)`.
        let mut grads = loss.backward()?;
        let d_out = match grads.remove(pass.blocks_out.as_tensor()) {
            Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
            None => vec![0f32; pass.blocks_out.elem_count()],
        };
        let (d_tokens, params) = pass.tape.backward(d_out)?;
        for (param, g) in params {
            let g = Tensor::from_vec(g, param.shape(), param.device())?;
            grads.insert(&param, g);
        }
        let d_tokens = Tensor::from_vec(d_tokens, pass.tokens.shape(), pass.tokens.device())?;
        grads.extend((pass.tokens * d_tokens)?.sum_all()?.backward()?)?;
        Ok(grads)
    }
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
    /// How the forward pass computes ([`Precision`]); f32 unless set.
    pub precision: Precision,
}

/// The arithmetic of a forward (and so backward) pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in the parameters' dtype.
    #[default]
    F32,
    /// Mixed precision as PyTorch's bf16 autocast runs the reference: matmuls (patch embedding,
    /// qkv, attention scores and values, projections, MLP, head) and the SwiGLU gate in bf16;
    /// the residual stream, RMSNorm, RoPE, softmax, the soft mask and the logits in the
    /// parameters' dtype (f32). Parameters stay f32 (their gradients arrive in f32 through the
    /// casts), and so does the optimiser.
    Bf16,
}

impl Precision {
    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "f32" | "fp32" => Some(Precision::F32),
            "bf16" => Some(Precision::Bf16),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Illama {
    /// Builds the network, taking (or, for a VarMap, creating) every parameter from `vb`.
    pub fn new(config: IllamaConfig, vb: VarBuilder) -> Result<Self> {
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
            .map(|i| Block::new(&c, vb.pp("blocks").pp(i)))
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
            precision: Precision::F32,
        })
    }

    /// A network to train: f32 parameters in candle `Var`s, initialised as the reference does
    /// from `seed` ([`crate::init::seeded_init`]), returned with their state-dict names (sorted).
    pub fn trainable(
        config: IllamaConfig,
        device: &Device,
        seed: u64,
    ) -> Result<(Illama, Vec<(String, candle_core::Var)>)> {
        let varmap = candle_nn::VarMap::new();
        let model = Illama::new(config, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        let mut named: Vec<(String, candle_core::Var)> = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::msg("variable map poisoned"))?
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let c = &model.config;
        crate::init::seeded_init(&named, c.in_chans * c.patch_size * c.patch_size, seed)?;
        Ok((model, named))
    }

    pub fn device(&self) -> &Device {
        self.cls_token.device()
    }

    pub fn dtype(&self) -> DType {
        self.cls_token.dtype()
    }

    /// The dtype of the matmuls: bf16 under [`Precision::Bf16`], else the parameters'.
    pub fn compute_dtype(&self) -> DType {
        match self.precision {
            Precision::F32 => self.dtype(),
            Precision::Bf16 => DType::BF16,
        }
    }

    /// This network computing with `precision` (the parameters are shared, not copied).
    pub fn with_precision(mut self, precision: Precision) -> Illama {
        self.precision = precision;
        self
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
        let d = self.patch_weight.dim(0)?;
        let cd = self.compute_dtype();
        patches
            .reshape((b * gh * gw, ch * p * p))?
            .to_dtype(cd)?
            .matmul(&self.patch_weight.to_dtype(cd)?.t()?)?
            .broadcast_add(&self.patch_bias.to_dtype(cd)?)?
            .reshape((b, gh * gw, d))?
            .to_dtype(self.dtype())
    }

    /// Logits for normalised images [B, 3, S, S], with soft-mask rate `r` (inference: fused
    /// kernels, no stochastic depth).
    pub fn forward_with(&self, images: &Tensor, r: f64) -> Result<Tensor> {
        if !self.blocks_by_hand() {
            return self.run(images, r, None);
        }
        let x0 = self.tokens(&images.to_dtype(self.dtype())?)?;
        let (b, _, c) = x0.dims3()?;
        // The blocks give the last token's output only: [B, 1, D].
        let (out, _) = self.blocks_on_cpu(&x0, r, None, false)?;
        self.head_of(&Tensor::from_vec(out, (b, 1, c), self.device())?, 1, false)
    }

    /// Whether the blocks run on the hand-written CPU path (`cpu_train`): CPU, f32 parameters,
    /// f32 arithmetic.
    fn blocks_by_hand(&self) -> bool {
        matches!(self.device(), Device::Cpu)
            && self.dtype() == DType::F32
            && self.precision == Precision::F32
    }

    /// The blocks on `x0` [B, N, D] by hand, with soft-mask rate `r` and stochastic depth as
    /// `drop` says (`None`: inference); the tape for backward only if `keep_tape`.
    fn blocks_on_cpu(
        &self,
        x0: &Tensor,
        r: f64,
        drop: Option<DropPath>,
        keep_tape: bool,
    ) -> Result<(Vec<f32>, Option<crate::cpu_train::BlocksTape>)> {
        let (b, n, c) = x0.dims3()?;
        let mask = soft_mask(n, r, self.device(), DType::F32)?
            .map(|m| m.flatten_all()?.to_vec1::<f32>())
            .transpose()?;
        let drop = drop.unwrap_or_default();
        let rates = drop.block_rates(self.blocks.len());
        let mut rng = ChaCha8Rng::seed_from_u64(drop.seed);
        let keep = rates
            .iter()
            .map(|&p| {
                let attn = drop_path_factors(b, p, &mut rng);
                crate::cpu_train::DropFactors {
                    attn,
                    mlp: drop_path_factors(b, p, &mut rng),
                }
            })
            .collect();
        let dims = crate::cpu_train::Dims {
            batch: b,
            tokens: n,
            dim: c,
            heads: self.config.heads,
            hidden: self.config.mlp_hidden,
        };
        crate::cpu_train::BlocksTape::forward(
            &self.blocks,
            dims,
            x0.flatten_all()?.to_vec1::<f32>()?,
            mask,
            (&self.rope.cos, &self.rope.sin),
            keep,
            NORM_EPS,
            keep_tape,
        )
    }

    /// Training logits: only differentiable ops (candle's fused softmax and RMSNorm kernels have
    /// no backward), with stochastic depth as `drop` says.
    pub fn forward_train(&self, images: &Tensor, r: f64, drop: DropPath) -> Result<Tensor> {
        self.run(images, r, Some(drop))
    }

    /// A training forward pass whose [`TrainForward::backward`] gives every parameter's
    /// gradient. On the CPU in f32 the blocks run on the hand-written path of `cpu_train`
    /// (several times faster backward than candle's autograd); elsewhere this is
    /// [`Illama::forward_train`] and candle's autograd.
    pub fn train_forward(&self, images: &Tensor, r: f64, drop: DropPath) -> Result<TrainForward> {
        if !self.blocks_by_hand() {
            return Ok(TrainForward {
                logits: self.forward_train(images, r, drop)?,
                blocks: None,
            });
        }
        let x0 = self.tokens(&images.to_dtype(self.dtype())?)?;
        let (b, _, c) = x0.dims3()?;
        let (out, tape) = self.blocks_on_cpu(&x0, r, Some(drop), true)?;
        let tape = tape.ok_or_else(|| candle_core::Error::msg("the blocks kept no tape"))?;
        // The last token's output of the blocks, [B, 1, D]: all the head reads.
        let blocks_out = Var::from_vec(out, (b, 1, c), self.device())?;
        let logits = self.head_of(blocks_out.as_tensor(), 1, true)?;
        Ok(TrainForward {
            logits,
            blocks: Some(BlocksPass {
                tokens: x0,
                blocks_out,
                tape,
            }),
        })
    }

    /// Patch embedding, the class token appended last and the positions: [B, N, D].
    fn tokens(&self, images: &Tensor) -> Result<Tensor> {
        let x = self.patch_embed(images)?;
        let b = x.dim(0)?;
        let cls = self.cls_token.broadcast_as((b, 1, self.config.dim))?;
        Tensor::cat(&[&x, &cls], 1)?.broadcast_add(&self.pos_embed)
    }

    /// The final norm and the head on the last of `n` tokens.
    fn head_of(&self, x: &Tensor, n: usize, train: bool) -> Result<Tensor> {
        let x = self.norm.forward(x, !train)?;
        let last = x.narrow(1, n - 1, 1)?.squeeze(1)?;
        self.head
            .forward_as(&last, self.compute_dtype())?
            .to_dtype(self.dtype())
    }

    fn run(&self, images: &Tensor, r: f64, drop: Option<DropPath>) -> Result<Tensor> {
        let train = drop.is_some();
        let images = images.to_dtype(self.dtype())?;
        let mut x = self.tokens(&images)?;
        let n = x.dim(1)?;
        let mask = soft_mask(n, r, self.device(), self.dtype())?;
        let rates = drop.map(|d| d.block_rates(self.blocks.len()));
        let mut rng = ChaCha8Rng::seed_from_u64(drop.map_or(0, |d| d.seed));
        let cd = self.compute_dtype();
        for (i, block) in self.blocks.iter().enumerate() {
            let drop = rates.as_ref().map(|r| (r[i], &mut rng));
            x = block.forward(&x, &self.rope, mask.as_ref(), drop, cd)?;
        }
        self.head_of(&x, n, train)
    }

    /// Inference logits at the model's soft-mask rate.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        self.forward_with(images, self.soft_mask_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_path_zeroes_whole_samples_and_rescales_survivors() {
        let x = Tensor::ones((2000, 3, 4), DType::F32, &Device::Cpu).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let y = drop_path(&x, 0.25, &mut rng).unwrap();
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
        // The same seed gives the same masks.
        let again = drop_path(&x, 0.25, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
        assert_eq!(
            (y - again)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        // A rate of 0 leaves the branch alone.
        let z = drop_path(&x, 0.0, &mut rng).unwrap();
        assert_eq!(z.sum_all().unwrap().to_scalar::<f32>().unwrap(), 24000.0);
    }

    #[test]
    fn block_rates_rise_linearly_from_zero() {
        let d = DropPath { rate: 0.4, seed: 0 };
        assert_eq!(d.block_rates(1), vec![0.0]);
        let r = d.block_rates(5);
        assert_eq!(r[0], 0.0);
        assert!((r[2] - 0.2).abs() < 1e-15);
        assert_eq!(r[4], 0.4);
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
