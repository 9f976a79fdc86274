#![no_main]
//! Arbitrary bytes (a whole file) into the safetensors header parser.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = illama_formats::st::parse_header(data);
});
