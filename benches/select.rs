//! `cargo bench --bench select`: weight selection from a full-size teacher into the iLLaMA presets.
//!
//! Needs a teacher on disk (nothing is downloaded): set `ILLAMA_BENCH_TEACHER` to a Hugging Face
//! LLaMA directory, e.g. the random LLaMA2-7B-shaped one written by
//!
//! ```sh
//! cargo run --release -p illama-select --example gen_llama_teacher -- bench-data/llama2-7b-random
//! ILLAMA_BENCH_TEACHER=bench-data/llama2-7b-random cargo bench --bench select
//! ```
//!
//! Options are the CLI's defaults (first layers, uniform elements, the teacher's dtype,
//! safetensors), output into a temporary directory. Per student: one warm-up run (which also
//! brings the teacher's pages into the page cache), then `ILLAMA_BENCH_RUNS` (default 3) timed
//! runs; the median is printed. `ILLAMA_BENCH_STUDENTS` (default `tiny,small,base`) picks the
//! presets. Peak memory is measured by `benches/run.sh` (one process per run), not here.

use illama_arch::Preset;
use illama_formats::NoProgress;
use illama_select::{
    select, ElementSelection, LayerSelection, SelectError, SelectOptions, TargetFormat,
};
use std::time::Instant;

mod common;
use common::median;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, with no teacher set.
    let Some(teacher) = std::env::var_os("ILLAMA_BENCH_TEACHER") else {
        println!("select bench: ILLAMA_BENCH_TEACHER is not set; nothing to measure.");
        println!(
            "Generate a random LLaMA2-7B-shaped teacher (13.5 GB) and point the variable at it:"
        );
        println!("  cargo run --release -p illama-select --example gen_llama_teacher -- bench-data/llama2-7b-random");
        println!("  ILLAMA_BENCH_TEACHER=bench-data/llama2-7b-random cargo bench --bench select");
        println!(
            "See docs/benchmarks.md (and benches/run.sh for wall time and peak RSS per process)."
        );
        return;
    };
    let teacher = teacher.to_string_lossy().into_owned();
    let runs: usize = std::env::var("ILLAMA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3);
    let students = std::env::var("ILLAMA_BENCH_STUDENTS").unwrap_or("tiny,small,base".into());
    let dir = tempfile::tempdir().expect("a temporary directory");

    println!("select bench: teacher {teacher}, {runs} timed run(s) after one warm-up");
    println!(
        "{:<8} {:>12} {:>10} {:>10} {:>10}  runs (s)",
        "student", "output MB", "median s", "min s", "max s"
    );
    for name in students.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(preset) = Preset::parse(name) else {
            eprintln!("unknown student preset '{name}'");
            std::process::exit(2);
        };
        let output = dir
            .path()
            .join(format!("illama_ws_{}.safetensors", preset.name()));
        let opts = SelectOptions {
            teacher: teacher.clone(),
            student: preset.config(),
            student_name: preset.name().into(),
            layers: LayerSelection::First,
            elements: ElementSelection::Uniform,
            dtype: None,
            format: TargetFormat::Safetensors,
            output: Some(output.clone()),
            force: true,
            hash_teacher: false,
        };
        // Warm-up.
        let report = match select(&opts, &NoProgress) {
            Ok(r) => r,
            Err(e @ SelectError::Student(_)) => {
                println!("{:<8} skipped: {e}", preset.name());
                continue;
            }
            Err(e) => {
                eprintln!("select {} failed: {e}", preset.name());
                std::process::exit(1);
            }
        };
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t0 = Instant::now();
            let r = select(&opts, &NoProgress).unwrap_or_else(|e| {
                eprintln!("select {} failed: {e}", preset.name());
                std::process::exit(1);
            });
            times.push(t0.elapsed().as_secs_f64());
            assert_eq!(r.bytes, report.bytes);
        }
        let list: Vec<String> = times.iter().map(|t| format!("{t:.3}")).collect();
        let (min, max) = times
            .iter()
            .fold((f64::MAX, 0f64), |(a, b), &t| (a.min(t), b.max(t)));
        println!(
            "{:<8} {:>12.1} {:>10.3} {:>10.3} {:>10.3}  {}",
            preset.name(),
            report.bytes as f64 / 1e6,
            median(times),
            min,
            max,
            list.join(" ")
        );
        let _ = std::fs::remove_file(&output);
    }
}
