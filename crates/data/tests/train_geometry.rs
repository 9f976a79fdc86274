//! The training transform's geometric steps against torchvision + timm 0.5.4
//! (fixtures/gen/make_train_geometry.py): exact crop + resize pixels and flip for fixed boxes,
//! and the distributions of RandomResizedCrop and RandomErasing boxes (two-sample KS).

mod stats;

use illama_data::train::{
    fill_box, hflip, normalize_into, resized_crop, RandomErasing, RandomResizedCrop, Rect,
    TrainTransform,
};
use illama_data::transform::to_chw_normalized;
use illama_data::{decode_rgb, Rgb8};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stats::*;

const ALPHA: f64 = 0.01;

fn png(name: &str) -> Rgb8 {
    decode_rgb(&read(name)).unwrap()
}

#[test]
fn resized_crop_matches_torchvision_exactly() {
    let photo = png("photo.png");
    assert_eq!((photo.width, photo.height), (200, 150));
    let meta = meta();
    for c in meta["crops"].as_array().unwrap() {
        let u = |k: &str| c[k].as_u64().unwrap() as usize;
        let b = Rect {
            top: u("top"),
            left: u("left"),
            height: u("height"),
            width: u("width"),
        };
        let want = png(c["file"].as_str().unwrap());
        let got = resized_crop(&photo, b, u("size")).unwrap();
        assert_eq!((got.width, got.height), (want.width, want.height));
        let max_diff = got
            .data
            .iter()
            .zip(&want.data)
            .map(|(&a, &b)| a.abs_diff(b))
            .max()
            .unwrap();
        eprintln!("{b:?} -> {}: max |diff| {max_diff}", u("size"));
        assert_eq!(got, want, "{b:?} -> {}", u("size"));
    }
}

#[test]
fn flip_matches_pil_and_fuses_into_normalisation() {
    let photo = png("photo.png");
    let b = Rect {
        top: 20,
        left: 30,
        height: 120,
        width: 160,
    };
    let mut px = resized_crop(&photo, b, 64).unwrap();
    let plain = to_chw_normalized(&px);
    let mut fused = vec![0f32; plain.len()];
    normalize_into(&px, false, &mut fused).unwrap();
    assert_eq!(fused, plain, "normalize_into without flip");
    normalize_into(&px, true, &mut fused).unwrap();
    hflip(&mut px);
    assert_eq!(px, png("crop_0_flip.png"));
    assert_eq!(fused, to_chw_normalized(&px), "normalize_into with flip");
    // Odd widths keep their middle column.
    let mut odd = Rgb8 {
        width: 3,
        height: 1,
        data: vec![1, 2, 3, 4, 5, 6, 7, 8, 9],
    };
    hflip(&mut odd);
    assert_eq!(odd.data, vec![7, 8, 9, 4, 5, 6, 1, 2, 3]);
}

fn area_and_log_aspect(boxes: &[(usize, usize)], total: f64) -> (Vec<f64>, Vec<f64>) {
    boxes
        .iter()
        .map(|&(h, w)| ((h * w) as f64 / total, (w as f64 / h as f64).ln()))
        .unzip()
}

fn our_rrc(t: &RandomResizedCrop, w: usize, h: usize, n: usize, seed: u64) -> Vec<(usize, usize)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let b = t.sample(w, h, &mut rng);
            assert!(b.top + b.height <= h && b.left + b.width <= w && b.width > 0);
            (b.height, b.width)
        })
        .collect()
}

/// (area p, aspect p) of our sampler against timm's draws on a `w x h` image.
fn rrc_p(t: &RandomResizedCrop, w: usize, h: usize, file: &str) -> (f64, f64) {
    let theirs = read_hw(file);
    let ours = our_rrc(t, w, h, theirs.len(), 0);
    let total = (w * h) as f64;
    let (ta, tr) = area_and_log_aspect(&theirs, total);
    let (oa, or) = area_and_log_aspect(&ours, total);
    let (da, pa) = ks_test(&oa, &ta);
    let (dr, pr) = ks_test(&or, &tr);
    eprintln!(
        "RRC {w}x{h} scale {:?}: area D {da:.4} p {pa:.3}; log aspect D {dr:.4} p {pr:.3}",
        t.scale
    );
    (pa, pr)
}

#[test]
fn random_resized_crop_distribution_matches_timm() {
    let meta = meta();
    assert_eq!(meta["draws"], 20000);
    for r in meta["rrc"].as_array().unwrap() {
        let (w, h) = (
            r["width"].as_u64().unwrap() as usize,
            r["height"].as_u64().unwrap() as usize,
        );
        let t = RandomResizedCrop::new(224).unwrap();
        assert_eq!(r["scale"][0].as_f64().unwrap(), t.scale.0);
        assert_eq!(r["ratio"][1].as_f64().unwrap(), t.ratio.1);
        let (pa, pr) = rrc_p(&t, w, h, r["file"].as_str().unwrap());
        assert!(pa > ALPHA && pr > ALPHA, "{w}x{h}: p {pa} {pr}");
    }
}

#[test]
fn random_resized_crop_test_detects_a_wrong_range() {
    let mut t = RandomResizedCrop::new(224).unwrap();
    t.scale = (0.1, 1.0);
    let (pa, _) = rrc_p(&t, 500, 375, "rrc_500x375.bin");
    assert!(pa < ALPHA, "scale (0.1, 1) not detected: p {pa}");
    let mut t = RandomResizedCrop::new(224).unwrap();
    t.ratio = (0.7, 1.0 / 0.7);
    let (_, pr) = rrc_p(&t, 500, 375, "rrc_500x375.bin");
    assert!(pr < ALPHA, "ratio (0.7, 1/0.7) not detected: p {pr}");
}

#[test]
fn random_resized_crop_boxes_stay_inside_any_image() {
    let t = RandomResizedCrop::new(32).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (w, h) in [(1, 1), (1, 1000), (5000, 20), (2, 3), (451, 300), (16, 16)] {
        for _ in 0..2000 {
            let b = t.sample(w, h, &mut rng);
            assert!(b.width >= 1 && b.height >= 1, "{w}x{h}: {b:?}");
            assert!(
                b.left + b.width <= w && b.top + b.height <= h,
                "{w}x{h}: {b:?}"
            );
        }
    }
    // timm's fallback for a very tall image: full width, height round(w / (3/4)), centered.
    let mut never = RandomResizedCrop::new(32).unwrap();
    never.scale = (2.0, 2.0); // no try can fit
    let b = never.sample(100, 800, &mut rng);
    assert_eq!(
        b,
        Rect {
            top: (800 - 133) / 2,
            left: 0,
            height: 133,
            width: 100
        }
    );
    let b = never.sample(5000, 20, &mut rng);
    assert_eq!((b.width, b.height, b.left), (27, 20, (5000 - 27) / 2));
    let b = never.sample(400, 380, &mut rng);
    assert_eq!((b.width, b.height, b.left, b.top), (400, 380, 0, 0));
}

fn erase_p(re: &RandomErasing, s: usize, file: &str) -> (f64, f64, f64) {
    let theirs = read_hw(file);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let ours: Vec<(usize, usize)> = (0..theirs.len())
        .map(|_| match re.sample_box(s, s, 1, &mut rng) {
            Some(b) => {
                assert!(b.top + b.height <= s && b.left + b.width <= s);
                (b.height, b.width)
            }
            None => (0, 0),
        })
        .collect();
    let missed = |v: &[(usize, usize)]| v.iter().filter(|b| b.0 == 0).count();
    let p_missed = proportions_test(missed(&ours), ours.len(), missed(&theirs), theirs.len());
    let fitted = |v: &[(usize, usize)]| -> Vec<(usize, usize)> {
        v.iter().copied().filter(|b| b.0 > 0).collect()
    };
    let total = (s * s) as f64;
    // Erasing's aspect is h / w; the helper's is w / h: the sign flips, the test does not care.
    let (ta, tr) = area_and_log_aspect(&fitted(&theirs), total);
    let (oa, or) = area_and_log_aspect(&fitted(&ours), total);
    let (da, pa) = ks_test(&oa, &ta);
    let (dr, pr) = ks_test(&or, &tr);
    eprintln!(
        "erasing {s}x{s} area {:?}: missed {} vs {} (p {p_missed:.3}); area D {da:.4} p {pa:.3}; \
         log aspect D {dr:.4} p {pr:.3}",
        (re.min_area, re.max_area),
        missed(&ours),
        missed(&theirs)
    );
    (pa, pr, p_missed)
}

#[test]
fn random_erasing_distribution_matches_timm() {
    let meta = meta();
    for e in meta["erase"].as_array().unwrap() {
        let s = e["size"].as_u64().unwrap() as usize;
        let re = RandomErasing::new(0.25);
        assert_eq!(e["max_area"].as_f64().unwrap(), re.max_area);
        // serde_json's default float parsing may be one ulp off: compare loosely.
        assert!((e["log_aspect"][0].as_f64().unwrap() - re.log_aspect.0).abs() < 1e-12);
        let (pa, pr, pm) = erase_p(&re, s, e["file"].as_str().unwrap());
        assert!(
            pa > ALPHA && pr > ALPHA && pm > ALPHA,
            "{s}: p {pa} {pr} {pm}"
        );
    }
}

#[test]
fn random_erasing_test_detects_a_wrong_range() {
    let mut re = RandomErasing::new(0.25);
    re.max_area = 0.3;
    let (pa, _, _) = erase_p(&re, 224, "erase_224.bin");
    assert!(pa < ALPHA, "max_area 0.3 not detected: p {pa}");
}

#[test]
fn random_erasing_applies_to_a_quarter_of_images() {
    let re = RandomErasing::new(0.25);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (s, n) = (16, 20000);
    let mut img = vec![0f32; 3 * s * s];
    let mut erased = 0;
    for _ in 0..n {
        img.fill(0.0);
        if re.apply(&mut img, 3, s, s, &mut rng).unwrap() > 0 {
            erased += 1;
            assert!(img.iter().any(|&v| v != 0.0));
        } else {
            assert!(img.iter().all(|&v| v == 0.0));
        }
    }
    let p = proportion_test(erased, n, 0.25);
    eprintln!("erased {erased} of {n} (p {p:.3} against 0.25)");
    assert!(p > ALPHA);
    assert!(proportion_test(erased, n, 0.27) < ALPHA);
}

#[test]
fn erasing_fills_exactly_the_box() {
    let (c, h, w) = (3, 7, 9);
    let mut img: Vec<f32> = (0..c * h * w).map(|v| v as f32).collect();
    let orig = img.clone();
    let b = Rect {
        top: 2,
        left: 8,
        height: 5,
        width: 1,
    };
    let noise: Vec<f32> = (0..c * b.height * b.width)
        .map(|v| -(v as f32) - 0.5)
        .collect();
    let mut it = noise.iter();
    fill_box(&mut img, c, h, w, b, |_| *it.next().unwrap()).unwrap();
    assert!(it.next().is_none());
    let mut k = 0;
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let i = (ch * h + y) * w + x;
                let inside = (2..7).contains(&y) && x == 8;
                if inside {
                    assert_eq!(img[i], noise[k]);
                    k += 1;
                } else {
                    assert_eq!(img[i], orig[i]);
                }
            }
        }
    }
}

#[test]
fn pixel_mode_noise_is_standard_normal() {
    let mut re = RandomErasing::new(1.0);
    re.min_area = 0.3;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let s = 64;
    let mut img = vec![f32::NAN; 3 * s * s];
    let mut values = Vec::new();
    for _ in 0..20 {
        img.fill(f32::NAN);
        assert_eq!(re.apply(&mut img, 3, s, s, &mut rng).unwrap(), 1);
        values.extend(img.iter().filter(|v| !v.is_nan()).map(|&v| v as f64));
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    eprintln!("{n} noise values: mean {mean:.4} var {var:.4}");
    assert!(mean.abs() < 5.0 / n.sqrt() && (var - 1.0).abs() < 0.05);
}

#[test]
fn train_transform_composes_the_steps() {
    let photo = png("photo.png");
    for aa in ["rand-m9-mstd0.5-inc1", "none"] {
        let t = TrainTransform::new(64, aa, 0.25).unwrap();
        assert_eq!(t.rand_augment.is_some(), aa != "none");
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let got = t.apply(&photo, &mut rng).unwrap();
            assert_eq!(got.len(), 3 * 64 * 64);
            // The same draws done step by step.
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let px = t.pixels(&photo, &mut rng).unwrap();
            let mut want = to_chw_normalized(&px);
            t.erasing.apply(&mut want, 3, 64, 64, &mut rng).unwrap();
            assert_eq!(got, want, "seed {seed}");
            let mut again = vec![0f32; got.len()];
            t.apply_into(&photo, &mut ChaCha8Rng::seed_from_u64(seed), &mut again)
                .unwrap();
            assert_eq!(again, got);
        }
    }
    // Without RandAugment, the pixels are the crop, flipped or not.
    let t = TrainTransform::new(64, "none", 0.0).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let px = t.pixels(&photo, &mut rng).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut crop = t.crop.apply(&photo, &mut rng).unwrap();
    if rand::Rng::random::<f64>(&mut rng) < 0.5 {
        hflip(&mut crop);
    }
    assert_eq!(px, crop);
    for bad in [
        TrainTransform::new(60, "none", 0.25),
        TrainTransform::new(64, "rand-x", 0.25),
        TrainTransform::new(64, "none", 1.5),
    ] {
        assert!(bad.is_err());
    }
}

/// Timing only (run with `--release -- --ignored --nocapture`): one image through crop, resize,
/// flip, normalisation and erasing at 224 from a 500x375 photo.
#[test]
#[ignore]
fn throughput() {
    let photo = illama_data::resize(&png("photo.png"), 500, 375).unwrap();
    let t = TrainTransform::recipe(224).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut out = vec![0f32; 3 * 224 * 224];
    let n = 500;
    let start = std::time::Instant::now();
    for _ in 0..n {
        t.apply_into(&photo, &mut rng, &mut out).unwrap();
    }
    let per = start.elapsed().as_secs_f64() / n as f64;
    eprintln!(
        "TrainTransform(224) from 500x375: {:.3} ms per image",
        per * 1e3
    );
}

#[test]
fn bad_sizes_are_errors_not_panics() {
    assert!(RandomResizedCrop::new(0).is_err());
    // An empty image gives an empty box, which the resize then refuses.
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let b = RandomResizedCrop::new(32).unwrap().sample(0, 10, &mut rng);
    assert_eq!((b.width, b.height), (0, 0));
    // Buffers that do not match the image.
    let px = Rgb8 {
        width: 4,
        height: 4,
        data: vec![0; 48],
    };
    assert!(normalize_into(&px, false, &mut [0f32; 47]).is_err());
    let mut img = vec![0f32; 3 * 8 * 8];
    let outside = Rect {
        top: 6,
        left: 0,
        height: 4,
        width: 2,
    };
    assert!(fill_box(&mut img, 3, 8, 8, outside, |_| 1.0).is_err());
    assert!(fill_box(
        &mut img[..10],
        3,
        8,
        8,
        Rect {
            top: 0,
            left: 0,
            height: 1,
            width: 1
        },
        |_| 1.0
    )
    .is_err());
    // CutMix: an empty image gives an empty box; a box outside the image is refused.
    use illama_data::mix::{mix_images, rand_bbox, CutBox, MixKind, MixParams};
    let b = rand_bbox(0, 5, 0.5, &mut rng);
    assert_eq!((b.y0, b.y1, b.x0, b.x1), (0, 0, 0, 0));
    let outside = MixParams {
        lam: 0.5,
        kind: MixKind::CutMix(CutBox {
            y0: 0,
            y1: 9,
            x0: 0,
            x1: 2,
        }),
    };
    assert!(mix_images(&outside, &mut vec![0f32; 2 * 3 * 8 * 8], 2, 8, 8).is_err());
    assert!(RandomErasing::new(1.0)
        .apply(&mut img[..5], 3, 8, 8, &mut rng)
        .is_err());
}
