//! Top-k accuracy and cross-entropy from logits, computed in f64 on the host.

/// Why logits or labels were refused, or no metric exists.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("label {label} is outside the model's {classes} classes")]
    Label { label: i64, classes: usize },
    #[error("{logits} logits are not {rows} rows of {classes} classes")]
    Shape {
        logits: usize,
        rows: usize,
        classes: usize,
    },
    #[error("no images were evaluated{0}")]
    NoImages(String),
}

/// Accumulates top-1/top-5 hits and summed cross-entropy over batches.
#[derive(Debug, Clone, Default)]
pub struct Accuracy {
    pub images: usize,
    pub top1: usize,
    pub top5: usize,
    pub loss_sum: f64,
}

impl Accuracy {
    /// `logits` is [rows, classes] row-major, one row per label. Nothing is counted unless the
    /// shape matches and every label is a class index.
    pub fn add(
        &mut self,
        logits: &[f32],
        classes: usize,
        labels: &[i64],
    ) -> Result<(), MetricsError> {
        if classes == 0 || labels.len().checked_mul(classes) != Some(logits.len()) {
            return Err(MetricsError::Shape {
                logits: logits.len(),
                rows: labels.len(),
                classes,
            });
        }
        if let Some(&label) = labels
            .iter()
            .find(|&&l| !usize::try_from(l).is_ok_and(|l| l < classes))
        {
            return Err(MetricsError::Label { label, classes });
        }
        for (row, &label) in logits.chunks_exact(classes).zip(labels) {
            let label = label as usize;
            let target = row[label];
            // Rank: how many classes score strictly higher (ties count in the label's favour,
            // as a stable sort of torch.topk would place the lower index first only by chance).
            let higher = row.iter().filter(|&&v| v > target).count();
            self.top1 += (higher == 0) as usize;
            self.top5 += (higher < 5) as usize;
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            self.loss_sum += lse - target as f64;
            self.images += 1;
        }
        Ok(())
    }

    /// Fails with [`MetricsError::NoImages`] if nothing was counted: a metric over no images is
    /// not 0%, it does not exist.
    pub fn check_nonempty(&self) -> Result<(), MetricsError> {
        if self.images == 0 {
            return Err(MetricsError::NoImages(String::new()));
        }
        Ok(())
    }

    pub fn top1_percent(&self) -> f64 {
        100.0 * self.top1 as f64 / self.images.max(1) as f64
    }
    pub fn top5_percent(&self) -> f64 {
        100.0 * self.top5 as f64 / self.images.max(1) as f64
    }
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.images.max(1) as f64
    }
}

/// Softmax of one row of logits, in f64 for the sums.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = row.iter().map(|&v| ((v - max) as f64).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|&e| (e / sum) as f32).collect()
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[j].total_cmp(&values[i]).then(i.cmp(&j)));
    order.truncate(k);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_top_k() {
        let p = softmax(&[1.0, 3.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[1] / p[0] - 2f32.exp()).abs() < 1e-4);
        assert_eq!(top_k(&p, 3), vec![1, 3, 2]);
    }

    #[test]
    fn counts_and_loss() {
        let mut a = Accuracy::default();
        // Two rows of 6 classes: label 2 is top-1 in the first, 5th in the second.
        let logits = [0.0, 1.0, 5.0, 2.0, 0.5, 0.1, 9.0, 8.0, 7.0, 1.0, 6.5, 0.0];
        a.add(&logits, 6, &[2, 3]).unwrap();
        assert_eq!((a.top1, a.top5, a.images), (1, 2, 2));
        // 6th of 6: outside the top 5.
        let mut b = Accuracy::default();
        b.add(&[9.0, 8.0, 7.0, 6.0, 5.0, 4.0], 6, &[5]).unwrap();
        assert_eq!((b.top1, b.top5), (0, 0));
        let row0: f64 = [0.0f64, 1.0, 5.0, 2.0, 0.5, 0.1]
            .iter()
            .map(|v| v.exp())
            .sum::<f64>()
            .ln()
            - 5.0;
        let row1: f64 = [9.0f64, 8.0, 7.0, 1.0, 6.5, 0.0]
            .iter()
            .map(|v| v.exp())
            .sum::<f64>()
            .ln()
            - 1.0;
        assert!((a.mean_loss() - (row0 + row1) / 2.0).abs() < 1e-9);
    }

    #[test]
    fn bad_labels_and_shapes_are_errors_not_panics() {
        let mut a = Accuracy::default();
        let row = [1.0f32, 2.0, 3.0];
        for bad in [-1i64, 3, i64::MAX, i64::MIN] {
            let e = a.add(&row, 3, &[bad]).unwrap_err();
            assert_eq!(
                e,
                MetricsError::Label {
                    label: bad,
                    classes: 3
                }
            );
            assert!(e.to_string().contains(&format!("label {bad} ")), "{e}");
        }
        // Two labels for one row, a ragged row, zero classes.
        assert!(matches!(
            a.add(&row, 3, &[0, 1]),
            Err(MetricsError::Shape { .. })
        ));
        assert!(matches!(
            a.add(&row[..2], 3, &[0]),
            Err(MetricsError::Shape { .. })
        ));
        assert!(matches!(
            a.add(&[], 0, &[0]),
            Err(MetricsError::Shape { .. })
        ));
        // Nothing was counted by the refused calls.
        assert_eq!(a.images, 0);
        assert_eq!(
            a.check_nonempty().unwrap_err().to_string(),
            "no images were evaluated"
        );
        a.add(&row, 3, &[2]).unwrap();
        assert!(a.check_nonempty().is_ok());
        assert_eq!(a.top1, 1);
    }
}
