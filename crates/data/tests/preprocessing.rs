//! Our decoding + eval transform against torchvision + PIL on real photographs
//! (fixtures/gen/make_images.py), in 0..255 pixel units before normalisation.

use illama_data::{decode_rgb, transform::EvalTransform, Rgb8};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/images")
}

/// ImageFolder order: classes sorted, files sorted within each.
fn samples() -> Vec<PathBuf> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(fixtures().join("val"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    classes.sort();
    let mut out = Vec::new();
    for c in classes {
        let mut files: Vec<PathBuf> = std::fs::read_dir(c)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        out.extend(files);
    }
    out
}

fn load_png(p: &Path) -> Rgb8 {
    decode_rgb(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn pixels_match_torchvision_within_half_a_level() {
    for size in [224usize, 384] {
        let mut total = 0f64;
        let mut count = 0usize;
        for (i, path) in samples().iter().enumerate() {
            let expected = fixtures().join(format!("expected/{size}/{i:02}.png"));
            if !expected.exists() {
                continue;
            }
            let want = load_png(&expected);
            let img = decode_rgb(&std::fs::read(path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let got = EvalTransform::new(size).unwrap().pixels(&img).unwrap();
            assert_eq!(
                (got.width, got.height),
                (want.width, want.height),
                "{}",
                path.display()
            );
            let diff: f64 = got
                .data
                .iter()
                .zip(&want.data)
                .map(|(&a, &b)| (a as f64 - b as f64).abs())
                .sum::<f64>()
                / got.data.len() as f64;
            let max = got
                .data
                .iter()
                .zip(&want.data)
                .map(|(&a, &b)| (a as i32 - b as i32).abs())
                .max()
                .unwrap();
            eprintln!(
                "{size} {}: mean |diff| {diff:.4}, max {max}",
                path.display()
            );
            assert!(
                diff <= 1.0,
                "{}: mean |diff| {diff} at {size}",
                path.display()
            );
            // PNG decoding is exact, so these isolate the resize and crop: PIL's result exactly.
            if path.extension().is_some_and(|e| e == "png") {
                assert_eq!(
                    max,
                    0,
                    "{}: resize differs from PIL at {size}",
                    path.display()
                );
            }
            total += diff;
            count += 1;
        }
        assert!(count >= 6);
        let mean = total / count as f64;
        assert!(mean <= 0.5, "mean |diff| over the set at {size}: {mean}");
    }
}
