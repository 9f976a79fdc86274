//! Mixup / CutMix against timm 0.5.4's `Mixup` (mode 'batch'; fixtures/gen/make_train_geometry.py):
//! pixels and targets for fixed lambdas and boxes, and the per-batch draw distributions.

mod stats;

use illama_data::mix::{mix_images, mixup_target, CutBox, MixError, MixKind, MixParams, Mixup};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stats::*;

const ALPHA: f64 = 0.01;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn mixed_pixels_and_targets_match_timm() {
    let meta = meta();
    let m = &meta["mix"];
    let shape: Vec<usize> = m["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let (h, w) = (shape[2], shape[3]);
    let labels: Vec<i64> = m["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let classes = m["num_classes"].as_u64().unwrap() as usize;
    let mixup = Mixup::new(1.0, 1.0, 1.0, 0.5, 0.1, classes).unwrap();
    assert_eq!(
        m["label_smoothing"].as_f64().unwrap(),
        mixup.label_smoothing
    );
    let input = read_f32(m["input"].as_str().unwrap());
    for case in m["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let lam = case["lam"].as_f64().unwrap();
        let params = if case["cutmix"].as_bool().unwrap() {
            let b: Vec<usize> = case["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let cb = CutBox {
                y0: b[0],
                y1: b[1],
                x0: b[2],
                x1: b[3],
            };
            // What `correct_lam` makes of it, computed as timm does.
            let lam = 1.0 - cb.area() as f64 / (h * w) as f64;
            assert_eq!(lam, case["final_lam"].as_f64().unwrap());
            MixParams {
                lam,
                kind: MixKind::CutMix(cb),
            }
        } else if lam == 1.0 {
            MixParams::NONE
        } else {
            MixParams {
                lam,
                kind: MixKind::Mixup,
            }
        };
        let mut x = input.clone();
        let y = mixup.apply(&params, &mut x, &labels, h, w).unwrap();
        let want_x = read_f32(&format!("mix_{name}_x.bin"));
        let want_y = read_f32(&format!("mix_{name}_y.bin"));
        let (dx, dy) = (max_abs_diff(&x, &want_x), max_abs_diff(&y, &want_y));
        eprintln!(
            "{name}: lam {} max |dx| {dx:e}, max |dy| {dy:e}",
            params.lam
        );
        assert!(dx <= 1e-6 && dy <= 1e-6, "{name}: {dx} {dy}");
        // Measured: bit for bit in every case (the f32 operations are torch's, in its order).
        assert_eq!(x, want_x, "{name}");
        assert_eq!(y, want_y, "{name}");
        assert_eq!(y.len(), labels.len() * classes);
    }
}

#[test]
fn targets_are_smoothed_one_hots_mixed_with_the_mirror() {
    let y = mixup_target(&[2, 0, 0, 1], 4, 0.75, 0.2).unwrap();
    let (off, on) = (0.05f32, 0.85f32);
    let mix = |a: f32, b: f32| a * 0.75 + b * 0.25;
    #[rustfmt::skip]
    let want = [
        mix(off, off), mix(off, on), mix(on, off), mix(off, off), // 2 with 1
        mix(on, on), mix(off, off), mix(off, off), mix(off, off), // 0 with 0
        mix(on, on), mix(off, off), mix(off, off), mix(off, off),
        mix(off, off), mix(on, off), mix(off, on), mix(off, off), // 1 with 2
    ];
    assert_eq!(y, want);
    for row in y.chunks(4) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
    assert_eq!(
        mixup_target(&[0, 4], 4, 1.0, 0.0),
        Err(MixError::LabelRange {
            label: 4,
            num_classes: 4
        })
    );
    assert!(mixup_target(&[-1, 0], 4, 1.0, 0.0).is_err());
}

#[test]
fn odd_batches_and_bad_shapes_are_errors() {
    let m = Mixup::new(0.8, 1.0, 1.0, 0.5, 0.1, 10).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut x = vec![0f32; 3 * 3 * 4 * 4];
    assert_eq!(
        m.mix(&mut x, &[1, 2, 3], 4, 4, &mut rng),
        Err(MixError::OddBatch(3))
    );
    let mut x = vec![0f32; 2 * 3 * 4 * 4 + 1];
    assert!(matches!(
        m.mix(&mut x, &[1, 2], 4, 4, &mut rng),
        Err(MixError::Shape { .. })
    ));
    assert!(Mixup::new(-1.0, 0.0, 1.0, 0.5, 0.1, 10).is_err());
    assert!(Mixup::new(0.8, 1.0, 1.5, 0.5, 0.1, 10).is_err());
    assert!(Mixup::new(0.8, 1.0, 1.0, 0.5, 0.1, 0).is_err());
}

#[test]
fn inactive_mixup_leaves_images_and_smooths_labels() {
    let m = Mixup::new(0.0, 0.0, 1.0, 0.5, 0.1, 5).unwrap();
    assert!(!m.is_active());
    assert!(Mixup::new(0.0, 1.0, 1.0, 0.5, 0.1, 5).unwrap().is_active());
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let orig: Vec<f32> = (0..2 * 3 * 2 * 2).map(|v| v as f32).collect();
    let mut x = orig.clone();
    let (y, p) = m.mix(&mut x, &[4, 1], 2, 2, &mut rng).unwrap();
    assert_eq!(p, MixParams::NONE);
    assert_eq!(x, orig);
    assert_eq!(y[4], 0.92);
    assert_eq!(y[0], 0.02);
    assert_eq!(y[5 + 1], 0.92);
}

#[test]
fn cutmix_swaps_only_the_box_between_mirrored_images() {
    let (b, c, h, w) = (4, 3, 5, 6);
    let orig: Vec<f32> = (0..b * c * h * w).map(|v| v as f32).collect();
    let mut x = orig.clone();
    let cb = CutBox {
        y0: 1,
        y1: 5,
        x0: 0,
        x1: 2,
    };
    let p = MixParams {
        lam: 1.0 - cb.area() as f64 / (h * w) as f64,
        kind: MixKind::CutMix(cb),
    };
    mix_images(&p, &mut x, b, h, w).unwrap();
    for i in 0..b {
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    let at = |img: usize| ((img * c + ch) * h + y) * w + xx;
                    let inside = (1..5).contains(&y) && xx < 2;
                    let src = if inside { b - 1 - i } else { i };
                    assert_eq!(x[at(i)], orig[at(src)]);
                }
            }
        }
    }
}

/// Our per-batch draws in timm's encoding: (lambda as f32, kind 0 none / 1 mixup / 2 cutmix).
fn our_draws(m: &Mixup, size: usize, n: usize) -> Vec<(f32, u8)> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    (0..n)
        .map(|_| {
            let p = m.sample(size, size, &mut rng);
            let kind = match p.kind {
                MixKind::None => 0,
                MixKind::Mixup => 1,
                MixKind::CutMix(b) => {
                    assert!(b.y1 <= size && b.x1 <= size);
                    if m.correct_lam {
                        assert_eq!(p.lam, 1.0 - b.area() as f64 / (size * size) as f64);
                    }
                    2
                }
            };
            (p.lam as f32, kind)
        })
        .collect()
}

fn timm_draws() -> Vec<(f32, u8)> {
    read("mixup_draws.bin")
        .chunks_exact(5)
        .map(|b| (f32::from_le_bytes(b[..4].try_into().unwrap()), b[4]))
        .collect()
}

/// p-values: (mixed fraction, cutmix among mixed, mixup lambda KS, cutmix lambda KS).
fn mixup_p(m: &Mixup) -> [f64; 4] {
    let theirs = timm_draws();
    let ours = our_draws(m, 224, theirs.len());
    let count = |v: &[(f32, u8)], k: u8| v.iter().filter(|d| d.1 == k).count();
    let lams = |v: &[(f32, u8)], k: u8| -> Vec<f64> {
        v.iter().filter(|d| d.1 == k).map(|d| d.0 as f64).collect()
    };
    let n = theirs.len();
    let (o_none, t_none) = (count(&ours, 0), count(&theirs, 0));
    let (o_cut, t_cut) = (count(&ours, 2), count(&theirs, 2));
    let p_mixed = proportions_test(n - o_none, n, n - t_none, n);
    let p_switch = proportions_test(o_cut, n - o_none, t_cut, n - t_none);
    let (d_mix, p_mix) = ks_test(&lams(&ours, 1), &lams(&theirs, 1));
    let (d_cut, p_cut) = ks_test(&lams(&ours, 2), &lams(&theirs, 2));
    eprintln!(
        "mixup {}/{} prob {} switch {}: unmixed {o_none} vs {t_none} (p {p_mixed:.3}), cutmix \
         {o_cut} vs {t_cut} (p {p_switch:.3}), mixup lam D {d_mix:.4} p {p_mix:.3}, cutmix lam \
         D {d_cut:.4} p {p_cut:.3}",
        m.mixup_alpha, m.cutmix_alpha, m.prob, m.switch_prob
    );
    [p_mixed, p_switch, p_mix, p_cut]
}

fn recipe() -> Mixup {
    let meta = meta();
    let d = &meta["mixup_draws"];
    let f = |k: &str| d[k].as_f64().unwrap();
    Mixup::new(
        f("mixup_alpha"),
        f("cutmix_alpha"),
        f("prob"),
        f("switch_prob"),
        f("label_smoothing"),
        d["num_classes"].as_u64().unwrap() as usize,
    )
    .unwrap()
}

#[test]
fn mix_draws_match_timm() {
    let m = recipe();
    assert_eq!(
        (m.mixup_alpha, m.cutmix_alpha, m.prob, m.switch_prob),
        (0.8, 1.0, 0.9, 0.5)
    );
    let p = mixup_p(&m);
    assert!(p.iter().all(|&p| p > ALPHA), "{p:?}");
}

#[test]
fn mix_draw_tests_detect_wrong_settings() {
    let mut m = recipe();
    m.switch_prob = 0.6;
    assert!(mixup_p(&m)[1] < ALPHA, "switch_prob 0.6 not detected");
    let mut m = recipe();
    m.prob = 0.85;
    assert!(mixup_p(&m)[0] < ALPHA, "prob 0.85 not detected");
    let mut m = recipe();
    m.mixup_alpha = 1.0;
    assert!(mixup_p(&m)[2] < ALPHA, "mixup_alpha 1.0 not detected");
    let mut m = recipe();
    m.correct_lam = false;
    assert!(
        mixup_p(&m)[3] < ALPHA,
        "uncorrected cutmix lambda not detected"
    );
}

#[test]
fn single_mode_mixups_use_their_own_alpha() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let cut = Mixup::new(0.0, 1.0, 1.0, 0.5, 0.1, 10).unwrap();
    let only = Mixup::new(0.8, 0.0, 1.0, 0.5, 0.1, 10).unwrap();
    for _ in 0..1000 {
        assert!(matches!(
            cut.sample(32, 32, &mut rng).kind,
            MixKind::CutMix(_) | MixKind::None
        ));
        assert!(matches!(
            only.sample(32, 32, &mut rng).kind,
            MixKind::Mixup | MixKind::None
        ));
    }
    let mut off = only;
    off.enabled = false;
    assert_eq!(off.sample(32, 32, &mut rng), MixParams::NONE);
}

/// Timing only (run with `--release -- --ignored --nocapture`): mixing a [128, 3, 224, 224] batch.
#[test]
#[ignore]
fn throughput() {
    let (b, s) = (128, 224);
    let mut x: Vec<f32> = (0..b * 3 * s * s).map(|v| (v % 1000) as f32).collect();
    let labels: Vec<i64> = (0..b as i64).collect();
    let m = Mixup::new(0.8, 1.0, 1.0, 0.5, 0.1, 1000).unwrap();
    for (name, kind) in [
        ("mixup", MixKind::Mixup),
        (
            "cutmix",
            MixKind::CutMix(CutBox {
                y0: 10,
                y1: 150,
                x0: 20,
                x1: 200,
            }),
        ),
    ] {
        let p = MixParams { lam: 0.4, kind };
        let start = std::time::Instant::now();
        for _ in 0..5 {
            m.apply(&p, &mut x, &labels, s, s).unwrap();
        }
        let per = start.elapsed().as_secs_f64() / 5.0;
        eprintln!(
            "{name} of [{b}, 3, {s}, {s}]: {:.1} ms per batch",
            per * 1e3
        );
    }
}
