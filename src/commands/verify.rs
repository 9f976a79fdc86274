use anyhow::{bail, Context};
use illama_data::{eval_batches, imagenet_classes, Dataset, EvalTransform, LoaderOptions};
use illama_formats::{write_tensors, DType as FileDType, OutTensor, OutputPolicy, TargetFormat};
use illama_model::{load, LoadOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Measure top-1/top-5 accuracy and loss of a checkpoint on ImageNet val.
///
/// Preprocessing is the reference's: decode by content, RGB like PIL, bicubic resize of the
/// shorter side to 256 with PIL's antialiasing, center crop 224 (or a warp to 384 and above),
/// ImageNet normalisation; EXIF orientation is not applied (torchvision's loader ignores it).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  illama-tools verify --imagenet ~/imagenet/val --weights illama_tiny_in1k.pth\n  illama-tools verify --imagenet ~/imagenet/val --weights illama_base_384.pth --input-size 384 --json\n  illama-tools verify --imagenet ~/ILSVRC2012_img_val --labels val_labels.csv --weights w.pth\n  illama-tools verify --imagenet val/ --weights w.pth --limit 64 --dump-inputs inputs.safetensors"
)]
pub struct Args {
    /// Validation images: an ImageFolder (<dir>/<wnid>/*.JPEG) or, with --labels, a flat folder.
    #[arg(long)]
    imagenet: PathBuf,
    /// Checkpoint (.pth or .safetensors; training checkpoints too).
    #[arg(long)]
    weights: PathBuf,
    #[command(flatten)]
    m: super::args::ModelArgs,
    /// Entry of a training checkpoint to evaluate (model, model_ema).
    #[arg(long)]
    key: Option<String>,
    /// Labels of a flat folder: a file,wnid CSV, Kaggle's LOC_val_solution.csv, or the devkit's
    /// ground truth with --devkit-synsets.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// The 1000 wnids in ILSVRC2012_ID order, for devkit ground-truth labels.
    #[arg(long)]
    devkit_synsets: Option<PathBuf>,
    /// Evaluation resolution: 224 (resize 256, crop) or 384 (warp); other sizes follow the same rule.
    #[arg(long, default_value_t = 224, value_parser = super::parse_input_size)]
    input_size: usize,
    #[arg(long, default_value_t = 64, value_parser = super::parse_positive)]
    batch_size: usize,
    /// Evaluate only the first N images.
    #[arg(long, value_parser = super::parse_positive)]
    limit: Option<usize>,
    /// Decoding threads. Default: all cores.
    #[arg(long, value_parser = super::parse_positive)]
    workers: Option<usize>,
    /// Leave unreadable images out (they are listed) instead of stopping.
    #[arg(long)]
    skip_bad: bool,
    /// Write the preprocessed inputs (pixel_values [N,3,S,S] f32, labels [N] i64) to this
    /// safetensors file, to compare with torchvision pixel by pixel. Use with --limit.
    #[arg(long)]
    dump_inputs: Option<PathBuf>,
    /// Let --dump-inputs replace an existing file (never an input, a directory or a special file).
    #[arg(long)]
    force: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let transform = EvalTransform::new(a.input_size)?;
    let policy = OutputPolicy::new(a.force).protect(
        [
            Some(&a.weights),
            a.labels.as_ref(),
            a.devkit_synsets.as_ref(),
        ]
        .into_iter()
        .flatten(),
    );
    if let Some(path) = &a.dump_inputs {
        // A typo in the path fails now, not after the whole evaluation.
        policy.check_file(path)?;
        if path.starts_with(&a.imagenet) {
            bail!(
                "--dump-inputs {}: is inside the dataset {}; write it elsewhere",
                path.display(),
                a.imagenet.display()
            );
        }
    }
    let opts = LoadOptions {
        key: a.key.clone(),
        ..a.m.load_options(Some(a.input_size))?
    };
    let (model, report) =
        load(&a.weights, &opts).with_context(|| format!("loading {}", a.weights.display()))?;
    let model = model.with_precision(a.m.precision);
    let classes = model.config.num_classes;
    let imagenet: Vec<String> = imagenet_classes()
        .iter()
        .map(|(w, _)| w.to_string())
        .collect();
    let mut dataset = match &a.labels {
        Some(labels) => Dataset::flat(
            &a.imagenet,
            labels,
            imagenet.clone(),
            a.devkit_synsets.as_deref(),
        )?,
        None => Dataset::image_folder(&a.imagenet)?,
    };
    // A flat folder's labels are already ImageNet indices.
    let notes = match &a.labels {
        None => dataset.align_to_model(classes)?,
        Some(_) if dataset.classes.len() > classes => bail!(
            "{} classes in {}, but the model has {classes}",
            dataset.classes.len(),
            a.imagenet.display()
        ),
        Some(_) => Vec::new(),
    };
    let total = a.limit.unwrap_or(usize::MAX).min(dataset.samples.len());
    let workers = a
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let batches = eval_batches(
        &dataset,
        transform,
        LoaderOptions {
            batch_size: a.batch_size,
            workers,
            skip_bad: a.skip_bad,
            limit: a.limit,
            prefetch: 3,
        },
    )?;
    let bar = (!a.json && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::new(total as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40.cyan/blue}] {pos}/{len} images {per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b
    });
    let mut dumped: Vec<f32> = Vec::new();
    let mut dumped_labels: Vec<i64> = Vec::new();
    let eval = illama_train::evaluate(&model, batches, a.input_size, |batch, acc| {
        if a.dump_inputs.is_some() {
            dumped.extend_from_slice(&batch.pixels);
            dumped_labels.extend_from_slice(&batch.labels);
        }
        if let Some(b) = &bar {
            b.inc((batch.labels.len() + batch.skipped.len()) as u64);
            b.set_message(format!("top-1 {:.2}%", acc.top1_percent()));
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(path) = &a.dump_inputs {
        let n = dumped_labels.len();
        let s = a.input_size;
        let pixels: Vec<u8> = dumped.iter().flat_map(|v| v.to_le_bytes()).collect();
        let labels: Vec<u8> = dumped_labels.iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensors = vec![
            OutTensor::from_bytes("labels", FileDType::I64, vec![n], labels),
            OutTensor::from_bytes("pixel_values", FileDType::F32, vec![n, 3, s, s], pixels),
        ];
        write_tensors(
            path,
            &policy,
            TargetFormat::Safetensors,
            tensors,
            &Default::default(),
        )?;
    }
    if a.json {
        let out = serde_json::json!({
            "weights": a.weights,
            "model": report.config,
            "model_from": report.config_source,
            "dataset": a.imagenet,
            "input_size": a.input_size,
            "top1": eval.top1,
            "top5": eval.top5,
            "loss": eval.loss,
            "images": eval.images,
            "seconds": eval.seconds,
            "images_per_second": eval.images_per_second,
            "unreadable": eval.unreadable.iter().map(|(p, e)| serde_json::json!({"file": p, "error": e})).collect::<Vec<_>>(),
            "notes": notes,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for n in &notes {
            println!("note: {n}");
        }
        println!(
            "{}: top-1 {:.3}%  top-5 {:.3}%  loss {:.4}  ({} images at {}px, {:.1} images/s)",
            a.weights.display(),
            eval.top1,
            eval.top5,
            eval.loss,
            eval.images,
            a.input_size,
            eval.images_per_second
        );
        if !eval.unreadable.is_empty() {
            println!("{} unreadable images left out:", eval.unreadable.len());
            for (p, e) in &eval.unreadable {
                println!("  {}: {e}", p.display());
            }
        }
    }
    Ok(())
}
