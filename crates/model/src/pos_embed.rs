//! Resizing learned position embeddings to another input size, as the reference does for 384:
//! the patch rows as a [D, g, g] image, PyTorch's bicubic interpolation (a = -0.75,
//! align_corners = false, no antialiasing, edge indices clamped), the class row kept last.

const A: f32 = -0.75;

fn cubic1(x: f32) -> f32 {
    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
}

fn cubic2(x: f32) -> f32 {
    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
}

/// For each output index: the four clamped source indices and their weights.
fn taps(input: usize, output: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let real = scale * (o as f32 + 0.5) - 0.5;
            let floor = real.floor();
            let t = real - floor;
            let weights = [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)];
            let idx = std::array::from_fn(|k| {
                (floor as isize - 1 + k as isize).clamp(0, input as isize - 1) as usize
            });
            (idx, weights)
        })
        .collect()
}

/// `pos_embed` values that are not the grid and width they are said to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pos_embed holds {values} values, not {expected} ({grid}x{grid} patch rows and the class row, of width {dim}), or the new grid is empty")]
pub struct PosEmbedSizeError {
    pub values: usize,
    pub expected: usize,
    pub grid: usize,
    pub dim: usize,
}

/// `pos` holds `g_old * g_old + 1` rows of `dim` values (patch rows in row-major grid order, then
/// the class row). Returns `g_new * g_new + 1` rows.
pub fn interpolate(
    pos: &[f32],
    dim: usize,
    g_old: usize,
    g_new: usize,
) -> Result<Vec<f32>, PosEmbedSizeError> {
    let expected = (g_old * g_old + 1) * dim;
    if pos.len() != expected || g_new == 0 {
        return Err(PosEmbedSizeError {
            values: pos.len(),
            expected,
            grid: g_old,
            dim,
        });
    }
    if g_old == g_new {
        return Ok(pos.to_vec());
    }
    let tap = taps(g_old, g_new);
    let at = |row: usize, col: usize, d: usize| pos[(row * g_old + col) * dim + d];
    let mut out = Vec::with_capacity((g_new * g_new + 1) * dim);
    for (ys, wy) in &tap {
        for (xs, wx) in &tap {
            for d in 0..dim {
                let mut v = 0f32;
                for j in 0..4 {
                    let mut row = 0f32;
                    for i in 0..4 {
                        row += at(ys[j], xs[i], d) * wx[i];
                    }
                    v += row * wy[j];
                }
                out.push(v);
            }
        }
    }
    out.extend_from_slice(&pos[g_old * g_old * dim..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_constants_survive() {
        for (_, w) in taps(14, 24) {
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let pos = vec![0.25f32; (14 * 14 + 1) * 3];
        let out = interpolate(&pos, 3, 14, 24).unwrap();
        assert_eq!(out.len(), (24 * 24 + 1) * 3);
        assert!(out.iter().all(|v| (v - 0.25).abs() < 1e-6));
    }

    #[test]
    fn a_wrong_size_is_an_error_not_a_panic() {
        assert!(interpolate(&[0.0; 10], 3, 14, 24).is_err());
        assert!(interpolate(&[0.0; 15], 3, 2, 0).is_err());
    }
}
