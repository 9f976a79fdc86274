//! Argument groups shared by several commands, so that a flag means the same everywhere.

use illama_model::{parse_device, LoadOptions};

/// The model a command runs: architecture, device and compute dtype (`logits`, `verify`,
/// `predict`).
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Architecture: tiny, small, base, large, or custom:DIM,DEPTH,HEADS[,MLP]. Default: inferred
    /// from the checkpoint.
    #[arg(long)]
    pub model: Option<String>,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: f32 (exact parity with PyTorch), bf16 or f16 (faster where supported).
    #[arg(long, default_value = "f32", value_parser = super::parse_compute_dtype)]
    pub dtype: candle_core::DType,
    /// f32, or bf16 mixed precision: the weights as --dtype says, the matmuls in bf16, norms,
    /// softmax and logits in f32 (docs/training.md).
    #[arg(long, default_value = "f32", value_parser = super::parse_precision)]
    pub precision: illama_model::Precision,
}

impl ModelArgs {
    /// How to load the weights, at input size `img_size` (`None`: the checkpoint's).
    pub fn load_options(&self, img_size: Option<usize>) -> anyhow::Result<LoadOptions> {
        Ok(LoadOptions {
            config: self.model.as_deref().map(super::parse_model).transpose()?,
            img_size,
            device: parse_device(&self.device)?,
            dtype: self.dtype,
            key: None,
        })
    }
}
