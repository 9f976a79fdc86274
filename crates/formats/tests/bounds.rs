//! Memory bounds, measured in-process: the hostile fixtures (fixtures/hostile, written by
//! fixtures/gen/make_hostile.py) that would take gigabytes if read naively are refused, or
//! streamed, while this test binary's heap stays under a fixed ceiling.
//!
//! A counting global allocator records the peak of live heap bytes; everything runs in one test
//! so that no other test shares the allocator while a case is measured.

use illama_formats::TensorStore;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

const MIB: usize = 1 << 20;

/// Runs `f`, returning its result and the peak heap it added above what was live before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = f();
    (r, PEAK.load(Ordering::Relaxed) - base)
}

fn hostile(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/hostile")
        .join(name)
}

/// Opens a file and reads every tensor whole (`bytes`); the first error's message.
fn read_all(name: &str) -> String {
    let path = hostile(name);
    let r = TensorStore::open(&path).and_then(|s| {
        for t in s.tensors() {
            s.bytes(t)?;
        }
        Ok(())
    });
    match r {
        Ok(()) => panic!("{name} was read without error"),
        Err(e) => e.to_string(),
    }
}

/// A writer that only counts.
struct Count(u64);
impl std::io::Write for Count {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn hostile_files_cost_bounded_memory() {
    // (file, error substring, heap ceiling): the tree budget is 64 MiB, so memo reuse may cost
    // that plus the arena; everything else must stay small.
    let cases = [
        (
            "memo_reuse_1000.pth",
            "the pickle expands to more than 64 MiB through shared references",
            160 * MIB,
        ),
        (
            "memo_reuse_100k.pth",
            "the pickle expands to more than 64 MiB through shared references",
            160 * MIB,
        ),
        ("stride0_16384x32768.pth", "repeats elements", 8 * MIB),
        ("stride0_2p20x2p20.pth", "repeats elements", 8 * MIB),
        ("deflate_bomb.pth", "more than the 256 MiB allowed", 8 * MIB),
        ("long_text_2mb.pth", "is not a 64-bit integer", 16 * MIB),
    ];
    for (name, want, ceiling) in cases {
        let (err, peak) = peak_during(|| read_all(name));
        assert!(err.contains(want), "{name}: '{err}' lacks '{want}'");
        assert!(err.len() < 1024, "{name}: a {}-byte message", err.len());
        assert!(
            peak < ceiling,
            "{name}: peak heap {} MiB, ceiling {} MiB",
            peak / MIB,
            ceiling / MIB
        );
        eprintln!("{name}: peak heap {:.1} MiB", peak as f64 / MIB as f64);
    }

    // The compressed storage that `bytes` refuses to inflate whole streams through copy_to's
    // fixed buffer: all 257 MiB arrive, the heap stays near one chunk.
    let store = TensorStore::open(hostile("deflate_bomb.pth")).unwrap();
    let t = &store.tensors()[0];
    let mut out = Count(0);
    let (r, peak) =
        peak_during(|| store.copy_to(t, &mut out, std::path::Path::new("sink"), &|_| {}));
    r.unwrap();
    assert_eq!(out.0, 257 << 20);
    assert!(
        peak < 24 * MIB,
        "copy_to of a compressed tensor: peak {peak}"
    );
}
