//! A small learnable image set made from nothing, for the quickstart and for tests: each class is
//! a kind of pattern (stripes in three directions, checkerboard, rings, dots) with a random
//! period, phase and pair of colours per image, plus pixel noise. Written as PNG files in the
//! ImageFolder layout (`<root>/train/<class>/<n>.png`, `<root>/val/...`), so every reader of
//! this crate takes it like ImageNet.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// The pattern classes, in order.
pub const PATTERNS: [&str; 6] = [
    "horizontal-stripes",
    "vertical-stripes",
    "diagonal-stripes",
    "checkerboard",
    "rings",
    "dots",
];

/// What to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatternSet {
    /// How many of [`PATTERNS`] (1 to 6).
    pub classes: usize,
    pub train_per_class: usize,
    pub val_per_class: usize,
    /// Side of the square images in pixels (at least 8).
    pub size: u32,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("{0}")]
    Spec(String),
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One image of class `class`, drawn from `rng`.
pub fn pattern_image(class: usize, size: u32, rng: &mut impl Rng) -> image::RgbImage {
    let period = rng.random_range(4..=(size / 4).max(5));
    let phase = rng.random_range(0..period);
    let dark = [0u8; 3].map(|_| rng.random_range(0..90));
    let light = [0u8; 3].map(|_| rng.random_range(166..=255));
    let (cx, cy) = (
        rng.random_range(0..size) as f32,
        rng.random_range(0..size) as f32,
    );
    let noise_seed: u64 = rng.random();
    image::RgbImage::from_fn(size, size, |x, y| {
        let (xp, yp) = (x + phase, y + phase);
        let on = match class % PATTERNS.len() {
            0 => yp / period % 2 == 0,
            1 => xp / period % 2 == 0,
            2 => (xp + y) / period % 2 == 0,
            3 => (xp / period + yp / period) % 2 == 0,
            4 => {
                let r = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                (r as u32 + phase) / period % 2 == 0
            }
            _ => {
                let (dx, dy) = (xp % period, yp % period);
                let r = period as f32 / 4.0;
                let c = period as f32 / 2.0;
                (dx as f32 - c).powi(2) + (dy as f32 - c).powi(2) <= r * r
            }
        };
        let base = if on { dark } else { light };
        // A cheap per-pixel hash for noise of +-12.
        let h = (noise_seed ^ ((x as u64) << 32 | y as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let n = (h >> 59) as i16 - 16;
        image::Rgb(base.map(|v| (v as i16 + n * 3 / 4).clamp(0, 255) as u8))
    })
}

/// Writes the set under `root` (`train/` and `val/`); returns the class folder names.
pub fn write_pattern_set(root: &Path, set: &PatternSet) -> Result<Vec<String>, PatternError> {
    if set.classes == 0 || set.classes > PATTERNS.len() {
        return Err(PatternError::Spec(format!(
            "{} classes: there are 1 to {}",
            set.classes,
            PATTERNS.len()
        )));
    }
    if set.size < 8 || set.train_per_class == 0 || set.val_per_class == 0 {
        return Err(PatternError::Spec(
            "images of at least 8 px, and at least one per class and split".into(),
        ));
    }
    for (split, count, stream) in [
        ("train", set.train_per_class, 0u64),
        ("val", set.val_per_class, 1u64),
    ] {
        for (class, name) in PATTERNS[..set.classes].iter().enumerate() {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).map_err(|source| PatternError::Io {
                path: dir.clone(),
                source,
            })?;
            let mut rng = ChaCha8Rng::seed_from_u64(set.seed);
            rng.set_stream(stream * 16 + class as u64);
            for i in 0..count {
                let path = dir.join(format!("{i:04}.png"));
                pattern_image(class, set.size, &mut rng)
                    .save(&path)
                    .map_err(|source| PatternError::Write { path, source })?;
            }
        }
    }
    Ok(PATTERNS[..set.classes]
        .iter()
        .map(|s| s.to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_is_an_image_folder_and_the_same_for_the_same_seed() {
        let dir = tempfile::tempdir().unwrap();
        let set = PatternSet {
            classes: 6,
            train_per_class: 3,
            val_per_class: 2,
            size: 24,
            seed: 5,
        };
        let names = write_pattern_set(dir.path(), &set).unwrap();
        assert_eq!(names.len(), 6);
        let train = crate::Dataset::image_folder(&dir.path().join("train")).unwrap();
        let val = crate::Dataset::image_folder(&dir.path().join("val")).unwrap();
        assert_eq!((train.samples.len(), val.samples.len()), (18, 12));
        train.check_same_classes(&val).unwrap();
        let again = tempfile::tempdir().unwrap();
        write_pattern_set(again.path(), &set).unwrap();
        let a = std::fs::read(dir.path().join("train/rings/0002.png")).unwrap();
        let b = std::fs::read(again.path().join("train/rings/0002.png")).unwrap();
        assert_eq!(a, b);
        // Train and val images differ.
        let v = std::fs::read(dir.path().join("val/rings/0000.png")).unwrap();
        assert_ne!(
            v,
            std::fs::read(dir.path().join("train/rings/0000.png")).unwrap()
        );
        assert!(write_pattern_set(dir.path(), &PatternSet { classes: 7, ..set }).is_err());
    }

    #[test]
    fn classes_differ_in_their_pattern() {
        // Horizontal stripes vary down a column, not along a row; vertical ones the other way.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let h = pattern_image(0, 32, &mut rng);
        let v = pattern_image(1, 32, &mut rng);
        let changes = |img: &image::RgbImage, along_row: bool| {
            (1..32)
                .filter(|&i| {
                    let (a, b) = if along_row {
                        (img.get_pixel(i - 1, 5), img.get_pixel(i, 5))
                    } else {
                        (img.get_pixel(5, i - 1), img.get_pixel(5, i))
                    };
                    (a[0] as i32 - b[0] as i32).abs() > 40
                })
                .count()
        };
        assert_eq!(changes(&h, true), 0);
        assert!(changes(&h, false) > 0);
        assert_eq!(changes(&v, false), 0);
        assert!(changes(&v, true) > 0);
    }
}
