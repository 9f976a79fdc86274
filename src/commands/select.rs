use super::checkpoint_args::{parse_output_dtype, FileFormat, OutputDType};
use super::human_bytes;
use crate::progress::Bar;
use anyhow::Context;
use illama_arch::{ArchError, IllamaConfig, Overrides};
use illama_select::{
    select, ElementSelection, LayerSelection, SelectOptions, SelectReport, TargetFormat,
};
use std::path::PathBuf;

/// Select iLLaMA weights from a LLaMA checkpoint (weight selection, as the paper does).
///
/// Memory-maps the teacher and reads only the selected rows. The defaults reproduce the reference
/// Python bit for bit: the first N layers, uniform element selection on the concatenated q/k/v,
/// the 7 selected tensors per block, the teacher's dtype.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  illama-tools select --from llama2-7b --to base                 # -> illama_ws_base.safetensors\n  illama-tools select --from ~/models/Llama-2-7b-hf --to tiny --format pth\n  illama-tools select --from ~/llama-2-7b --to small --dtype f16  # Meta layout (params.json)\n  illama-tools select --from llama2-7b --to custom --dim 512 --depth 8 --heads 8 --layers uniform\n  illama-tools select --from llama-2-7b.Q8_0.gguf --to base --hash-teacher\n\nTEACHER is a directory or file (Hugging Face or Meta layout, or a llama.cpp GGUF file; detected from the files) or a name\n(llama2-7b, llama2-13b, llama2-70b, llama3-8b, ..., or ORG/NAME) found in the local Hugging Face\ncache ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub). Nothing is downloaded."
)]
pub struct Args {
    /// Teacher checkpoint: a path or a model name in the local Hugging Face cache.
    #[arg(long = "from", value_name = "TEACHER")]
    teacher: String,
    /// Student: a preset, or custom (with --dim, --depth, --heads).
    #[arg(long = "to", value_name = "tiny|small|base|large|custom")]
    student: String,
    /// Output file. Default: illama_ws_<student>.safetensors (or .pth) here.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Teacher layers for the student's blocks: first, uniform, or a list such as 0,2,4.
    #[arg(long, default_value = "first")]
    layers: String,
    /// Element selection in every dimension.
    #[arg(long, value_enum, default_value = "uniform")]
    elements: Elements,
    /// Seed for --elements random.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Student width (custom, or overrides a preset).
    #[arg(long)]
    dim: Option<usize>,
    /// Student depth (custom, or overrides a preset).
    #[arg(long)]
    depth: Option<usize>,
    /// Student heads (custom, or overrides a preset).
    #[arg(long)]
    heads: Option<usize>,
    /// Student MLP hidden width. Default: int(8D/3) rounded up to a multiple of 256.
    #[arg(long)]
    mlp_hidden: Option<usize>,
    /// Output dtype: keep (the teacher's, as the reference), f32, f16, bf16 or f64.
    #[arg(long, default_value = "keep", value_parser = parse_output_dtype)]
    dtype: OutputDType,
    /// Output format. Default: from -o's extension (.pth, .pt, .bin: pth), else safetensors.
    #[arg(long, value_enum)]
    format: Option<FileFormat>,
    /// Overwrite an existing output.
    #[arg(long)]
    force: bool,
    /// Print one JSON object (with the selected indices) instead of a table.
    #[arg(long)]
    json: bool,
    /// Also record the sha256 of every teacher file (as `sha256sum` prints it) in the output's
    /// metadata (`teacher.sha256`) and the report. The files are read whole on other threads
    /// while selecting; without it, only a cheap fingerprint (`teacher.fingerprint`) is kept.
    #[arg(long)]
    hash_teacher: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Elements {
    Uniform,
    First,
    Random,
}

fn student(a: &Args) -> anyhow::Result<(String, IllamaConfig)> {
    let overrides = Overrides {
        dim: a.dim,
        depth: a.depth,
        heads: a.heads,
        mlp_hidden: a.mlp_hidden,
    };
    IllamaConfig::student(&a.student, &overrides).map_err(|e| match e {
        ArchError::CustomIncomplete => {
            anyhow::anyhow!("--to custom needs --dim, --depth and --heads")
        }
        ArchError::UnknownSpec(name) => {
            anyhow::anyhow!("unknown student '{name}': use tiny, small, base, large or custom")
        }
        other => other.into(),
    })
}

fn layers(s: &str) -> anyhow::Result<LayerSelection> {
    Ok(match s {
        "first" => LayerSelection::First,
        "uniform" => LayerSelection::Uniform,
        list => LayerSelection::Explicit(
            list.split(',')
                .map(|x| x.trim().parse::<usize>())
                .collect::<Result<_, _>>()
                .with_context(|| {
                    format!("--layers '{list}': expected first, uniform or a list such as 0,2,4")
                })?,
        ),
    })
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (student_name, config) = student(&a)?;
    let format = a
        .format
        .map(TargetFormat::from)
        .or_else(|| a.output.as_deref().and_then(TargetFormat::from_extension))
        .unwrap_or(TargetFormat::Safetensors);
    let opts = SelectOptions {
        teacher: a.teacher.clone(),
        student: config,
        student_name,
        layers: layers(&a.layers)?,
        elements: match a.elements {
            Elements::Uniform => ElementSelection::Uniform,
            Elements::First => ElementSelection::First,
            Elements::Random => ElementSelection::Random { seed: a.seed },
        },
        dtype: a.dtype.0,
        format,
        output: a.output,
        force: a.force,
        hash_teacher: a.hash_teacher,
    };
    let bar = Bar::new(a.json);
    let report = select(&opts, &bar).with_context(|| format!("selecting from {}", a.teacher))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    Ok(())
}

fn print_summary(r: &SelectReport) {
    let t = &r.teacher;
    if let Some(how) = &t.resolved_from {
        println!("teacher {how}");
    }
    println!(
        "teacher {} ({:?}, {} file(s), {}): hidden {}, intermediate {}, {} layers, k/v rows {}",
        t.path.display(),
        t.layout,
        t.shards,
        t.dtype,
        t.config.hidden,
        t.config.intermediate,
        t.config.layers,
        t.config.kv_dim
    );
    let s = &r.student;
    println!(
        "student {}: dim {}, depth {}, heads {}, mlp hidden {}",
        r.student_name, s.dim, s.depth, s.heads, s.mlp_hidden
    );
    println!("layers ({}): {:?}", r.layer_selection, r.layers);
    println!(
        "elements: {}{}",
        r.element_selection,
        r.seed.map(|s| format!(" (seed {s})")).unwrap_or_default()
    );
    println!();
    let w = r.tensors.iter().map(|t| t.name.len()).max().unwrap_or(4);
    for t in &r.tensors {
        println!(
            "{:<w$}  {:<12} {:<5} <- {}",
            t.name,
            format!("{:?}", t.shape),
            t.dtype.to_string(),
            t.sources.join(" + ")
        );
    }
    println!();
    for n in &r.notes {
        println!("note: {n}");
    }
    if let Some(hashes) = &t.sha256 {
        for (file, h) in hashes {
            println!("sha256 {h}  {file}");
        }
        if let Some(w) = t.hash_wait_seconds {
            println!("hashing the teacher added {w:.2} s after the selection");
        }
    }
    println!(
        "wrote {} ({}, {} tensors, {})",
        r.output.display(),
        human_bytes(r.bytes),
        r.tensors.len(),
        format!("{:?}", r.format).to_lowercase()
    );
}
