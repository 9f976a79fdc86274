//! Throughput of the training input pipeline: the recipe's train transform (RandomResizedCrop
//! 224 bicubic, flip, rand-m9-mstd0.5-inc1, normalize, RandomErasing 0.25 pixel) and Mixup/CutMix
//! (0.8 / 1.0) through the loader, at 1 and 2 workers (and more with `ILLAMA_BENCH_WORKERS`), on a
//! folder of photo-sized JPEGs; then a single-threaded profile of the stages. Compare with
//! `python3 benches/timm_train_loader.py DIR WORKERS` on the same folder (docs/benchmarks.md).
//!
//! python3 benches/make_val_images.py bench-data/train-jpegs 512
//! ILLAMA_BENCH_TRAIN_DIR=bench-data/train-jpegs cargo bench --bench train_loader

use illama_data::augment::rand_augment::RAND_INCREASING_TRANSFORMS;
use illama_data::augment::Resample;
use illama_data::mix::Mixup;
use illama_data::train::{hflip, normalize_into, TrainTransform};
use illama_data::{
    load_batches, read_image_with, Dataset, EpochSampler, ImageTransform, LoaderOptions, Plan,
};
use rand::Rng;
use rand::SeedableRng;
use std::path::Path;
use std::time::Instant;

mod common;
use common::median;

fn main() {
    let Some(dir) = std::env::var_os("ILLAMA_BENCH_TRAIN_DIR") else {
        println!(
            "set ILLAMA_BENCH_TRAIN_DIR (python3 benches/make_val_images.py DIR 512 makes one)"
        );
        return;
    };
    let ds = Dataset::image_folder(Path::new(&dir)).expect("dataset");
    let workers: Vec<usize> = std::env::var("ILLAMA_BENCH_WORKERS")
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|_| vec![1, 2]);
    let batch = 64;
    let sampler = EpochSampler::new(ds.samples.len(), batch, 0).expect("sampler");
    let transform = TrainTransform::recipe(224).expect("transform");
    for &w in &workers {
        // One warm-up epoch, then the median rate of three.
        let mut rates = Vec::new();
        for epoch in 0..4 {
            let mixup = Mixup::new(0.8, 1.0, 1.0, 0.5, 0.1, ds.classes.len()).unwrap();
            let opts = LoaderOptions {
                batch_size: batch,
                workers: w,
                skip_bad: false,
                limit: None,
                prefetch: 4,
            };
            let start = Instant::now();
            let rx = load_batches(
                &ds,
                Plan::epoch(&sampler, epoch),
                transform.clone(),
                Some(mixup),
                opts,
            )
            .expect("loader");
            let n: usize = rx.iter().map(|b| b.expect("batch").labels.len()).sum();
            if epoch > 0 {
                rates.push(n as f64 / start.elapsed().as_secs_f64());
            }
        }
        let rate = median(rates);
        println!(
            "train loader: workers {w}, {:.1} images/s ({:.1} per worker)",
            rate,
            rate / w as f64
        );
    }
    profile(&ds, &transform);
}

/// One thread, each stage timed on its own over the dataset's images.
fn profile(ds: &Dataset, t: &TrainTransform) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let (mut decode, mut crop, mut flip, mut ra, mut norm, mut erase) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let s = t.size();
    let mut out = vec![0f32; 3 * s * s];
    let n = ds.samples.len().min(256);
    for sample in &ds.samples[..n] {
        let t0 = Instant::now();
        let img = read_image_with(&sample.path, t.decoder()).expect("image");
        let t1 = Instant::now();
        let mut px = t.crop.apply(&img, &mut rng).expect("crop");
        let t2 = Instant::now();
        if rng.random::<f64>() < t.hflip {
            hflip(&mut px);
        }
        let t3 = Instant::now();
        if let Some(r) = &t.rand_augment {
            r.apply(&mut px, &mut rng);
        }
        let t4 = Instant::now();
        normalize_into(&px, false, &mut out).unwrap();
        let t5 = Instant::now();
        t.erasing.apply(&mut out, 3, s, s, &mut rng).unwrap();
        let t6 = Instant::now();
        decode += (t1 - t0).as_secs_f64();
        crop += (t2 - t1).as_secs_f64();
        flip += (t3 - t2).as_secs_f64();
        ra += (t4 - t3).as_secs_f64();
        norm += (t5 - t4).as_secs_f64();
        erase += (t6 - t5).as_secs_f64();
    }
    let mut images = vec![0f32; 64 * 3 * s * s];
    let labels: Vec<i64> = (0..64).map(|i| i % ds.classes.len() as i64).collect();
    let mixup = Mixup::new(0.8, 1.0, 1.0, 0.5, 0.1, ds.classes.len()).unwrap();
    let t0 = Instant::now();
    for _ in 0..8 {
        mixup.mix(&mut images, &labels, s, s, &mut rng).unwrap();
    }
    let mix_per_image = t0.elapsed().as_secs_f64() / (8.0 * 64.0);
    let total = decode + crop + flip + ra + norm + erase + mix_per_image * n as f64;
    println!("profile (one thread, {n} images, ms per image):");
    for (name, secs) in [
        ("decode", decode),
        ("crop+resize", crop),
        ("flip", flip),
        ("randaugment", ra),
        ("normalize", norm),
        ("erasing", erase),
        ("mixup/cutmix", mix_per_image * n as f64),
    ] {
        println!(
            "  {name:<13} {:>7.3} ms  {:>5.1}%",
            secs * 1e3 / n as f64,
            100.0 * secs / total
        );
    }
    println!("  total         {:>7.3} ms", total * 1e3 / n as f64);

    // Each RandAugment op at magnitude 9 on a 224 x 224 crop (an op is applied to about one image
    // in 7.5: two draws among 15, each applied with p 0.5).
    let img = read_image_with(&ds.samples[0].path, t.decoder()).expect("image");
    let crop = t.crop.apply(&img, &mut rng).expect("crop");
    let mut scratch = Vec::new();
    println!("RandAugment ops at magnitude 9, 224 x 224, ms per application:");
    for op in RAND_INCREASING_TRANSFORMS {
        let tr = op.to_transform(9.0, false, 0.45);
        let reps = 200;
        let t0 = Instant::now();
        for _ in 0..reps {
            let mut px = crop.clone();
            tr.apply(&mut px, [124, 116, 104], Resample::Bicubic, &mut scratch);
            std::hint::black_box(&px);
        }
        println!(
            "  {:<22} {:>7.3}",
            op.as_str(),
            t0.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
    }
}
