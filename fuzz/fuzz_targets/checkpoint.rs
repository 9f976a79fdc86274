#![no_main]
//! Arbitrary bytes written to a file and opened end to end with `TensorStore::open`
//! (format detection, zip / legacy torch / safetensors readers), then every tensor's bytes read.

use illama_formats::TensorStore;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn scratch_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    // A fixed per-process path; the `.bin` extension keeps `open` off its index-json branch.
    PATH.get_or_init(|| {
        PathBuf::from(format!(
            "/tmp/illama-fuzz-checkpoint-{}.bin",
            std::process::id()
        ))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch_path();
    if std::fs::write(path, data).is_err() {
        return;
    }
    if let Ok(store) = TensorStore::open(path) {
        for t in store.tensors() {
            let _ = store.bytes(t);
        }
    }
});
