#![no_main]
//! Arbitrary bytes into the strict pickle reader: it must return Ok or Err, never panic,
//! loop forever or allocate what the input merely claims.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = illama_formats::pickle::parse(data);
});
