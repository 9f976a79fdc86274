use super::{human_bytes, printable};
use illama_formats::inspect::{inspect, InspectReport};
use illama_formats::OpenOptions;
use std::path::PathBuf;

/// List the tensors of a checkpoint without reading their data.
///
/// Reads safetensors (single or sharded), PyTorch zip (.pth/.pt/.bin, single or sharded),
/// legacy (pre-1.6) PyTorch files and llama.cpp GGUF (tensors with their ggml types); the format
/// is detected from the bytes, not the name.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  illama-tools inspect illama_tiny.pth\n  illama-tools inspect Llama-2-7b-hf/ --json | jq .parameters\n  illama-tools inspect checkpoint-299.pth --key model_ema\n  illama-tools inspect llama-2-7b.Q8_0.gguf"
)]
pub struct Args {
    /// A checkpoint file, a directory holding one, or a shard index (*.index.json).
    path: PathBuf,
    /// Take tensors from this entry of a training checkpoint (model, model_ema, ...).
    #[arg(long)]
    key: Option<String>,
    /// Remove this prefix from tensor names (e.g. `module.`).
    #[arg(long)]
    strip_prefix: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let opts = OpenOptions {
        key: a.key,
        strip_prefix: a.strip_prefix,
    };
    let report = inspect(&a.path, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &InspectReport) {
    println!("{}: {}", r.path.display(), format_name(r));
    for f in &r.files {
        println!("  file {} ({})", f.path.display(), human_bytes(f.bytes));
    }
    if let Some(root) = &r.root {
        println!("  tensors from {root}");
    }
    let name_w = r
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 60);
    println!();
    println!(
        "{:<name_w$}  {:<7} {:<22} {:>12}",
        "name", "dtype", "shape", "bytes"
    );
    for t in &r.tensors {
        let shape = format!("{:?}", t.shape);
        let mut line = format!(
            "{:<name_w$}  {:<7} {:<22} {:>12}",
            printable(&t.name),
            t.ggml_type.clone().unwrap_or_else(|| t.dtype.to_string()),
            shape,
            t.bytes
        );
        if !t.contiguous {
            line.push_str("  (strided)");
        }
        if let Some(f) = &t.file {
            line.push_str(&format!("  [{}]", printable(f)));
        }
        println!("{line}");
    }
    println!();
    println!(
        "{} tensors, {} parameters, {}",
        r.tensor_count,
        r.parameters,
        human_bytes(r.tensor_bytes)
    );
    for (d, n) in &r.parameters_by_dtype {
        println!("  {d}: {n} elements");
    }
    if !r.non_tensors.is_empty() {
        println!("non-tensor entries:");
        for e in &r.non_tensors {
            println!(
                "  {}: {} = {}",
                printable(&e.name),
                printable(&e.kind),
                short_json(&e.value)
            );
        }
    }
    if !r.other_entries.is_empty() {
        println!("other entries of the checkpoint:");
        for e in &r.other_entries {
            println!(
                "  {}: {} = {}",
                printable(&e.name),
                printable(&e.kind),
                short_json(&e.value)
            );
        }
    }
    if !r.metadata.is_empty() {
        println!("metadata:");
        for (k, v) in &r.metadata {
            println!("  {}: {}", printable(k), printable(&shorten(v)));
        }
    }
    for w in &r.warnings {
        println!("warning: {}", printable(w));
    }
}

fn short_json(v: &serde_json::Value) -> String {
    shorten(&v.to_string())
}

fn shorten(s: &str) -> String {
    const MAX: usize = 100;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

fn format_name(r: &InspectReport) -> String {
    let sharded = if r.index.is_some() {
        format!(", sharded ({} files)", r.files.len())
    } else {
        String::new()
    };
    format!("{}{sharded}", r.format.name())
}
