#![no_main]
//! Arbitrary bytes written to a file and opened with `GgufFile::open` (header, metadata and
//! tensor records), then the first row of every tensor read and dequantised.
//!
//! The heap may grow by at most 64 MiB plus 128 bytes per input byte: every metadata value or
//! tensor record is at most ~100 bytes of ours per byte of input it consumed (doubled by `Vec`
//! growth), and a dequantised row is at most 20 f32 bytes per stored byte.

use illama_formats::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

mod alloc_bound;

#[global_allocator]
static A: alloc_bound::Counting = alloc_bound::Counting;

fn scratch_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("illama-fuzz-gguf-{}.gguf", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch_path();
    if std::fs::write(path, data).is_err() {
        return;
    }
    alloc_bound::check(data.len(), 64 << 20, 128, || {
        if let Ok(file) = GgufFile::open(path) {
            let (mut raw, mut row) = (Vec::new(), Vec::new());
            for t in &file.tensors {
                if t.rows() == 0 || t.row_len() == 0 || !t.ggml_type.dequantizable() {
                    continue;
                }
                row.resize(t.row_len(), 0.0);
                let _ = file.read_row_f32(t, 0, &mut raw, &mut row);
            }
        }
    });
});
