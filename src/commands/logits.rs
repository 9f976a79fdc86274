use anyhow::{bail, Context};
use candle_core::{DType, Device};
use illama_formats::{write_tensors, DType as FileDType, OutTensor, OutputPolicy, TargetFormat};
use illama_model::{load, read_tensors};
use std::path::PathBuf;

/// Compute logits of an iLLaMA checkpoint for a batch of preprocessed images.
///
/// For parity checks against any implementation: the input holds one f32 tensor `pixel_values`
/// [B, 3, S, S] (already normalised); the output receives `logits` [B, classes] f32.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  illama-tools logits --weights illama_tiny.pth --input x.safetensors --output l.safetensors\n  illama-tools logits --weights illama_base_384.pth --input x384.safetensors --output l.safetensors --input-size 384 --soft-mask-rate 0"
)]
pub struct Args {
    /// Checkpoint (.pth, .safetensors; {'model': ...} training checkpoints too).
    #[arg(long)]
    weights: PathBuf,
    #[command(flatten)]
    m: super::args::ModelArgs,
    /// safetensors file with `pixel_values` [B, 3, S, S] f32.
    #[arg(long)]
    input: PathBuf,
    /// Where to write `logits` [B, classes] f32 (safetensors).
    #[arg(long)]
    output: PathBuf,
    /// Soft-mask rate r in [0, 1]: 0 causal (trained models), 1 bidirectional.
    #[arg(long, default_value_t = 0.0, value_parser = super::parse_unit_rate)]
    soft_mask_rate: f64,
    /// Input size; default: the size of `pixel_values`. Position embeddings are interpolated
    /// when it differs from the checkpoint's.
    #[arg(long, value_parser = super::parse_input_size)]
    input_size: Option<usize>,
    /// Overwrite an existing output (never an input, a directory or a special file).
    #[arg(long)]
    force: bool,
    /// Print one JSON object describing what was written.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let policy = OutputPolicy::new(a.force).protect([&a.input, &a.weights]);
    // Refuse a bad output before the work, and again when writing.
    policy.check_file(&a.output)?;
    let (inputs, _) =
        read_tensors(&a.input, None).with_context(|| format!("reading {}", a.input.display()))?;
    let x = inputs
        .get("pixel_values")
        .with_context(|| format!("{}: no tensor 'pixel_values'", a.input.display()))?;
    let shape_error = || {
        anyhow::anyhow!(
            "{}: pixel_values is {:?}, expected [B, 3, S, S] with B >= 1 and S a multiple of 16",
            a.input.display(),
            x.dims()
        )
    };
    let (b, c, h, w) = x.dims4().map_err(|_| shape_error())?;
    if b == 0 || c != 3 || h != w || illama_arch::check_input_size(h, 16).is_err() {
        return Err(shape_error());
    }
    let size = a.input_size.unwrap_or(h);
    if size != h {
        bail!("--input-size {size} but pixel_values is {h}x{w}");
    }
    let opts = a.m.load_options(Some(size))?;
    let device = opts.device.clone();
    let (model, _) = load(&a.weights, &opts)?;
    let model = model.with_precision(a.m.precision);
    let logits = model
        .forward_with(
            &x.to_dtype(DType::F32)?.to_device(&device)?,
            a.soft_mask_rate,
        )?
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?;
    let shape = logits.dims().to_vec();
    let values: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let (written, _) = write_tensors(
        &a.output,
        &policy,
        TargetFormat::Safetensors,
        vec![OutTensor::from_bytes(
            "logits",
            FileDType::F32,
            shape.clone(),
            bytes,
        )],
        &Default::default(),
    )?;
    if a.json {
        let report = serde_json::json!({
            "output": written,
            "logits_shape": shape,
            "soft_mask_rate": a.soft_mask_rate,
            "input_size": size,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
