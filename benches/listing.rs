//! Listing an ImageNet-sized train folder: time and memory of `Dataset::image_folder` on a tree
//! of 1000 class folders holding 1,281 files each (1.28M files; the files may be empty, only
//! names are read). Make the tree with `python3 benches/make_empty_imagenet.py DIR`, then
//!
//! ILLAMA_BENCH_TRAIN_DIR=DIR cargo bench --bench listing
//!
//! Prints the median wall time over `ILLAMA_BENCH_RUNS` (default 3) listings after one warm-up
//! (page cache warm), and the process's peak RSS, which is what the listing holds.

use illama_data::Dataset;
use std::time::Instant;

mod common;
use common::median;

fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_maxrss as f64 / 1024.0
}

fn main() {
    let Some(dir) = std::env::var_os("ILLAMA_BENCH_TRAIN_DIR") else {
        println!("set ILLAMA_BENCH_TRAIN_DIR to a train folder (python3 benches/make_empty_imagenet.py DIR makes one)");
        return;
    };
    let runs: usize = std::env::var("ILLAMA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let rss_before = peak_rss_mib();
    let warm = Dataset::image_folder(std::path::Path::new(&dir)).expect("listing");
    let (n, classes) = (warm.samples.len(), warm.classes.len());
    let rss_one = peak_rss_mib();
    drop(warm);
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let ds = Dataset::image_folder(std::path::Path::new(&dir)).expect("listing");
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(ds.samples.len(), n);
    }
    println!(
        "listing: {n} images in {classes} classes, median {:.2} s over {runs} runs ({:?}), threads {}",
        median(times.clone()),
        times.iter().map(|t| format!("{t:.2}")).collect::<Vec<_>>(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "peak RSS {:.0} MiB ({:.0} MiB before listing; {:.0} bytes per image)",
        rss_one,
        rss_before,
        (rss_one - rss_before) * 1048576.0 / n as f64
    );
}
