#![no_main]
//! Arbitrary bytes written to a file and opened end to end with `TensorStore::open`
//! (format detection, zip / legacy torch / safetensors readers), then every tensor's bytes read.
//!
//! The heap may grow by at most 320 MiB plus 256 bytes per input byte, checked by a counting
//! allocator: the pickle tree's 64 MiB budget, the JSON copies of non-tensor values (at most
//! about twice the tree), the 64 MiB of dotted names, and views that repeat elements up to 64 MiB
//! (docs/safety.md); the per-byte term is the pickle VM's arena.

use illama_formats::TensorStore;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

mod alloc_bound;

#[global_allocator]
static A: alloc_bound::Counting = alloc_bound::Counting;

fn scratch_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    // A fixed per-process path; the `.bin` extension keeps `open` off its index-json branch.
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!(
            "illama-fuzz-checkpoint-{}.bin",
            std::process::id()
        ))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch_path();
    if std::fs::write(path, data).is_err() {
        return;
    }
    alloc_bound::check(data.len(), 320 << 20, 256, || {
        if let Ok(store) = TensorStore::open(path) {
            for t in store.tensors() {
                let _ = store.bytes(t);
            }
        }
    });
});
