//! Training checkpoints: everything a run needs to continue exactly where it stopped (weights,
//! EMA weights, AdamW moments and per-parameter step counts, the trainer's position and
//! arguments) in one safetensors file, written through the project's output policy (atomic, never
//! over an input). This is where the trainer reads and writes tensors.
//!
//! Layout: tensors `model.<name>`, `ema.<name>`, `optim.exp_avg.<name>`,
//! `optim.exp_avg_sq.<name>` (f32); metadata `trainer.state` (JSON of [`TrainerState`]) and
//! `optim.steps` (JSON: name -> steps).

use crate::optim::AdamW;
use candle_core::{DType, Device, Tensor, Var};
use illama_formats::torch::PthLayout;
use illama_formats::{write_file, TargetFormat};
use illama_formats::{AtomicFile, DType as FileDType, OutTensor, OutputPolicy, TensorStore};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Format(#[from] illama_formats::FormatError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {why}")]
    Invalid { path: String, why: String },
}

/// Where a run stands: the next epoch and optimiser step to run, the seed, and the arguments it
/// was started with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub epoch: u64,
    pub step: u64,
    pub seed: u64,
    pub args: serde_json::Value,
    /// Best validation top-1 so far (for `checkpoint-best` across a resume).
    #[serde(default)]
    pub best_acc1: Option<f64>,
    /// Best validation top-1 of the EMA weights, when they are evaluated.
    #[serde(default)]
    pub best_acc1_ema: Option<f64>,
}

fn f32_bytes(t: &Tensor) -> candle_core::Result<Vec<u8>> {
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

fn out(name: String, t: &Tensor) -> candle_core::Result<OutTensor<'static>> {
    Ok(OutTensor::from_bytes(
        name,
        FileDType::F32,
        t.dims().to_vec(),
        f32_bytes(t)?,
    ))
}

/// Writes a checkpoint of `opt` (its parameters and moments), the EMA weights if any, and
/// `state` to `path`, atomically, as `policy` allows.
pub fn save(
    path: &Path,
    policy: &OutputPolicy,
    opt: &AdamW,
    ema: Option<&[(String, Var)]>,
    state: &TrainerState,
) -> Result<(), CheckpointError> {
    let mut tensors = Vec::new();
    let mut steps = BTreeMap::new();
    for p in &opt.params {
        tensors.push(out(format!("model.{}", p.name), p.var.as_tensor())?);
        tensors.push(out(format!("optim.exp_avg.{}", p.name), &p.exp_avg)?);
        tensors.push(out(format!("optim.exp_avg_sq.{}", p.name), &p.exp_avg_sq)?);
        steps.insert(p.name.clone(), p.step);
    }
    for (name, v) in ema.unwrap_or(&[]) {
        tensors.push(out(format!("ema.{name}"), v.as_tensor())?);
    }
    let metadata: BTreeMap<String, String> = [
        (
            "trainer.state".to_string(),
            serde_json::to_string(state).expect("state serialises"),
        ),
        (
            "optim.steps".to_string(),
            serde_json::to_string(&steps).expect("steps serialise"),
        ),
    ]
    .into();
    let mut file = AtomicFile::create(path, policy)?;
    write_file(
        path,
        file.file(),
        TargetFormat::Safetensors,
        tensors,
        &metadata,
        &Default::default(),
    )?;
    file.commit()?;
    Ok(())
}

/// Writes the model weights of `opt` as a `.pth` in the reference's checkpoint layout,
/// `{'model': state_dict, 'epoch': epoch}`, which `torch.load(weights_only=True)` and the
/// reference's `--resume` read.
pub fn save_model_pth(
    path: &Path,
    policy: &OutputPolicy,
    opt: &AdamW,
    epoch: u64,
) -> Result<(), CheckpointError> {
    let tensors = opt
        .params
        .iter()
        .map(|p| out(p.name.clone(), p.var.as_tensor()))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let mut file = AtomicFile::create(path, policy)?;
    write_file(
        path,
        file.file(),
        TargetFormat::Pth,
        tensors,
        &BTreeMap::new(),
        &PthLayout {
            wrap: Some("model"),
            ints: &[("epoch", epoch as i64)],
        },
    )?;
    file.commit()?;
    Ok(())
}

/// Restores `opt` (parameters, moments, steps) and the EMA weights from `path`; returns the
/// trainer's state. Every parameter must be in the file with its shape.
pub fn load(
    path: &Path,
    opt: &mut AdamW,
    ema: Option<&[(String, Var)]>,
) -> Result<TrainerState, CheckpointError> {
    let store = TensorStore::open(path)?;
    let invalid = |why: String| CheckpointError::Invalid {
        path: path.display().to_string(),
        why,
    };
    let read = |name: &str, like: &Tensor| -> Result<Tensor, CheckpointError> {
        let t = store
            .get(name)
            .ok_or_else(|| invalid(format!("no tensor '{name}'")))?;
        if t.dtype != FileDType::F32 || t.shape != like.dims() {
            return Err(invalid(format!(
                "'{name}' is {} {:?}, expected f32 {:?}",
                t.dtype,
                t.shape,
                like.dims()
            )));
        }
        let bytes = store.bytes(t)?;
        Ok(
            Tensor::from_raw_buffer(&bytes, DType::F32, &t.shape, &Device::Cpu)?
                .to_device(like.device())?,
        )
    };
    let meta = store.metadata();
    let state: TrainerState = meta
        .get("trainer.state")
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| invalid("no trainer state in the metadata".into()))?;
    let steps: HashMap<String, u64> = meta
        .get("optim.steps")
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| invalid("no optimiser steps in the metadata".into()))?;
    for p in &mut opt.params {
        let w = read(&format!("model.{}", p.name), p.var.as_tensor())?;
        p.var.set(&w)?;
        p.exp_avg = read(&format!("optim.exp_avg.{}", p.name), &p.exp_avg)?;
        p.exp_avg_sq = read(&format!("optim.exp_avg_sq.{}", p.name), &p.exp_avg_sq)?;
        p.step = *steps
            .get(&p.name)
            .ok_or_else(|| invalid(format!("no step count for '{}'", p.name)))?;
    }
    for (name, v) in ema.unwrap_or(&[]) {
        v.set(&read(&format!("ema.{name}"), v.as_tensor())?)?;
    }
    Ok(state)
}
