//! Peak heap use of reading and preprocessing hostile images, measured by a counting global
//! allocator. One test only: the counter is process-wide, so nothing may run beside it.

use illama_data::decode::read_image;
use illama_data::transform::EvalTransform;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::SeqCst)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::SeqCst);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Peak bytes allocated by `f` above what was live before it.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst) - base)
}

const MB: usize = 1 << 20;

#[test]
fn extreme_aspect_ratios_and_large_non_images_stay_small() {
    let d = tempfile::tempdir().unwrap();
    // 1 x 89000 and 89000 x 1: a few hundred bytes of PNG whose resized-before-crop image
    // would be 256 x 22,784,000 (17 GB of RGB); 842 MB were allocated before the fix.
    // (1 x 30000 at 384 only, to keep the unoptimised test quick: the warp reads every row.)
    for (w, h, sizes) in [
        (1u32, 89_000u32, &[224usize][..]),
        (89_000, 1, &[224, 384][..]),
        (1, 30_000, &[384][..]),
    ] {
        let p = d.path().join(format!("{w}x{h}.png"));
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([((x + y) / 1000) as u8, 7, 200]))
            .save_with_format(&p, image::ImageFormat::Png)
            .unwrap();
        for &size in sizes {
            let t = EvalTransform::new(size).unwrap();
            let (out, peak) = peak_of(|| t.apply(&read_image(&p).unwrap()).unwrap());
            assert_eq!(out.len(), 3 * size * size);
            eprintln!("{w}x{h} at {size}: peak {:.1} MB", peak as f64 / MB as f64);
            assert!(peak < 16 * MB, "{w}x{h} at {size}: peak {peak} bytes");
        }
    }
    // A 32 MiB file that is not an image: refused from its first bytes, not read whole.
    let p = d.path().join("big.JPEG");
    std::fs::write(&p, vec![b'x'; 32 * MB]).unwrap();
    let (r, peak) = peak_of(|| read_image(&p));
    assert!(r.unwrap_err().to_string().contains("not an image"));
    assert!(peak < MB, "non-image: peak {peak} bytes");
}
