//! Helpers shared by the train crate's tests: golden files and tensor comparison.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use std::collections::HashMap;

/// The tensors of `fixtures/train/<name>`.
pub fn golden(name: &str) -> HashMap<String, Tensor> {
    let path = format!("{}/../../fixtures/train/{name}", env!("CARGO_MANIFEST_DIR"));
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap()
}

/// max |a - b| over all elements.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
