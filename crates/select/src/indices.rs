//! Which teacher rows, columns and layers a student keeps.

use serde::Serialize;

/// How elements of each dimension are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementSelection {
    /// The reference method: every `t/s`-th index when divisible, else
    /// `round(linspace(0, t-1, s))` exactly as PyTorch computes it.
    Uniform,
    /// The leading `s` indices.
    First,
    /// `s` sorted indices drawn with this seed, the same for every (teacher, student) size pair so
    /// that residual dimensions stay aligned across layers.
    Random { seed: u64 },
}

impl ElementSelection {
    pub fn name(self) -> &'static str {
        match self {
            ElementSelection::Uniform => "uniform",
            ElementSelection::First => "first",
            ElementSelection::Random { .. } => "random",
        }
    }

    /// Indices of `s` elements out of `t`; an error when `s > t`.
    pub fn indices(self, t: usize, s: usize) -> Result<Vec<usize>, crate::SelectError> {
        if s > t {
            return Err(crate::SelectError::Student(format!(
                "cannot select {s} of {t} elements"
            )));
        }
        Ok(match self {
            ElementSelection::Uniform => uniform_indices(t, s),
            ElementSelection::First => (0..s).collect(),
            ElementSelection::Random { seed } => random_indices(seed, t, s),
        })
    }
}

/// How student blocks map to teacher layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerSelection {
    /// Block i <- layer i (the reference).
    First,
    /// Evenly spaced layers, `uniform_indices(teacher_layers, depth)`.
    Uniform,
    /// Block i <- layers[i].
    Explicit(Vec<usize>),
}

impl LayerSelection {
    pub fn name(&self) -> &'static str {
        match self {
            LayerSelection::First => "first",
            LayerSelection::Uniform => "uniform",
            LayerSelection::Explicit(_) => "explicit",
        }
    }

    pub fn layers(&self, teacher_layers: usize, depth: usize) -> Result<Vec<usize>, LayerError> {
        if depth > teacher_layers {
            return Err(LayerError::StudentDeeper {
                depth,
                teacher_layers,
            });
        }
        match self {
            LayerSelection::First => Ok((0..depth).collect()),
            LayerSelection::Uniform => Ok(uniform_indices(teacher_layers, depth)),
            LayerSelection::Explicit(l) => {
                if l.len() != depth {
                    return Err(LayerError::ListLength {
                        listed: l.len(),
                        depth,
                    });
                }
                if let Some(&layer) = l.iter().find(|&&i| i >= teacher_layers) {
                    return Err(LayerError::NoSuchLayer {
                        layer,
                        teacher_layers,
                    });
                }
                Ok(l.clone())
            }
        }
    }
}

/// Why a layer choice does not fit the student and the teacher.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    #[error("the student is deeper ({depth} blocks) than the teacher ({teacher_layers} layers)")]
    StudentDeeper { depth: usize, teacher_layers: usize },
    #[error("the layer list has {listed} layers for a student of depth {depth}")]
    ListLength { listed: usize, depth: usize },
    #[error("the layer list names layer {layer}, the teacher has {teacher_layers} (0..{})", teacher_layers - 1)]
    NoSuchLayer { layer: usize, teacher_layers: usize },
}

/// The reference's uniform element selection, bit for bit with PyTorch:
/// `arange(s) * (t / s)` when `s` divides `t`, else `round(linspace(0, t - 1, s))` with
/// `torch.linspace`'s float32 CPU kernel (a single-rounding fused multiply-add from the start for
/// the first `s / 2` points, from the end for the rest) and round-half-to-even.
pub fn uniform_indices(t: usize, s: usize) -> Vec<usize> {
    if s == 0 || t == 0 {
        // Nothing to select from (t = 0 is only valid with s = 0; `indices` refuses s > t).
        return Vec::new();
    }
    if t % s == 0 {
        let step = t / s;
        return (0..s).map(|i| i * step).collect();
    }
    torch_linspace_f32(0.0, (t - 1) as f32, s)
        .into_iter()
        .map(|v| v.round_ties_even() as usize)
        .collect()
}

/// `torch.linspace(start, end, steps)` in float32, as the CPU kernel computes it.
pub fn torch_linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// Sorted distinct indices, seeded per (seed, t, s) with a SplitMix64 stream and a partial
/// Fisher-Yates shuffle.
fn random_indices(seed: u64, t: usize, s: usize) -> Vec<usize> {
    let mut state =
        seed ^ (t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (s as u64).rotate_left(32);
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut pool: Vec<usize> = (0..t).collect();
    for i in 0..s {
        let j = i + (next() % (t - i) as u64) as usize;
        pool.swap(i, j);
    }
    let mut chosen = pool[..s].to_vec();
    chosen.sort_unstable();
    chosen
}

/// A compact, JSON-friendly description of an index list.
pub fn describe(indices: &[usize]) -> serde_json::Value {
    if indices.len() >= 2 {
        let step = indices[1] as i64 - indices[0] as i64;
        if step > 0
            && indices
                .windows(2)
                .all(|w| w[1] as i64 - w[0] as i64 == step)
        {
            return serde_json::json!({"start": indices[0], "step": step, "count": indices.len()});
        }
    }
    serde_json::json!({ "values": indices })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_the_spec_names() {
        // torch gives 8262 for row 774 of 12288 -> 1152 (exact arithmetic would give 8263).
        assert_eq!(uniform_indices(12288, 1152)[774], 8262);
        assert_eq!(uniform_indices(12288, 2304)[1860], 9924);
        // Tiny from 7B: the first k row of the concatenated q/k/v is 4103.
        let qkv = uniform_indices(3 * 4096, 3 * 192);
        assert_eq!(qkv[192], 4103);
        assert_eq!(
            uniform_indices(4096, 1024),
            (0..1024).map(|i| i * 4).collect::<Vec<_>>()
        );
        assert_eq!(uniform_indices(7, 1), vec![0]);
    }

    #[test]
    fn random_is_sorted_distinct_and_stable() {
        let a = ElementSelection::Random { seed: 7 }
            .indices(100, 30)
            .unwrap();
        assert_eq!(
            a,
            ElementSelection::Random { seed: 7 }
                .indices(100, 30)
                .unwrap()
        );
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(
            a,
            ElementSelection::Random { seed: 8 }
                .indices(100, 30)
                .unwrap()
        );
        assert_eq!(
            ElementSelection::First.indices(10, 3).unwrap(),
            vec![0, 1, 2]
        );
        // More than there is: an error, not a panic.
        assert!(ElementSelection::Uniform.indices(3, 10).is_err());
        assert!(uniform_indices(0, 4).is_empty());
    }

    #[test]
    fn layer_selection() {
        assert_eq!(LayerSelection::First.layers(32, 3).unwrap(), vec![0, 1, 2]);
        assert_eq!(LayerSelection::Uniform.layers(32, 12).unwrap()[11], 31);
        assert_eq!(
            LayerSelection::First.layers(4, 12),
            Err(LayerError::StudentDeeper {
                depth: 12,
                teacher_layers: 4
            })
        );
        assert_eq!(
            LayerSelection::Explicit(vec![0, 9]).layers(4, 2),
            Err(LayerError::NoSuchLayer {
                layer: 9,
                teacher_layers: 4
            })
        );
        assert_eq!(
            LayerSelection::Explicit(vec![0]).layers(4, 2),
            Err(LayerError::ListLength {
                listed: 1,
                depth: 2
            })
        );
    }

    #[test]
    fn description_compresses_progressions() {
        assert_eq!(
            describe(&[0, 4, 8]),
            serde_json::json!({"start": 0, "step": 4, "count": 3})
        );
        assert_eq!(
            describe(&[0, 2, 5]),
            serde_json::json!({"values": [0, 2, 5]})
        );
    }
}
