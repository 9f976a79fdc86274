use super::checkpoint_args::{parse_output_dtype, FileFormat, OutputDType};
use super::{human_bytes, printable};
use crate::progress::Bar;
use crate::size::parse_size;
use anyhow::Context;
use illama_formats::convert::{convert, ConvertOptions, ConvertReport};
use illama_formats::OpenOptions;
use std::path::PathBuf;

/// Convert between PyTorch (.pth/.pt/.bin) and safetensors, streaming.
///
/// The output format is --to, else the output's extension, else the other format than the
/// input's. Tensors that share storage in a .pth become independent contiguous tensors. Non-tensor
/// entries (epoch, args) go into the safetensors metadata as JSON when small; anything not
/// converted is listed. Nothing is written at the output path unless conversion (and --verify)
/// succeeds.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  illama-tools convert illama_tiny.pth                      # -> illama_tiny.safetensors\n  illama-tools convert model.safetensors -o model.pth --wrap model\n  illama-tools convert checkpoint.pth --key model_ema --dtype bf16 --verify\n  illama-tools convert Llama-2-7b-hf/ --to safetensors --max-shard-size 5GB"
)]
pub struct Args {
    /// Input checkpoint: a file, a directory of shards, or a shard index json.
    input: PathBuf,
    /// Output file (or directory, for sharded output). Default: beside the input.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum)]
    to: Option<FileFormat>,
    /// Take tensors from this entry of a training checkpoint (model, model_ema, state_dict, ...).
    #[arg(long)]
    key: Option<String>,
    /// Remove this prefix from tensor names (e.g. `module.`).
    #[arg(long)]
    strip_prefix: Option<String>,
    /// Cast floating-point tensors (integer tensors keep their type).
    #[arg(long, default_value = "keep", value_parser = parse_output_dtype)]
    dtype: OutputDType,
    /// Split the output into shards of at most this size (e.g. 5GB); the output is a directory.
    #[arg(long, value_parser = parse_size)]
    max_shard_size: Option<u64>,
    /// .pth output: nest the state dict under this key, like training checkpoints ({'model': ...}).
    #[arg(long)]
    wrap: Option<String>,
    /// Re-read the output, compare every tensor with the source, print sha256 of each file.
    #[arg(long)]
    verify: bool,
    /// Overwrite an existing output.
    #[arg(long)]
    force: bool,
    /// Print one JSON object with the summary.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let opts = ConvertOptions {
        output: a.output,
        to: a.to.map(Into::into),
        open: OpenOptions {
            key: a.key,
            strip_prefix: a.strip_prefix,
        },
        dtype: a.dtype.0,
        max_shard_size: a.max_shard_size,
        verify: a.verify,
        force: a.force,
        wrap: a.wrap,
    };
    let bar = Bar::new(a.json);
    let report = convert(&a.input, &opts, &bar)
        .with_context(|| format!("converting {}", a.input.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    Ok(())
}

fn print_summary(r: &ConvertReport) {
    println!(
        "{} ({}) -> {} ({})",
        r.input.display(),
        r.input_format.name(),
        r.output.display(),
        r.output_format.name()
    );
    println!("  {} tensors, {}", r.tensors, human_bytes(r.tensor_bytes));
    if let Some(root) = &r.root {
        println!("  tensors from {root}");
    }
    for (pair, n) in &r.cast {
        println!("  cast {pair}: {n} tensors");
    }
    for g in &r.unshared {
        println!(
            "  shared a storage, now independent copies: {}",
            printable(&g.join(", "))
        );
    }
    if !r.recorded_in_metadata.is_empty() {
        println!(
            "  recorded in __metadata__ as JSON: {}",
            printable(&r.recorded_in_metadata.join(", "))
        );
    }
    for n in &r.not_converted {
        let hint = if n.tensors > 0 {
            format!(" [--key {}]", printable(&n.name))
        } else {
            String::new()
        };
        println!(
            "  not converted: {} ({}): {}{hint}",
            printable(&n.name),
            printable(&n.kind),
            printable(&n.why)
        );
    }
    for w in &r.warnings {
        println!("  note: {}", printable(w));
    }
    if let Some(i) = &r.index {
        println!("  index {}", i.display());
    }
    for f in &r.files {
        match &f.sha256 {
            Some(h) => println!("  {h}  {} ({})", f.path.display(), human_bytes(f.bytes)),
            None => println!("  wrote {} ({})", f.path.display(), human_bytes(f.bytes)),
        }
    }
    if r.verified {
        println!("  verified: every tensor of the output matches the source byte for byte");
    }
}
