//! Starting a training run from a checkpoint (`finetune --init`, the reference's `--finetune`):
//! a non-strict load into the trainable parameters that says which came from the file and which
//! keep their random initialisation.
//!
//! As the reference does: the `model` (or `module`) entry of a training checkpoint is used; the
//! head is dropped when its class count differs; `pos_embed` is interpolated (bicubic, as for
//! evaluation at another size) when the file's grid differs; any other shape mismatch is an error
//! naming the tensor. `select`'s output holds only the 7 selected tensors of each block: the rest
//! of the network stays at its random initialisation, and the report says so.

use crate::load::{read_tensors, LoadError};
use candle_core::{DType, Device, Tensor, Var};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// What a non-strict load did, parameter by parameter.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InitReport {
    /// Parameters whose values came from the file.
    pub loaded: Vec<String>,
    /// Parameters left at their random initialisation (not in the file, or dropped).
    pub random: Vec<String>,
    /// Tensors of the file that are not parameters of this model.
    pub unused: Vec<String>,
    /// Why the head was dropped, if it was (`1000 classes in the file, 10 in the model`).
    pub head_dropped: Option<String>,
    /// The patch grid `pos_embed` was interpolated from, if it was.
    pub pos_embed_from_grid: Option<usize>,
}

/// Loads `path` (entry `key`, or the automatic choice) into `params` (name -> variable, the
/// model's state-dict names) as the reference's `--finetune` does.
pub fn init_from(
    path: &Path,
    key: Option<&str>,
    params: &HashMap<String, Var>,
) -> Result<InitReport, LoadError> {
    let (mut map, _) = read_tensors(path, key)?;
    let bad = |why: String| LoadError::Checkpoint {
        path: path.to_path_buf(),
        why,
    };
    let mut report = InitReport::default();
    // The head: dropped when its class count differs.
    if let (Some(file_w), Some(model_w)) = (map.get("head.weight"), params.get("head.weight")) {
        if file_w.dims() != model_w.dims() {
            report.head_dropped = Some(format!(
                "{} classes in the file, {} in the model",
                file_w.dims().first().copied().unwrap_or(0),
                model_w.dims().first().copied().unwrap_or(0)
            ));
            map.remove("head.weight");
            map.remove("head.bias");
        }
    }
    // pos_embed: interpolated to the model's grid.
    if let (Some(file_p), Some(model_p)) = (map.get("pos_embed"), params.get("pos_embed")) {
        let (f, m) = (file_p.dims().to_vec(), model_p.dims().to_vec());
        if f != m {
            let grid = |tokens: usize| {
                let g = ((tokens.saturating_sub(1)) as f64).sqrt().round() as usize;
                (g * g + 1 == tokens).then_some(g)
            };
            let (Some(g_old), Some(g_new)) = (
                f.get(1).copied().and_then(grid),
                m.get(1).copied().and_then(grid),
            ) else {
                return Err(bad(format!("pos_embed is {f:?}, the model's is {m:?}")));
            };
            if f.len() != 3 || f[0] != 1 || f[2] != m[2] {
                return Err(bad(format!("pos_embed is {f:?}, the model's is {m:?}")));
            }
            let pos: Vec<f32> = file_p.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            let resized = crate::pos_embed::interpolate(&pos, m[2], g_old, g_new)
                .map_err(|e| bad(e.to_string()))?;
            map.insert(
                "pos_embed".into(),
                Tensor::from_vec(resized, (1, g_new * g_new + 1, m[2]), &Device::Cpu)?,
            );
            report.pos_embed_from_grid = Some(g_old);
        }
    }
    let mut names: Vec<&String> = params.keys().collect();
    names.sort();
    for name in names {
        let var = &params[name];
        match map.get(name) {
            Some(t) if t.dims() == var.dims() => {
                var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
                report.loaded.push(name.clone());
            }
            Some(t) => {
                return Err(bad(format!(
                    "{name} is {:?} in the file, {:?} in the model",
                    t.dims(),
                    var.dims()
                )))
            }
            None => report.random.push(name.clone()),
        }
    }
    let known: BTreeSet<&String> = params.keys().collect();
    report.unused = map.keys().filter(|k| !known.contains(k)).cloned().collect();
    report.unused.sort();
    Ok(report)
}
