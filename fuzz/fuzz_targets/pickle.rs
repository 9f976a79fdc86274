#![no_main]
//! Arbitrary bytes into the strict pickle reader: it must return Ok or Err, never panic,
//! loop forever or allocate what the input merely claims.

//!
//! The heap may grow by at most 64 MiB plus 256 bytes per input byte (the VM's arena holds at most
//! three 56-byte values, one stack slot or one memo entry per opcode byte, doubled by `Vec`
//! growth), checked by a counting allocator.

use libfuzzer_sys::fuzz_target;

mod alloc_bound;

#[global_allocator]
static A: alloc_bound::Counting = alloc_bound::Counting;

fuzz_target!(|data: &[u8]| {
    alloc_bound::check(data.len(), 64 << 20, 256, || {
        let _ = illama_formats::pickle::parse(data);
    });
});
