use anyhow::Context;
use candle_core::{DType, Tensor};
use illama_data::{imagenet_classes, read_image, EvalTransform};
use illama_model::load;
use illama_train::metrics::{softmax, top_k};
use std::path::PathBuf;

/// Classify images with an iLLaMA checkpoint: the top-k ImageNet classes and probabilities.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  illama-tools predict cat.jpg dog.png --weights illama_tiny_in1k.pth\n  illama-tools predict photos/*.jpg --weights w.safetensors --topk 1 --json"
)]
pub struct Args {
    /// Image files (JPEG, PNG, ...; the format is read from the content).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[arg(long)]
    weights: PathBuf,
    #[command(flatten)]
    m: super::args::ModelArgs,
    #[arg(long, default_value_t = 5, value_parser = super::parse_positive)]
    topk: usize,
    #[arg(long, default_value_t = 224, value_parser = super::parse_input_size)]
    input_size: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let opts = a.m.load_options(Some(a.input_size))?;
    let (model, _) =
        load(&a.weights, &opts).with_context(|| format!("loading {}", a.weights.display()))?;
    let model = model.with_precision(a.m.precision);
    let names = imagenet_classes();
    let t = EvalTransform::new(a.input_size)?;
    let s = a.input_size;
    let mut results = Vec::new();
    for path in &a.images {
        let img = read_image(path)?;
        let x = Tensor::from_vec(t.apply(&img)?, (1, 3, s, s), model.device())?;
        let logits: Vec<f32> = model
            .forward(&x)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let probs = softmax(&logits);
        let top: Vec<serde_json::Value> = top_k(&probs, a.topk)
            .iter()
            .map(|&c| {
                let (wnid, name) = if probs.len() == names.len() {
                    names[c]
                } else {
                    ("", "")
                };
                let name = if name.is_empty() {
                    format!("class {c}")
                } else {
                    name.split(',').next().unwrap_or(name).to_string()
                };
                serde_json::json!({"class": c, "wnid": wnid, "name": name, "probability": probs[c]})
            })
            .collect();
        results.push(serde_json::json!({"image": path, "top": top}));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            println!("{}", r["image"].as_str().unwrap_or_default());
            for t in r["top"].as_array().into_iter().flatten() {
                println!(
                    "  {:>6.2}%  {:<4} {}  {}",
                    t["probability"].as_f64().unwrap_or(0.0) * 100.0,
                    t["class"],
                    t["wnid"].as_str().unwrap_or(""),
                    t["name"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}
