use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use illama_arch::IllamaConfig;
use illama_data::procedural::{write_pattern_set, PatternSet};
use illama_data::{eval_batches, read_image, Dataset, EvalTransform, LoaderOptions};
use illama_formats::convert::{convert, ConvertOptions};
use illama_formats::{NoProgress, TargetFormat};
use illama_model::{load, LoadOptions};
use illama_select::{select, ElementSelection, LayerSelection, SelectOptions};
use illama_train::finetune::{finetune, FinetuneObserver, Prepared, Recipe};
use illama_train::metrics::{softmax, top_k};
use illama_train::run::{EpochLog, Observer, Resume};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The whole pipeline on bundled data, in about a minute: select iLLaMA weights from a small
/// LLaMA teacher (Hugging Face and Meta layouts), convert them to .pth and back, fine-tune on a
/// procedural image set against the same run from random weights, verify and predict.
///
/// Writes only under --output-dir. The teacher is a small random LLaMA (4 layers, width 96)
/// bundled in the binary; the images are made at run time.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  illama-tools quickstart\n  illama-tools quickstart --output-dir /tmp/qs --epochs 4 --json"
)]
pub struct Args {
    /// Folder for everything the quickstart writes (made, or reused if an earlier quickstart
    /// made it).
    #[arg(long, short = 'o', default_value = "quickstart-out")]
    output_dir: PathBuf,
    /// Fine-tuning epochs of each of the two runs.
    #[arg(long, default_value_t = 30, value_parser = super::parse_positive)]
    epochs: usize,
    /// Training images per class (6 classes).
    #[arg(long, default_value_t = 160, value_parser = super::parse_positive)]
    train_per_class: usize,
    /// Decoding and augmentation threads. Default: all cores.
    #[arg(long, value_parser = super::parse_positive)]
    workers: Option<usize>,
    /// Print one JSON object with every number instead of the walk-through.
    #[arg(long)]
    json: bool,
}

/// The bundled teacher: a 4-layer LLaMA of width 96 (3 heads, MLP 256), random weights, in the
/// Hugging Face layout (4 safetensors shards) and Meta's (params.json + consolidated.00.pth).
const TEACHER_HF: [(&str, &[u8]); 7] = [
    (
        "config.json",
        include_bytes!("../../fixtures/selection/llama_hf_safetensors/config.json"),
    ),
    (
        "generation_config.json",
        include_bytes!("../../fixtures/selection/llama_hf_safetensors/generation_config.json"),
    ),
    (
        "model.safetensors.index.json",
        include_bytes!(
            "../../fixtures/selection/llama_hf_safetensors/model.safetensors.index.json"
        ),
    ),
    (
        "model-00001-of-00004.safetensors",
        include_bytes!(
            "../../fixtures/selection/llama_hf_safetensors/model-00001-of-00004.safetensors"
        ),
    ),
    (
        "model-00002-of-00004.safetensors",
        include_bytes!(
            "../../fixtures/selection/llama_hf_safetensors/model-00002-of-00004.safetensors"
        ),
    ),
    (
        "model-00003-of-00004.safetensors",
        include_bytes!(
            "../../fixtures/selection/llama_hf_safetensors/model-00003-of-00004.safetensors"
        ),
    ),
    (
        "model-00004-of-00004.safetensors",
        include_bytes!(
            "../../fixtures/selection/llama_hf_safetensors/model-00004-of-00004.safetensors"
        ),
    ),
];
const TEACHER_META: [(&str, &[u8]); 2] = [
    (
        "params.json",
        include_bytes!("../../fixtures/selection/llama_meta_mp1/params.json"),
    ),
    (
        "consolidated.00.pth",
        include_bytes!("../../fixtures/selection/llama_meta_mp1/consolidated.00.pth"),
    ),
];

/// The file that marks a folder as the quickstart's: it is emptied and rewritten by the next
/// quickstart, and no other folder is.
const MARKER: &str = ".illama-tools-quickstart";
/// What the quickstart writes in its folder (and removes before writing again).
const PRODUCTS: [&str; 9] = [
    "teacher-hf",
    "teacher-meta",
    "data",
    "illama_ws_quickstart.safetensors",
    "illama_ws_quickstart_meta.safetensors",
    "illama_ws_quickstart.pth",
    "illama_ws_quickstart_roundtrip.safetensors",
    "run-selected",
    "run-random",
];

const SIZE: usize = 32;
const CLASSES: usize = 6;

fn student() -> IllamaConfig {
    IllamaConfig {
        mlp_hidden: 128,
        ..IllamaConfig::new(48, 2, 2)
    }
}

/// How to load the fine-tuned student (a custom width needs its head count given).
fn trained_model() -> LoadOptions {
    LoadOptions {
        config: Some(IllamaConfig {
            num_classes: CLASSES,
            img_size: SIZE,
            ..student()
        }),
        img_size: Some(SIZE),
        ..Default::default()
    }
}

fn prepare(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        if !dir.is_dir() {
            bail!("--output-dir {}: is not a folder", dir.display());
        }
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(MARKER).is_file() {
            bail!(
                "--output-dir {}: holds files the quickstart did not write; choose another folder",
                dir.display()
            );
        }
        for p in PRODUCTS {
            let path = dir.join(p);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path)?,
                Ok(_) => std::fs::remove_file(&path)?,
                Err(_) => {}
            }
        }
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(MARKER),
        "Written by `illama-tools quickstart`, which empties this folder when it runs again.\n",
    )?;
    Ok(())
}

fn write_teacher(dir: &Path, files: &[(&str, &[u8])]) -> anyhow::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let mut bytes = 0;
    for (name, data) in files {
        std::fs::write(dir.join(name), data)
            .with_context(|| dir.join(name).display().to_string())?;
        bytes += data.len() as u64;
    }
    Ok(bytes)
}

/// Prints the walk-through unless --json.
struct Say {
    quiet: bool,
    start: Instant,
}

impl Say {
    fn step(&self, n: usize, what: &str) {
        if !self.quiet {
            println!(
                "\n[{n}/7] {what}  ({:.1} s)",
                self.start.elapsed().as_secs_f64()
            );
        }
    }
    fn line(&self, s: impl AsRef<str>) {
        if !self.quiet {
            println!("      {}", s.as_ref());
        }
    }
}

/// Reports each epoch of a quickstart run in one line.
struct Epochs<'a> {
    say: &'a Say,
    label: &'a str,
    logs: Vec<EpochLog>,
}

impl Observer for Epochs<'_> {
    fn epoch_done(&mut self, log: &EpochLog, _written: &[PathBuf]) {
        self.say.line(format!(
            "{} epoch {:>2}: train loss {:.3}  val top-1 {:5.1}%",
            self.label,
            log.epoch,
            log.train_loss,
            log.test_acc1.unwrap_or(f64::NAN)
        ));
        self.logs.push(log.clone());
    }
}

impl FinetuneObserver for Epochs<'_> {
    fn prepared(&mut self, p: &Prepared) {
        if let Some(init) = &p.init {
            self.say.line(format!(
                "{}: {} parameters from the selected weights, {} at the random init",
                self.label,
                init.loaded.len(),
                init.random.len()
            ));
        }
    }
    fn as_run_observer(&mut self) -> &mut dyn Observer {
        self
    }
}

/// Accuracy of `model` on the images in `val`, as `verify` computes it.
fn evaluate_on(
    model: &illama_model::Illama,
    val: &Path,
    workers: usize,
) -> anyhow::Result<illama_train::EvalReport> {
    let ds = Dataset::image_folder(val)?;
    let batches = eval_batches(
        &ds,
        EvalTransform::new(SIZE)?,
        LoaderOptions {
            batch_size: 64,
            workers,
            skip_bad: false,
            limit: None,
            prefetch: 2,
        },
    )?;
    Ok(illama_train::evaluate(model, batches, SIZE, |_, _| {})?)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let say = Say {
        quiet: a.json,
        start: Instant::now(),
    };
    let out = &a.output_dir;
    let workers = a
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    prepare(out)?;
    if !a.json {
        println!(
            "illama-tools quickstart: the whole pipeline on bundled data, into {}",
            out.display()
        );
    }

    // 1. The teacher.
    say.step(
        1,
        "a LLaMA teacher (bundled: 4 layers, width 96, random weights)",
    );
    let hf = out.join("teacher-hf");
    let meta = out.join("teacher-meta");
    let bytes = write_teacher(&hf, &TEACHER_HF)? + write_teacher(&meta, &TEACHER_META)?;
    say.line(format!(
        "{} (Hugging Face layout, 4 shards) and {} (Meta layout): {bytes} bytes",
        hf.display(),
        meta.display()
    ));

    // 2. Weight selection, from both layouts.
    say.step(
        2,
        "select: iLLaMA weights (width 48, 2 blocks) from the teacher",
    );
    let config = student();
    let sel = |teacher: &Path, output: PathBuf| {
        select(
            &SelectOptions {
                teacher: teacher.display().to_string(),
                student: config,
                student_name: "custom".into(),
                layers: LayerSelection::Uniform,
                elements: ElementSelection::Uniform,
                dtype: None,
                format: TargetFormat::Safetensors,
                output: Some(output),
                force: true,
                hash_teacher: false,
            },
            &NoProgress,
        )
    };
    let t = Instant::now();
    let selected = sel(&hf, out.join("illama_ws_quickstart.safetensors"))?;
    let select_s = t.elapsed().as_secs_f64();
    let from_meta = sel(&meta, out.join("illama_ws_quickstart_meta.safetensors"))?;
    // The bundled Meta checkpoint stores the teacher in bf16, the Hugging Face one in f16: the
    // selections agree to the precision of those formats.
    let layout_diff = max_difference(&selected.output, &from_meta.output)?;
    let same = layout_diff <= 1e-3;
    say.line(format!(
        "{}: {} tensors from teacher layers {:?}, {} bytes, {:.3} s",
        selected.output.display(),
        selected.tensors.len(),
        selected.layers,
        selected.bytes,
        select_s
    ));
    say.line(format!(
        "from the Meta layout: {} (largest difference {layout_diff:.1e}: the teacher is bf16 there, f16 in the HF layout)",
        from_meta.output.display(),
    ));
    if !same {
        bail!("selection from the two layouts of one teacher differs");
    }

    // 3. convert to .pth and back.
    say.step(3, "convert: safetensors -> .pth -> safetensors, verified");
    let pth = out.join("illama_ws_quickstart.pth");
    let back = out.join("illama_ws_quickstart_roundtrip.safetensors");
    let to_pth = convert(
        &selected.output,
        &ConvertOptions {
            output: Some(pth.clone()),
            to: Some(TargetFormat::Pth),
            open: Default::default(),
            dtype: None,
            max_shard_size: None,
            verify: true,
            force: true,
            wrap: None,
        },
        &NoProgress,
    )?;
    let to_st = convert(
        &pth,
        &ConvertOptions {
            output: Some(back.clone()),
            to: Some(TargetFormat::Safetensors),
            open: Default::default(),
            dtype: None,
            max_shard_size: None,
            verify: true,
            force: true,
            wrap: None,
        },
        &NoProgress,
    )?;
    let round_trip = tensors_equal(&selected.output, &back)?;
    say.line(format!(
        "{} ({} tensors, verified: {}), back to {} (verified: {}; equal to the original: {round_trip})",
        pth.display(),
        to_pth.tensors,
        to_pth.verified,
        back.display(),
        to_st.verified
    ));
    if !round_trip {
        bail!("the .pth round trip changed the tensors");
    }

    // 4. Images.
    say.step(4, "data: a procedural image set (6 pattern classes, 32 px)");
    let data = out.join("data");
    let classes = write_pattern_set(
        &data,
        &PatternSet {
            classes: CLASSES,
            train_per_class: a.train_per_class,
            val_per_class: 24,
            size: 40,
            seed: 0,
        },
    )?;
    say.line(format!(
        "{}: {} training and {} validation images of {}",
        data.display(),
        a.train_per_class * CLASSES,
        24 * CLASSES,
        classes.join(", ")
    ));

    // 5. Fine-tuning, from the selected weights and from random ones, same budget and seed.
    say.step(
        5,
        &format!(
            "finetune: {} epochs from the selected weights, then the same from random weights",
            a.epochs
        ),
    );
    let recipe = |init: Option<PathBuf>, dir: &str| {
        let mut r = Recipe::new(data.join("train"), Some(data.join("val")), config);
        r.init = init;
        r.output_dir = out.join(dir);
        r.input_size = SIZE;
        r.epochs = a.epochs;
        r.batch_size = 32;
        r.lr = 2e-3;
        r.warmup_epochs = 1;
        // Crops and light mixing suit 32 px patterns; the recipe's RandAugment would erase them.
        (r.aa, r.reprob, r.mixup, r.cutmix) = ("none".into(), 0.0, 0.0, 0.0);
        r.workers = workers;
        r.resume = Resume::Never;
        r.save_ckpt_num = 1;
        r
    };
    let selected_recipe = recipe(Some(selected.output.clone()), "run-selected");
    let before = {
        // The starting point: selected weights in a fresh network, evaluated as they are.
        let (model, named) = illama_model::Illama::trainable(
            IllamaConfig {
                num_classes: CLASSES,
                img_size: SIZE,
                ..config
            },
            &Device::Cpu,
            0,
        )?;
        let vars = named.iter().cloned().collect();
        illama_model::init_from(&selected.output, None, &vars)?;
        evaluate_on(&model, &data.join("val"), workers)?
    };
    say.line(format!(
        "before fine-tuning: val top-1 {:.1}% (chance {:.1}%)",
        before.top1,
        100.0 / CLASSES as f64
    ));
    let t = Instant::now();
    let mut obs = Epochs {
        say: &say,
        label: "selected",
        logs: Vec::new(),
    };
    let run_selected = finetune(&selected_recipe, &Device::Cpu, &mut obs)?;
    let selected_logs = obs.logs;
    let train_s = t.elapsed().as_secs_f64();
    let images = a.train_per_class * CLASSES / 32 * 32 * a.epochs;
    let mut obs = Epochs {
        say: &say,
        label: "random  ",
        logs: Vec::new(),
    };
    let run_random = finetune(&recipe(None, "run-random"), &Device::Cpu, &mut obs)?;
    let random_logs = obs.logs;
    let final_of = |logs: &[EpochLog]| logs.last().and_then(|l| l.test_acc1).unwrap_or(0.0);
    let (sel_acc, rnd_acc) = (final_of(&selected_logs), final_of(&random_logs));
    say.line(format!(
        "after {} epochs: from selected weights {:.1}% (best {:.1}%), from random weights {:.1}% (best {:.1}%); {:.0} training images/s",
        a.epochs,
        sel_acc,
        run_selected.best_acc1.unwrap_or(0.0),
        rnd_acc,
        run_random.best_acc1.unwrap_or(0.0),
        images as f64 / train_s
    ));
    say.line(if sel_acc > rnd_acc {
        "here the selected weights did better on the same budget (one seed, one small task)"
            .to_string()
    } else {
        "random weights did as well or better here: the bundled teacher is a random LLaMA, so its \
         selected weights carry no learned structure; LLaMA2-7B's do"
            .to_string()
    });

    // 6. verify.
    say.step(6, "verify: the best checkpoint on the validation images");
    let best = out.join("run-selected").join("checkpoint-best.pth");
    let (model, _) = load(&best, &trained_model())?;
    let verified = evaluate_on(&model, &data.join("val"), workers)?;
    say.line(format!(
        "{}: top-1 {:.2}%  top-5 {:.2}%  loss {:.4}  ({} images, {:.0} images/s)",
        best.display(),
        verified.top1,
        verified.top5,
        verified.loss,
        verified.images,
        verified.images_per_second
    ));

    // 7. predict.
    say.step(7, "predict: one validation image");
    let image = data.join("val").join(&classes[4]).join("0000.png");
    let img = read_image(&image)?;
    let x = Tensor::from_vec(
        EvalTransform::new(SIZE)?.apply(&img)?,
        (1, 3, SIZE, SIZE),
        &Device::Cpu,
    )?;
    let logits: Vec<f32> = model.forward(&x)?.flatten_all()?.to_vec1()?;
    let probs = softmax(&logits);
    let top: Vec<(String, f32)> = top_k(&probs, 3)
        .into_iter()
        .map(|c| (classes[c].clone(), probs[c]))
        .collect();
    say.line(format!(
        "{} (a {} image): {}",
        image.display(),
        classes[4],
        top.iter()
            .map(|(c, p)| format!("{c} {:.1}%", p * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let seconds = say.start.elapsed().as_secs_f64();
    if a.json {
        let report = serde_json::json!({
            "output_dir": out,
            "seconds": seconds,
            "select": {"output": selected.output, "layers": selected.layers, "seconds": select_s, "meta_layout_identical": same, "meta_layout_max_difference": layout_diff},
            "convert": {"pth": pth, "round_trip": back, "identical": round_trip},
            "data": {"classes": classes, "train_per_class": a.train_per_class, "val_per_class": 24},
            "accuracy_before": before.top1,
            "finetune": {
                "epochs": a.epochs,
                "selected_final_acc1": sel_acc,
                "selected_best_acc1": run_selected.best_acc1,
                "random_final_acc1": rnd_acc,
                "random_best_acc1": run_random.best_acc1,
                "train_images_per_second": images as f64 / train_s,
                "log_selected": selected_logs,
                "log_random": random_logs,
            },
            "verify": {"checkpoint": best, "top1": verified.top1, "top5": verified.top5, "loss": verified.loss},
            "predict": {"image": image, "top": top},
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("\nDone in {seconds:.1} s. Written under {}:", out.display());
    for p in PRODUCTS {
        println!("  {}", out.join(p).display());
    }
    println!(
        "\nOn real data (LLaMA2-7B from the Hugging Face cache or a Meta download; ImageNet with train/ and val/):\n  \
         illama-tools select --from llama2-7b --to tiny\n  \
         illama-tools finetune --data ~/imagenet --init illama_ws_tiny.safetensors --output-dir runs/tiny \\\n      \
         --epochs 300 --warmup-epochs 5 --mixup 0.1 --cutmix 0.1 --batch-size 128 --update-freq 32 \\\n      \
         --mask-mode soft --mask-schedule constant --cutoff-soft 50\n  \
         illama-tools verify --imagenet ~/imagenet/val --weights runs/tiny/checkpoint-best.pth\n  \
         illama-tools predict photo.jpg --weights runs/tiny/checkpoint-best.pth"
    );
    Ok(())
}

/// The largest absolute difference between same-named tensors of two checkpoints (as f32);
/// infinite when their names or shapes differ.
fn max_difference(a: &Path, b: &Path) -> anyhow::Result<f32> {
    let (x, _) = illama_model::read_tensors(a, None)?;
    let (y, _) = illama_model::read_tensors(b, None)?;
    if x.len() != y.len() {
        return Ok(f32::INFINITY);
    }
    let mut max = 0f32;
    for (name, t) in &x {
        let Some(u) = y.get(name).filter(|u| u.dims() == t.dims()) else {
            return Ok(f32::INFINITY);
        };
        let d = (t.to_dtype(candle_core::DType::F32)? - u.to_dtype(candle_core::DType::F32)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        max = max.max(d);
    }
    Ok(max)
}

/// Whether two checkpoints hold the same tensors (names, dtypes, shapes, bytes).
fn tensors_equal(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let (x, y) = (
        illama_formats::TensorStore::open(a)?,
        illama_formats::TensorStore::open(b)?,
    );
    if x.tensors().len() != y.tensors().len() {
        return Ok(false);
    }
    for t in x.tensors() {
        let Some(u) = y.get(&t.name) else {
            return Ok(false);
        };
        if t.dtype != u.dtype || t.shape != u.shape || x.bytes(t)? != y.bytes(u)? {
            return Ok(false);
        }
    }
    Ok(true)
}
