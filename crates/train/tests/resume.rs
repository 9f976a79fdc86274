//! A run interrupted after a checkpoint and resumed ends with exactly the weights of an
//! uninterrupted run with the same seed; `log.txt` holds one JSON line per epoch with the
//! reference's field names.

mod common;

use candle_core::Var;
use common::{deterministic_init, make_images, trainable};
use illama_arch::IllamaConfig;
use illama_data::mix::Mixup;
use illama_data::train::TrainTransform;
use illama_data::{Dataset, LoaderOptions};
use illama_model::Illama;
use illama_train::epoch::Schedules;
use illama_train::optim::{AdamW, AdamWConfig};
use illama_train::run::{run, Resume, RunOptions};
use illama_train::schedule::cosine;
use std::path::Path;

/// A fresh model and optimiser; `init` picks the (deterministic) initial weights.
fn fresh(init: u64) -> (Illama, AdamW) {
    let config = IllamaConfig {
        img_size: 32,
        num_classes: 4,
        mlp_hidden: 64,
        ..IllamaConfig::new(32, 2, 2)
    };
    let (model, named) = trainable(config);
    deterministic_init(&named, init);
    (model, AdamW::new(named, AdamWConfig::default()).unwrap())
}

fn train(dir: &Path, data: &Path, epochs: u64, init: u64) -> (AdamW, Vec<String>) {
    let train = Dataset::image_folder(&data.join("train")).unwrap();
    let val = Dataset::image_folder(&data.join("val")).unwrap();
    let (model, mut opt) = fresh(init);
    let steps = train.samples.len() / 8;
    let total = 3 * steps;
    let schedules = Schedules {
        lr: cosine(2e-3, 1e-5, 3, steps, 1, 0.0, None).unwrap(),
        weight_decay: vec![0.05; total],
        soft_mask: illama_train::schedule::linspace(1.0, 0.0, total),
        drop_path: vec![0.2; total],
    };
    let mixup = Mixup::new(0.8, 1.0, 1.0, 0.5, 0.1, 4).unwrap();
    let opts = RunOptions {
        output_dir: dir.to_path_buf(),
        epochs,
        batch_size: 8,
        update_freq: 1,
        seed: 5,
        smoothing: 0.1,
        clip_grad: Some(1.0),
        ema_decay: 0.9,
        keep_checkpoints: 2,
        eval: true,
        eval_ema: true,
        pth_copies: true,
        resume: Resume::Auto,
        inputs: vec![data.to_path_buf()],
        loader: LoaderOptions {
            batch_size: 8,
            workers: 2,
            skip_bad: false,
            limit: None,
            prefetch: 2,
        },
        args: serde_json::json!({"model": "custom:32,2,2"}),
    };
    let mut ema: Vec<Var> = opt
        .params
        .iter()
        .map(|p| Var::from_tensor(&p.var.as_tensor().copy().unwrap()).unwrap())
        .collect();
    let transform = TrainTransform::recipe(32).unwrap();
    run(
        &model,
        &mut opt,
        Some(&mut ema),
        &train,
        Some(&val),
        &transform,
        Some(&mixup),
        &schedules,
        &opts,
        &mut (),
    )
    .unwrap();
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap_or_default();
    (opt, log.lines().map(String::from).collect())
}

fn bits(opt: &AdamW) -> Vec<Vec<u32>> {
    opt.params
        .iter()
        .map(|p| {
            p.var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        })
        .collect()
}

#[test]
fn a_resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    let data = tempfile::tempdir().unwrap();
    make_images(&data.path().join("train"), 8, 1);
    make_images(&data.path().join("val"), 2, 2);
    let a = tempfile::tempdir().unwrap();
    let (whole, log) = train(a.path(), data.path(), 3, 7);
    assert_eq!(log.len(), 3);
    let line: serde_json::Value = serde_json::from_str(&log[2]).unwrap();
    for field in [
        "train_lr",
        "train_min_lr",
        "train_loss",
        "train_weight_decay",
        "train_soft_mask_rate",
        "test_loss",
        "test_acc1",
        "test_acc5",
        "epoch",
        "n_parameters",
        "test_acc1_ema",
        "test_acc5_ema",
        "test_loss_ema",
    ] {
        assert!(line.get(field).is_some(), "log.txt lacks {field}: {line}");
    }
    assert_eq!(line["epoch"], 2);
    // The last two epoch checkpoints are kept, and the best one.
    let mut kept: Vec<String> = std::fs::read_dir(a.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    kept.sort();
    assert!(
        kept.contains(&"checkpoint-best.safetensors".to_string()),
        "{kept:?}"
    );
    assert!(
        kept.contains(&"checkpoint-2.safetensors".to_string()),
        "{kept:?}"
    );
    assert!(
        !kept.contains(&"checkpoint-0.safetensors".to_string()),
        "{kept:?}"
    );

    // Stopped after epoch 1, then resumed by a process that starts from other weights.
    let b = tempfile::tempdir().unwrap();
    train(b.path(), data.path(), 2, 7);
    let (resumed, log) = train(b.path(), data.path(), 3, 99);
    assert_eq!(log.len(), 3);
    assert!(bits(&resumed) == bits(&whole), "resumed weights differ");
}
