//! Small statistics for the distribution tests: the two-sample Kolmogorov-Smirnov test with the
//! asymptotic Kolmogorov distribution, and a two-sample test of proportions.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/train")
}

pub fn meta() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("meta.json")).unwrap()).unwrap()
}

pub fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn read_f32(name: &str) -> Vec<f32> {
    read(name)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// (h, w) pairs stored as little-endian u16.
pub fn read_hw(name: &str) -> Vec<(usize, usize)> {
    read(name)
        .chunks_exact(4)
        .map(|b| {
            (
                u16::from_le_bytes([b[0], b[1]]) as usize,
                u16::from_le_bytes([b[2], b[3]]) as usize,
            )
        })
        .collect()
}

/// The two-sample KS statistic: the largest gap between the empirical CDFs, evaluated after
/// each distinct value (ties in either sample advance together).
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut d: f64 = 0.0;
    while i < a.len() && j < b.len() {
        let v = a[i].min(b[j]);
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    d
}

/// Q_KS(x) = 2 sum_{k>=1} (-1)^(k-1) exp(-2 k^2 x^2), the Kolmogorov survival function.
pub fn kolmogorov_q(x: f64) -> f64 {
    if x < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = k as f64;
        let term = (-2.0 * k * k * x * x).exp();
        sum += if k as i64 % 2 == 1 { term } else { -term };
        if term < 1e-16 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// (D, p) of the two-sample KS test, p from the asymptotic distribution with Stephens'
/// small-sample correction (as in Numerical Recipes' `kstwo`).
pub fn ks_test(a: &[f64], b: &[f64]) -> (f64, f64) {
    let d = ks_statistic(a, b);
    let ne = (a.len() * b.len()) as f64 / (a.len() + b.len()) as f64;
    let en = ne.sqrt();
    (d, kolmogorov_q((en + 0.12 + 0.11 / en) * d))
}

/// erfc(x) for x >= 0 (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let ans = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

/// Two-sided p of the pooled z-test that `k1 / n1` and `k2 / n2` estimate the same proportion.
pub fn proportions_test(k1: usize, n1: usize, k2: usize, n2: usize) -> f64 {
    let (p1, p2) = (k1 as f64 / n1 as f64, k2 as f64 / n2 as f64);
    let p = (k1 + k2) as f64 / (n1 + n2) as f64;
    let se = (p * (1.0 - p) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    if se == 0.0 {
        return if p1 == p2 { 1.0 } else { 0.0 };
    }
    erfc(((p1 - p2) / se).abs() / std::f64::consts::SQRT_2)
}

/// Two-sided p of the z-test that `k / n` estimates `p`.
pub fn proportion_test(k: usize, n: usize, p: f64) -> f64 {
    let se = (p * (1.0 - p) / n as f64).sqrt();
    erfc(((k as f64 / n as f64 - p) / se).abs() / std::f64::consts::SQRT_2)
}

#[test]
fn ks_helpers_behave() {
    // Known values of the Kolmogorov distribution: Q(1.3581) ~ 0.05, Q(1.6276) ~ 0.01.
    assert!((kolmogorov_q(1.3581) - 0.05).abs() < 1e-3);
    assert!((kolmogorov_q(1.6276) - 0.01).abs() < 1e-3);
    // Identical samples: D = 0; disjoint ones: D = 1.
    let a: Vec<f64> = (0..100).map(|v| v as f64).collect();
    assert_eq!(ks_statistic(&a, &a), 0.0);
    let b: Vec<f64> = (200..300).map(|v| v as f64).collect();
    assert_eq!(ks_statistic(&a, &b), 1.0);
    assert!(ks_test(&a, &b).1 < 1e-10);
    // erfc(1) = 0.157299...
    assert!((erfc(1.0) - 0.157_299_207).abs() < 1e-6);
}
