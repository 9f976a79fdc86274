//! RandAugment against timm 0.5.4 + Pillow (fixtures/gen/make_augment.py), the policy grammar,
//! and the sampler's distributions.
//!
//! Measured against the committed fixtures (`cargo test -p illama-data --test rand_augment --
//! --nocapture geometric`): every op, point (89 cases) and geometric (70 cases, 107,345
//! pixels), matches bit for bit (max |diff| 0 on 100% of pixels). The geometric bound below
//! (<= 1 grey level on >= 99.9% of pixels) is the contract, looser than what we measure.

use illama_data::augment::ops::Resample;
use illama_data::augment::{
    parse_policy, Hparams, OpName, PolicyError, RandAugment, RandAugmentConfig, Step, Transform,
};
use illama_data::{decode_rgb, Rgb8};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/augment")
}

fn load(name: &str) -> Rgb8 {
    let p = dir().join(name);
    let bytes =
        std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {} missing: {e}", p.display()));
    decode_rgb(&bytes).unwrap()
}

fn op_by_name(name: &str) -> OpName {
    illama_data::augment::rand_augment::RAND_INCREASING_TRANSFORMS
        .into_iter()
        .find(|op| op.as_str() == name)
        .unwrap_or_else(|| panic!("unknown op {name}"))
}

/// The fixture cases, each with our transform (checked against timm's level-function output).
fn cases() -> Vec<(Value, Rgb8, Rgb8, Transform)> {
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("index.json")).unwrap()).unwrap();
    let inputs: HashMap<String, Rgb8> = index["inputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), load(v["file"].as_str().unwrap())))
        .collect();
    let cases = index["cases"].as_array().unwrap();
    assert!(
        cases.len() >= 150,
        "fixture index lost cases: {}",
        cases.len()
    );
    let hp = Hparams::imagenet_bicubic();
    cases
        .iter()
        .map(|c| {
            let op = op_by_name(c["op"].as_str().unwrap());
            let m = c["magnitude"].as_f64().unwrap_or(10.0);
            let neg = c["negative"].as_bool().unwrap();
            let t = op.to_transform(m, neg, hp.translate_pct);
            let args: Vec<f64> = c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_f64().unwrap())
                .collect();
            let ours: Vec<f64> = match t {
                Transform::AutoContrast | Transform::Equalize | Transform::Invert => vec![],
                Transform::Posterize(v) | Transform::Solarize(v) | Transform::SolarizeAdd(v) => {
                    vec![v as f64]
                }
                Transform::Rotate(v)
                | Transform::Color(v)
                | Transform::Contrast(v)
                | Transform::Brightness(v)
                | Transform::Sharpness(v)
                | Transform::ShearX(v)
                | Transform::ShearY(v)
                | Transform::TranslateXRel(v)
                | Transform::TranslateYRel(v) => vec![v],
            };
            assert_eq!(ours, args, "level function of {c}");
            let input = inputs[c["input"].as_str().unwrap()].clone();
            let expected = load(c["expected"].as_str().unwrap());
            (c.clone(), input, expected, t)
        })
        .collect()
}

fn run(t: &Transform, input: &Rgb8) -> Rgb8 {
    let hp = Hparams::imagenet_bicubic();
    let mut img = input.clone();
    let mut scratch = vec![7u8; 5];
    t.apply(&mut img, hp.fill, Resample::Bicubic, &mut scratch);
    img
}

#[test]
fn point_ops_match_pillow_exactly() {
    let mut n = 0;
    for (c, input, expected, t) in cases().iter().filter(|c| c.0["exact"] == true) {
        let got = run(t, input);
        assert_eq!((got.width, got.height), (expected.width, expected.height));
        let bad = got
            .data
            .iter()
            .zip(&expected.data)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(bad, 0, "{c}: {bad} values differ");
        n += 1;
    }
    assert!(n >= 80, "{n} point cases");
}

#[test]
fn geometric_ops_within_one_level() {
    let mut n = 0;
    let (mut worst, mut total, mut off_by_one, mut differing) = (0i32, 0usize, 0usize, 0usize);
    for (c, input, expected, t) in cases().iter().filter(|c| c.0["exact"] == false) {
        let got = run(t, input);
        assert_eq!((got.width, got.height), (expected.width, expected.height));
        let pixels = got.width * got.height;
        let mut bad_pixels = 0;
        for (g, e) in got.data.chunks_exact(3).zip(expected.data.chunks_exact(3)) {
            let d = (0..3)
                .map(|i| (g[i] as i32 - e[i] as i32).abs())
                .max()
                .unwrap();
            worst = worst.max(d);
            assert!(d <= 1, "{c}: a pixel differs by {d}");
            if d > 0 {
                bad_pixels += 1;
                off_by_one += 1;
            }
        }
        assert!(
            bad_pixels as f64 <= pixels as f64 * 0.001,
            "{c}: {bad_pixels} of {pixels} pixels off by one"
        );
        total += pixels;
        differing += (bad_pixels > 0) as usize;
        n += 1;
    }
    println!(
        "geometric: {n} cases, {total} pixels, max |diff| {worst}, {off_by_one} pixels off by one, \
         {differing} cases with any difference"
    );
    assert!(n >= 60, "{n} geometric cases");
}

#[test]
fn magnitude_zero_is_identity() {
    let img = load("cat.png");
    let hp = Hparams::imagenet_bicubic();
    for op in illama_data::augment::rand_augment::RAND_INCREASING_TRANSFORMS {
        // PosterizeIncreasing keeps 4 bits at magnitude 0.
        if matches!(
            op,
            OpName::AutoContrast | OpName::Equalize | OpName::Invert | OpName::PosterizeIncreasing
        ) {
            continue;
        }
        for neg in [false, true] {
            let got = run(&op.to_transform(0.0, neg, hp.translate_pct), &img);
            assert!(got == img, "{op} at magnitude 0 changed the image");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Policy grammar

#[test]
fn parses_valid_policies() {
    assert_eq!(parse_policy("none"), Ok(None));
    let c = parse_policy("rand-m9-mstd0.5-inc1").unwrap().unwrap();
    assert_eq!(
        c,
        RandAugmentConfig {
            magnitude: 9.0,
            num_layers: 2,
            magnitude_std: 0.5,
            magnitude_max: None,
            increasing: true,
            weights: None,
        }
    );
    let c: RandAugmentConfig = "rand-n3-m7-mmax15-mstd101".parse().unwrap();
    assert_eq!(
        (c.magnitude, c.num_layers, c.magnitude_max, c.increasing),
        (7.0, 3, Some(15), false)
    );
    assert!(c.magnitude_std.is_infinite(), "mstd > 100 means uniform");
    let c: RandAugmentConfig = "rand".parse().unwrap();
    assert_eq!(c, RandAugmentConfig::default());
    assert_eq!((c.magnitude, c.num_layers), (10.0, 2));
    // timm quirks kept: `bool("0")` is true; m/n last wins, mstd first wins.
    assert!("rand-inc0".parse::<RandAugmentConfig>().unwrap().increasing);
    let c: RandAugmentConfig = "rand-m3-m5-mstd1-mstd2-w0".parse().unwrap();
    assert_eq!(
        (c.magnitude, c.magnitude_std, c.weights),
        (5.0, 1.0, Some(0))
    );
}

#[test]
fn rejects_invalid_policies() {
    let err = |s: &str| parse_policy(s).unwrap_err();
    assert!(matches!(err("original-mstd0.5"), PolicyError::NotRand(_)));
    assert!(matches!(err("augmix-m5"), PolicyError::NotRand(_)));
    assert!(matches!(err(""), PolicyError::NotRand(_)));
    assert!(matches!(err("Rand-m9"), PolicyError::NotRand(_)));
    assert!(matches!(err("rand-x9"), PolicyError::UnknownSection(_)));
    assert!(matches!(err("rand-9"), PolicyError::UnknownSection(_)));
    assert!(matches!(err("rand-incl"), PolicyError::MissingValue(_)));
    assert!(matches!(err("rand-m9-"), PolicyError::MissingValue(_)));
    assert!(matches!(err("rand-m9.5"), PolicyError::BadValue { .. }));
    assert!(matches!(err("rand-n2x"), PolicyError::BadValue { .. }));
    assert!(matches!(
        err("rand-mstd0.5.1"),
        PolicyError::BadValue { .. }
    ));
    assert!(matches!(err("rand-w1"), PolicyError::UnknownWeights(1)));
    assert!(matches!(
        err("rand-w0-n14"),
        PolicyError::TooManyLayers {
            layers: 14,
            nonzero: 13
        }
    ));
    assert!(parse_policy("rand-w0-n13").is_ok());
    assert!("none".parse::<RandAugmentConfig>().is_err());
}

// ---------------------------------------------------------------------------------------------
// Sampler distributions (seeded, so deterministic; tolerances are ~5 standard errors)

fn draws(policy: &str, images: usize) -> Vec<Step> {
    let cfg: RandAugmentConfig = policy.parse().unwrap();
    let ra = RandAugment::new(&cfg, Hparams::imagenet_bicubic());
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let mut all = Vec::new();
    let mut steps = Vec::new();
    for _ in 0..images {
        ra.sample_into(&mut rng, &mut steps);
        assert_eq!(steps.len(), cfg.num_layers);
        all.extend_from_slice(&steps);
    }
    all
}

#[test]
fn ops_uniform_with_replacement_applied_half_the_time() {
    let steps = draws("rand-m9-mstd0.5-inc1", 100_000);
    let n = steps.len() as f64;
    let mut counts: HashMap<OpName, usize> = HashMap::new();
    for s in &steps {
        *counts.entry(s.op).or_default() += 1;
    }
    assert_eq!(counts.len(), 15);
    let p = 1.0 / 15.0;
    let se = (p * (1.0 - p) / n).sqrt();
    for (op, c) in &counts {
        let f = *c as f64 / n;
        assert!(
            (f - p).abs() < 5.0 * se,
            "{op}: frequency {f}, expected {p}"
        );
    }
    let applied = steps.iter().filter(|s| s.applied.is_some()).count() as f64 / n;
    let se = (0.25 / n).sqrt();
    assert!(
        (applied - 0.5).abs() < 5.0 * se,
        "application rate {applied}"
    );
    // Same op twice on one image happens (with replacement): 1/15 of images.
    let twice = steps.chunks(2).filter(|p| p[0].op == p[1].op).count() as f64 / (n / 2.0);
    assert!((twice - p).abs() < 0.005, "repeat rate {twice}");
    // Signed ops negate half the time.
    let signed: Vec<_> = steps
        .iter()
        .filter_map(|s| s.applied.map(|a| (s.op, a)))
        .filter(|(op, a)| *op == OpName::Rotate && a.magnitude > 0.0)
        .collect();
    let neg = signed
        .iter()
        .filter(|(_, a)| matches!(a.transform, Transform::Rotate(d) if d < 0.0))
        .count() as f64
        / signed.len() as f64;
    assert!(
        (neg - 0.5).abs() < 5.0 * (0.25 / signed.len() as f64).sqrt(),
        "negation {neg}"
    );
}

/// Mean, std and the clipped mass at both ends of the applied magnitudes.
fn magnitude_stats(policy: &str) -> (f64, f64, f64, f64, usize) {
    let mags: Vec<f64> = draws(policy, 100_000)
        .iter()
        .filter_map(|s| s.applied.map(|a| a.magnitude))
        .collect();
    let n = mags.len() as f64;
    let mean = mags.iter().sum::<f64>() / n;
    let std = (mags.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / n).sqrt();
    let at0 = mags.iter().filter(|&&m| m == 0.0).count() as f64 / n;
    let at10 = mags.iter().filter(|&&m| m == 10.0).count() as f64 / n;
    assert!(mags.iter().all(|&m| (0.0..=10.0).contains(&m)));
    (mean, std, at0, at10, mags.len())
}

#[test]
fn magnitude_is_clipped_gaussian() {
    // N(9, 0.5) clipped to [0, 10]: P(>10) = 1 - Phi(2) = 0.02275; mean 9 - 0.5 * (phi(2) -
    // 2 (1 - Phi(2))) = 8.99575; std 0.4863 (numerically integrated).
    let (mean, std, at0, at10, n) = magnitude_stats("rand-m9-mstd0.5-inc1");
    let n = n as f64;
    assert!((mean - 8.99575).abs() < 5.0 * 0.5 / n.sqrt(), "mean {mean}");
    assert!((std - 0.4863).abs() < 0.005, "std {std}");
    assert_eq!(at0, 0.0);
    assert!(
        (at10 - 0.02275).abs() < 5.0 * (0.02275f64 * 0.97725 / n).sqrt(),
        "at 10: {at10}"
    );
    // N(1, 2) clipped: P(<0) = Phi(-0.5) = 0.30854, P(>10) = 1 - Phi(4.5) ~ 3.4e-6.
    let (_, _, at0, at10, n) = magnitude_stats("rand-m1-mstd2");
    let se = (0.30854f64 * 0.69146 / n as f64).sqrt();
    assert!((at0 - 0.30854).abs() < 5.0 * se, "at 0: {at0}");
    assert!(at10 < 1e-4);
    // No noise: always exactly m.
    let (mean, std, ..) = magnitude_stats("rand-m7");
    assert_eq!((mean, std), (7.0, 0.0));
    // mstd > 100: uniform on [0, m].
    let (mean, std, ..) = magnitude_stats("rand-m8-mstd101");
    assert!((mean - 4.0).abs() < 0.03 && (std - 8.0 / 12f64.sqrt()).abs() < 0.03);
}

#[test]
fn weighted_choice_draws_without_replacement() {
    let steps = draws("rand-w0-n2", 50_000);
    assert!(steps.chunks(2).all(|p| p[0].op != p[1].op));
    assert!(steps
        .iter()
        .all(|s| !matches!(s.op, OpName::Posterize | OpName::Invert)));
    // First draw of each image follows the weights: Rotate 0.3.
    let rot = steps
        .chunks(2)
        .filter(|p| p[0].op == OpName::Rotate)
        .count() as f64
        / 50_000.0;
    assert!(
        (rot - 0.3).abs() < 5.0 * (0.21f64 / 50_000.0).sqrt(),
        "rotate first {rot}"
    );
}

#[test]
fn apply_runs_the_sampled_ops() {
    let cfg: RandAugmentConfig = "rand-m9-mstd0.5-inc1".parse().unwrap();
    let ra = RandAugment::new(&cfg, Hparams::imagenet_bicubic());
    let img = load("cat.png");
    let (mut r1, mut r2) = (ChaCha8Rng::seed_from_u64(3), ChaCha8Rng::seed_from_u64(3));
    let (mut steps, mut scratch) = (Vec::new(), Vec::new());
    let mut changed = 0;
    for _ in 0..200 {
        let mut a = img.clone();
        ra.apply_with(&mut a, &mut r1, &mut steps, &mut scratch);
        // Replaying the same draws op by op gives the same image.
        let mut b = img.clone();
        let mut replay = Vec::new();
        ra.sample_into(&mut r2, &mut replay);
        assert_eq!(replay, steps);
        for s in &replay {
            if let Some(x) = s.applied {
                b = run(&x.transform, &b);
            }
        }
        assert_eq!(a, b);
        changed += (a != img) as usize;
    }
    // P(no op applied) = 1/4; some applied ops can leave this image unchanged.
    assert!((100..=170).contains(&changed), "{changed} of 200 changed");
}
