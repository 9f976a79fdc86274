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

/// The expectations make_images.py writes: every image at 224 (resize 256 + center crop), the
/// first 6 at 384 (a plain warp, which a handful of images covers), as expected/SIZE/NN.png.
fn expected_files(size: usize) -> Vec<PathBuf> {
    let n = match size {
        224 => samples().len(),
        384 => 6,
        _ => unreachable!(),
    };
    let dir = fixtures().join(format!("expected/{size}"));
    let want: Vec<String> = (0..n).map(|i| format!("{i:02}.png")).collect();
    let mut have: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    have.sort();
    assert_eq!(
        have,
        want,
        "{}: expectations missing or extra; run fixtures/gen/make_images.py",
        dir.display()
    );
    want.iter().map(|f| dir.join(f)).collect()
}

#[test]
fn pixels_match_torchvision_within_half_a_level() {
    let samples = samples();
    assert_eq!(
        samples.len(),
        17,
        "images in {}",
        fixtures().join("val").display()
    );
    for size in [224usize, 384] {
        let mut total = 0f64;
        let mut count = 0usize;
        let expected = expected_files(size);
        for (path, expected) in samples.iter().zip(&expected) {
            let want = load_png(expected);
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
        assert_eq!(count, expected.len());
        let mean = total / count as f64;
        assert!(mean <= 0.5, "mean |diff| over the set at {size}: {mean}");
    }
}
