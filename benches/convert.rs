//! `cargo bench --bench convert`: `convert` of a checkpoint against a plain copy of the same bytes.
//!
//! Needs an input on disk: set `ILLAMA_BENCH_CONVERT_INPUT` to a checkpoint file or a shard
//! directory, e.g. the random LLaMA2-7B-shaped teacher (safetensors -> .pth) or its `.pth`
//! conversion (-> safetensors):
//!
//! ```sh
//! cargo run --release -p illama-select --example gen_llama_teacher -- bench-data/llama2-7b-random
//! ILLAMA_BENCH_CONVERT_INPUT=bench-data/llama2-7b-random cargo bench --bench convert
//! ```
//!
//! Each run converts the input into a temporary directory (`$TMPDIR`, so put it on the same disk
//! as the input: `TMPDIR=bench-data`), deletes the output, then copies every input file
//! with `std::fs::copy` (what `cp` does: `copy_file_range`) and deletes the copy. One untimed
//! warm-up pair (`ILLAMA_BENCH_WARMUP=0` skips it), then `ILLAMA_BENCH_RUNS` (default 3) timed
//! pairs; medians and the ratio convert/copy are printed. `ILLAMA_BENCH_CONVERT_TO=pth|safetensors`
//! forces the output format (default: the other format than the input's).

use illama_formats::convert::{convert, ConvertOptions};
use illama_formats::{NoProgress, TargetFormat};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod common;
use common::median;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The files `cp -r` would copy: the input file, or every regular file of the directory.
fn input_files(input: &Path) -> Vec<PathBuf> {
    if input.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(input)
            .expect("readable input directory")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files
    } else {
        vec![input.to_path_buf()]
    }
}

fn time_convert(input: &Path, opts: &ConvertOptions) -> f64 {
    let t0 = Instant::now();
    let report = convert(input, opts, &NoProgress).unwrap_or_else(|e| {
        eprintln!("convert {} failed: {e}", input.display());
        std::process::exit(1);
    });
    let secs = t0.elapsed().as_secs_f64();
    remove(&report.output);
    secs
}

fn time_copy(files: &[PathBuf], dir: &Path) -> f64 {
    let dest = dir.join("copy");
    std::fs::create_dir_all(&dest).expect("copy directory");
    let t0 = Instant::now();
    for f in files {
        std::fs::copy(f, dest.join(f.file_name().unwrap())).unwrap_or_else(|e| {
            eprintln!("copy {} failed: {e}", f.display());
            std::process::exit(1);
        });
    }
    let secs = t0.elapsed().as_secs_f64();
    remove(&dest);
    secs
}

fn remove(p: &Path) {
    let _ = if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    };
}

fn main() {
    let Some(input) = std::env::var_os("ILLAMA_BENCH_CONVERT_INPUT") else {
        println!("convert bench: ILLAMA_BENCH_CONVERT_INPUT is not set; nothing to measure.");
        println!(
            "Generate a random LLaMA2-7B-shaped teacher (13.5 GB of safetensors) and convert it:"
        );
        println!("  cargo run --release -p illama-select --example gen_llama_teacher -- bench-data/llama2-7b-random");
        println!("  TMPDIR=bench-data ILLAMA_BENCH_CONVERT_INPUT=bench-data/llama2-7b-random cargo bench --bench convert");
        println!(
            "See docs/benchmarks.md (and benches/run.sh for wall time and peak RSS per process)."
        );
        return;
    };
    let input = PathBuf::from(input);
    let runs = env_usize("ILLAMA_BENCH_RUNS", 3).max(1);
    let warmup = env_usize("ILLAMA_BENCH_WARMUP", 1);
    let to = match std::env::var("ILLAMA_BENCH_CONVERT_TO").ok().as_deref() {
        None | Some("") => None,
        Some("pth") => Some(TargetFormat::Pth),
        Some("safetensors") => Some(TargetFormat::Safetensors),
        Some(x) => {
            eprintln!("ILLAMA_BENCH_CONVERT_TO={x}: expected pth or safetensors");
            std::process::exit(2);
        }
    };
    let files = input_files(&input);
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let opts = ConvertOptions {
        output: Some(dir.path().join("converted")),
        to,
        force: true,
        ..ConvertOptions::default()
    };

    println!(
        "convert bench: {} ({} file(s), {:.2} GB), output in {}, {warmup} warm-up pair(s), {runs} timed pair(s)",
        input.display(),
        files.len(),
        bytes as f64 / 1e9,
        dir.path().display()
    );
    for _ in 0..warmup {
        time_convert(&input, &opts);
        time_copy(&files, dir.path());
    }
    let (mut conv, mut copy) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let c = time_convert(&input, &opts);
        let p = time_copy(&files, dir.path());
        println!("run {}: convert {c:.3} s, copy {p:.3} s", i + 1);
        conv.push(c);
        copy.push(p);
    }
    let (c, p) = (median(conv), median(copy));
    println!(
        "median: convert {c:.3} s ({:.0} MB/s), copy {p:.3} s ({:.0} MB/s), convert/copy = {:.2}",
        bytes as f64 / 1e6 / c,
        bytes as f64 / 1e6 / p,
        c / p
    );
}
