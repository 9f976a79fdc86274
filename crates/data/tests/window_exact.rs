//! The windowed, streaming resize against a naive transcription of PIL's ImagingResample (full
//! coefficient tables, whole horizontal pass, whole vertical pass, then the crop), on images of
//! extreme aspect ratio: the pixels must be identical.

use illama_data::transform::EvalTransform;
use illama_data::Rgb8;

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// PIL's precompute_coeffs + normalize_coeffs_8bpc: (xmin, n, fixed-point kernel) per output.
fn coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
            let k: Vec<f64> = (0..xmax)
                .map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = k.iter().sum();
            let fixed = k
                .iter()
                .map(|&v| {
                    let w = if ww != 0.0 { v / ww } else { v };
                    let f = w * (1u32 << PRECISION_BITS) as f64;
                    (if w < 0.0 { f - 0.5 } else { f + 0.5 }) as i32 as i64
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Whole-image resize, PIL's way (horizontal pass first when the width changes).
fn naive_resize(img: &Rgb8, out_w: usize, out_h: usize) -> Rgb8 {
    let mut cur = img.clone();
    if out_w != cur.width {
        let c = coeffs(cur.width, out_w);
        let mut data = Vec::with_capacity(out_w * cur.height * 3);
        for y in 0..cur.height {
            for (xmin, k) in &c {
                for ch in 0..3 {
                    let mut acc = 1i64 << (PRECISION_BITS - 1);
                    for (i, &kw) in k.iter().enumerate() {
                        acc += cur.data[(y * cur.width + xmin + i) * 3 + ch] as i64 * kw;
                    }
                    data.push(clip8(acc));
                }
            }
        }
        cur = Rgb8 {
            width: out_w,
            height: cur.height,
            data,
        };
    }
    if out_h != cur.height {
        let c = coeffs(cur.height, out_h);
        let mut data = Vec::with_capacity(out_w * out_h * 3);
        for (ymin, k) in &c {
            for x in 0..cur.width {
                for ch in 0..3 {
                    let mut acc = 1i64 << (PRECISION_BITS - 1);
                    for (i, &kw) in k.iter().enumerate() {
                        acc += cur.data[((ymin + i) * cur.width + x) * 3 + ch] as i64 * kw;
                    }
                    data.push(clip8(acc));
                }
            }
        }
        cur = Rgb8 {
            width: out_w,
            height: out_h,
            data,
        };
    }
    cur
}

fn pattern(w: usize, h: usize) -> Rgb8 {
    Rgb8 {
        width: w,
        height: h,
        data: (0..w * h * 3)
            .map(|i| ((i * 7919 + i / 7) % 256) as u8)
            .collect(),
    }
}

#[test]
fn crops_of_extreme_aspect_ratios_equal_the_full_resize_cropped() {
    // 224: shorter side to 256, then the center 224 x 224 (what torchvision computes).
    for (w, h) in [(3usize, 300usize), (300, 3), (5, 200), (1, 150), (131, 171)] {
        let img = pattern(w, h);
        let t = EvalTransform::new(224).unwrap();
        let (out_w, out_h) = if w <= h {
            (256, ((256 * h) as f64 / w as f64) as usize)
        } else {
            (((256 * w) as f64 / h as f64) as usize, 256)
        };
        let full = naive_resize(&img, out_w, out_h);
        let left = ((out_w - 224) as f64 / 2.0).round_ties_even() as usize;
        let top = ((out_h - 224) as f64 / 2.0).round_ties_even() as usize;
        let want = full.crop(left, top, 224, 224).unwrap();
        assert_eq!(t.pixels(&img).unwrap(), want, "{w}x{h} at 224");
    }
    // 384 and up: a warp of the whole image.
    for (w, h) in [(3usize, 3000usize), (3000, 3), (1, 6_000)] {
        let img = pattern(w, h);
        let t = EvalTransform::new(384).unwrap();
        assert_eq!(
            t.pixels(&img).unwrap(),
            naive_resize(&img, 384, 384),
            "{w}x{h} at 384"
        );
    }
}
