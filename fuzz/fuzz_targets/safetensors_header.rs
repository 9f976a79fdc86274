#![no_main]
//! Arbitrary bytes (a whole file) into the safetensors header parser.

//! The heap may grow by at most 64 MiB plus 64 bytes per input byte (counting allocator).

use libfuzzer_sys::fuzz_target;

mod alloc_bound;

#[global_allocator]
static A: alloc_bound::Counting = alloc_bound::Counting;

fuzz_target!(|data: &[u8]| {
    alloc_bound::check(data.len(), 64 << 20, 64, || {
        let _ = illama_formats::st::parse_header(data);
    });
});
