//! The 15 image operations of timm's RandAugment, with the semantics of the PIL calls timm makes
//! (`ImageOps`, `ImageEnhance`, `Image.rotate`, `Image.transform(AFFINE)`).
//!
//! Point operations work in place through a 256-entry table per channel. Blends (`color`,
//! `sharpness`) compute in `f32` in PIL's operation order. Geometric operations iterate over the
//! output pixels in `f64` in PIL's operation order, sharing per-pixel source positions and
//! offsets across the three channels.

use crate::Rgb8;

/// Resampling filter of the geometric operations (PIL's numbering has NEAREST too; timm never
/// passes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    Bilinear,
    Bicubic,
}

/// One operation with its argument, as timm's level functions produce it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    AutoContrast,
    Equalize,
    Invert,
    /// Degrees, counter-clockwise (PIL's `Image.rotate`).
    Rotate(f64),
    /// Bits kept per channel; `>= 8` is the identity, `<= 0` gives black.
    Posterize(i32),
    /// Values `>= threshold` are inverted.
    Solarize(i32),
    /// Values `< 128` get `add` added, saturating at 255.
    SolarizeAdd(i32),
    Color(f64),
    Contrast(f64),
    Brightness(f64),
    Sharpness(f64),
    ShearX(f64),
    ShearY(f64),
    /// Fraction of the width.
    TranslateXRel(f64),
    /// Fraction of the height.
    TranslateYRel(f64),
}

impl Transform {
    /// Applies the operation to `img`. `scratch` is reused across calls by the operations that
    /// cannot work in place (geometric ones and sharpness); it never needs to be initialised.
    pub fn apply(&self, img: &mut Rgb8, fill: [u8; 3], resample: Resample, scratch: &mut Vec<u8>) {
        match *self {
            Transform::AutoContrast => auto_contrast(img),
            Transform::Equalize => equalize(img),
            Transform::Invert => invert(img),
            Transform::Posterize(bits) => posterize(img, bits),
            Transform::Solarize(t) => solarize(img, t),
            Transform::SolarizeAdd(add) => solarize_add(img, add, 128),
            Transform::Color(f) => color(img, f),
            Transform::Contrast(f) => contrast(img, f),
            Transform::Brightness(f) => brightness(img, f),
            Transform::Sharpness(f) => {
                sharpness_into(img, f, scratch);
                std::mem::swap(&mut img.data, scratch);
            }
            Transform::Rotate(deg) => {
                if rotate_into(img, deg, resample, fill, scratch) {
                    std::mem::swap(&mut img.data, scratch);
                }
            }
            Transform::ShearX(f) => {
                affine_into(img, [1.0, f, 0.0, 0.0, 1.0, 0.0], resample, fill, scratch);
                std::mem::swap(&mut img.data, scratch);
            }
            Transform::ShearY(f) => {
                affine_into(img, [1.0, 0.0, 0.0, f, 1.0, 0.0], resample, fill, scratch);
                std::mem::swap(&mut img.data, scratch);
            }
            Transform::TranslateXRel(pct) => {
                let px = pct * img.width as f64;
                affine_into(img, [1.0, 0.0, px, 0.0, 1.0, 0.0], resample, fill, scratch);
                std::mem::swap(&mut img.data, scratch);
            }
            Transform::TranslateYRel(pct) => {
                let px = pct * img.height as f64;
                affine_into(img, [1.0, 0.0, 0.0, 0.0, 1.0, px], resample, fill, scratch);
                std::mem::swap(&mut img.data, scratch);
            }
        }
    }

    /// Whether the operation resamples (and so draws a filter when timm's is random).
    pub fn is_geometric(&self) -> bool {
        matches!(
            self,
            Transform::Rotate(_)
                | Transform::ShearX(_)
                | Transform::ShearY(_)
                | Transform::TranslateXRel(_)
                | Transform::TranslateYRel(_)
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Point operations

/// Applies one 256-entry table per channel (PIL's `Image.point` with a 768-entry table).
fn apply_luts(img: &mut Rgb8, luts: &[[u8; 256]; 3]) {
    for px in img.data.chunks_exact_mut(3) {
        px[0] = luts[0][px[0] as usize];
        px[1] = luts[1][px[1] as usize];
        px[2] = luts[2][px[2] as usize];
    }
}

fn apply_lut(img: &mut Rgb8, lut: &[u8; 256]) {
    for v in img.data.iter_mut() {
        *v = lut[*v as usize];
    }
}

fn histograms(img: &Rgb8) -> [[u32; 256]; 3] {
    let mut h = [[0u32; 256]; 3];
    for px in img.data.chunks_exact(3) {
        h[0][px[0] as usize] += 1;
        h[1][px[1] as usize] += 1;
        h[2][px[2] as usize] += 1;
    }
    h
}

/// `ImageOps.autocontrast(img)` (no cutoff): each channel stretched to 0..255.
pub fn auto_contrast(img: &mut Rgb8) {
    let hist = histograms(img);
    let mut luts = [[0u8; 256]; 3];
    for (h, lut) in hist.iter().zip(luts.iter_mut()) {
        let lo = h.iter().position(|&c| c != 0);
        let hi = h.iter().rposition(|&c| c != 0);
        match (lo, hi) {
            (Some(lo), Some(hi)) if hi > lo => {
                let scale = 255.0 / (hi - lo) as f64;
                let offset = -(lo as f64) * scale;
                for (i, out) in lut.iter_mut().enumerate() {
                    // Python's int() truncates toward zero.
                    let v = (i as f64 * scale + offset) as i64;
                    *out = v.clamp(0, 255) as u8;
                }
            }
            _ => identity(lut),
        }
    }
    apply_luts(img, &luts);
}

fn identity(lut: &mut [u8; 256]) {
    for (i, out) in lut.iter_mut().enumerate() {
        *out = i as u8;
    }
}

/// `ImageOps.equalize(img)`: per-channel histogram equalisation.
pub fn equalize(img: &mut Rgb8) {
    let hist = histograms(img);
    let mut luts = [[0u8; 256]; 3];
    for (h, lut) in hist.iter().zip(luts.iter_mut()) {
        identity(lut);
        let nonzero = h.iter().filter(|&&c| c != 0).count();
        if nonzero <= 1 {
            continue;
        }
        let last = *h.iter().rev().find(|&&c| c != 0).unwrap() as u64;
        let total: u64 = h.iter().map(|&c| c as u64).sum();
        let step = (total - last) / 255;
        if step == 0 {
            continue;
        }
        let mut n = step / 2;
        for (i, out) in lut.iter_mut().enumerate() {
            // n // step never exceeds 255 here: n <= step / 2 + total - last.
            *out = (n / step).min(255) as u8;
            n += h[i] as u64;
        }
    }
    apply_luts(img, &luts);
}

/// `ImageOps.invert(img)`.
pub fn invert(img: &mut Rgb8) {
    for v in img.data.iter_mut() {
        *v = 255 - *v;
    }
}

/// timm's `posterize`: identity for `bits >= 8`, otherwise `ImageOps.posterize`, keeping the
/// `bits` most significant bits. `bits <= 0` gives black, as Pillow < 12 did (its mask was
/// `~(2**(8 - bits) - 1)`); Pillow >= 12 raises instead.
pub fn posterize(img: &mut Rgb8, bits: i32) {
    if bits >= 8 {
        return;
    }
    let mask: u8 = if bits <= 0 {
        0
    } else {
        !((1u16 << (8 - bits)) - 1) as u8
    };
    for v in img.data.iter_mut() {
        *v &= mask;
    }
}

/// `ImageOps.solarize(img, threshold)`: values `>= threshold` inverted.
pub fn solarize(img: &mut Rgb8, threshold: i32) {
    let mut lut = [0u8; 256];
    for (i, out) in lut.iter_mut().enumerate() {
        *out = if (i as i32) < threshold {
            i as u8
        } else {
            255 - i as u8
        };
    }
    apply_lut(img, &lut);
}

/// timm's `solarize_add`: values `< threshold` get `add` added, at most 255.
pub fn solarize_add(img: &mut Rgb8, add: i32, threshold: i32) {
    let mut lut = [0u8; 256];
    for (i, out) in lut.iter_mut().enumerate() {
        let i = i as i32;
        *out = if i < threshold {
            (i + add).clamp(0, 255) as u8
        } else {
            i as u8
        };
    }
    apply_lut(img, &lut);
}

/// PIL's `Image.blend(degenerate, image, alpha)` of one 8-bit value, in C `float`.
#[inline(always)]
fn blend(degenerate: u8, image: u8, alpha: f32, interpolate: bool) -> u8 {
    let d = degenerate as i32;
    let v = d as f32 + alpha * ((image as i32 - d) as f32);
    if interpolate {
        v as u8
    } else if v <= 0.0 {
        0
    } else if v >= 255.0 {
        255
    } else {
        v as u8
    }
}

/// Blend against a constant degenerate image, as a table.
fn blend_const(img: &mut Rgb8, degenerate: u8, factor: f64) {
    let alpha = factor as f32;
    let interpolate = (0.0..=1.0).contains(&alpha);
    let mut lut = [0u8; 256];
    for (i, out) in lut.iter_mut().enumerate() {
        *out = blend(degenerate, i as u8, alpha, interpolate);
    }
    apply_lut(img, &lut);
}

/// PIL's RGB -> L conversion (ITU-R 601-2 luma, 16-bit fixed point, rounded).
#[inline(always)]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `ImageEnhance.Color(img).enhance(factor)`: blend with the greyscale image.
pub fn color(img: &mut Rgb8, factor: f64) {
    let alpha = factor as f32;
    let interpolate = (0.0..=1.0).contains(&alpha);
    for px in img.data.chunks_exact_mut(3) {
        let l = luma(px[0], px[1], px[2]);
        px[0] = blend(l, px[0], alpha, interpolate);
        px[1] = blend(l, px[1], alpha, interpolate);
        px[2] = blend(l, px[2], alpha, interpolate);
    }
}

/// `ImageEnhance.Contrast(img).enhance(factor)`: blend with a flat image at the rounded mean of
/// the greyscale histogram.
pub fn contrast(img: &mut Rgb8, factor: f64) {
    let mut sum = 0u64;
    for px in img.data.chunks_exact(3) {
        sum += luma(px[0], px[1], px[2]) as u64;
    }
    let count = (img.width * img.height) as u64;
    // ImageStat's mean is a Python float division; PIL adds 0.5 and truncates.
    let mean = if count == 0 {
        0
    } else {
        (sum as f64 / count as f64 + 0.5) as i64
    };
    blend_const(img, mean.clamp(0, 255) as u8, factor);
}

/// `ImageEnhance.Brightness(img).enhance(factor)`: blend with black.
pub fn brightness(img: &mut Rgb8, factor: f64) {
    blend_const(img, 0, factor);
}

/// `ImageEnhance.Sharpness(img).enhance(factor)`: blend with PIL's SMOOTH filter output (3x3
/// kernel 1 1 1 / 1 5 1 / 1 1 1 over 13; border pixels copied). Writes into `out`.
pub fn sharpness_into(img: &Rgb8, factor: f64, out: &mut Vec<u8>) {
    let (w, h) = (img.width, img.height);
    let src = &img.data;
    out.clear();
    out.extend_from_slice(src);
    if w < 3 || h < 3 {
        // PIL's filter returns a copy of images smaller than the kernel.
        return;
    }
    let alpha = factor as f32;
    let interpolate = (0.0..=1.0).contains(&alpha);
    let k0 = 1.0f32 / 13.0f32;
    let k1 = 5.0f32 / 13.0f32;
    let row = w * 3;
    for y in 1..h - 1 {
        let above = &src[(y - 1) * row..y * row];
        let mid = &src[y * row..(y + 1) * row];
        let below = &src[(y + 1) * row..(y + 2) * row];
        let dst = &mut out[y * row..(y + 1) * row];
        for i in 3..row - 3 {
            // PIL flips the kernel: the row below meets kernel[0..3], the row above kernel[6..9];
            // the kernel is symmetric, but the summation order is kept.
            let mut ss = 0.5f32;
            ss += below[i - 3] as f32 * k0 + below[i] as f32 * k0 + below[i + 3] as f32 * k0;
            ss += mid[i - 3] as f32 * k0 + mid[i] as f32 * k1 + mid[i + 3] as f32 * k0;
            ss += above[i - 3] as f32 * k0 + above[i] as f32 * k0 + above[i + 3] as f32 * k0;
            let smooth = if ss <= 0.0 {
                0
            } else if ss >= 255.0 {
                255
            } else {
                ss as u8
            };
            dst[i] = blend(smooth, mid[i], alpha, interpolate);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Geometric operations

/// PIL's `Image.rotate(degrees, resample, fillcolor=fill)` (no expand, centre of the image).
/// Writes into `out` and returns true, or returns false when the result is `img` itself
/// (a multiple of 360 degrees).
pub fn rotate_into(
    img: &Rgb8,
    degrees: f64,
    resample: Resample,
    fill: [u8; 3],
    out: &mut Vec<u8>,
) -> bool {
    rotate_with(img, degrees, resample, fill, out, affine_into)
}

/// [`rotate_into`] with the affine transform to use (the tests pass the reference one).
fn rotate_with(
    img: &Rgb8,
    degrees: f64,
    resample: Resample,
    fill: [u8; 3],
    out: &mut Vec<u8>,
    affine: fn(&Rgb8, [f64; 6], Resample, [u8; 3], &mut Vec<u8>),
) -> bool {
    // Python's float modulo with a positive divisor.
    let angle = degrees.rem_euclid(360.0);
    let (w, h) = (img.width, img.height);
    if angle == 0.0 {
        return false;
    }
    if angle == 180.0 {
        out.clear();
        out.extend(img.data.chunks_exact(3).rev().flatten());
        return true;
    }
    if (angle == 90.0 || angle == 270.0) && w == h {
        out.clear();
        out.resize(img.data.len(), 0);
        for y in 0..h {
            for x in 0..w {
                // 90: counter-clockwise (PIL's ROTATE_90); 270: clockwise.
                let (sx, sy) = if angle == 90.0 {
                    (w - 1 - y, x)
                } else {
                    (y, h - 1 - x)
                };
                let s = (sy * w + sx) * 3;
                out[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&img.data[s..s + 3]);
            }
        }
        return true;
    }
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let a = -angle.to_radians();
    let m0 = round15(a.cos());
    let m1 = round15(a.sin());
    let m3 = round15(-a.sin());
    let m4 = round15(a.cos());
    let m2 = m0 * -cx + m1 * -cy + 0.0 + cx;
    let m5 = m3 * -cx + m4 * -cy + 0.0 + cy;
    affine(img, [m0, m1, m2, m3, m4, m5], resample, fill, out);
    true
}

/// Python's `round(x, 15)`: to the nearest double of the decimal rounded to 15 places.
fn round15(x: f64) -> f64 {
    format!("{x:.15}").parse().unwrap_or(x)
}

/// PIL's `Image.transform(size, AFFINE, matrix, resample, fillcolor=fill)` at the same size:
/// output pixel (x, y) samples the input at `(a x' + b y' + c, d x' + e y' + f)` with
/// `x' = x + 0.5`, `y' = y + 0.5`; positions outside the input keep `fill`. Writes into `out`.
///
/// Same arithmetic as PIL per pixel; the bicubic filter skips the passes whose fractional offset
/// is exactly 0 (shears and translations have one on a whole axis), which leaves the result
/// bit-identical (see [`bicubic_pixel`]).
pub fn affine_into(img: &Rgb8, m: [f64; 6], resample: Resample, fill: [u8; 3], out: &mut Vec<u8>) {
    let (w, h) = (img.width, img.height);
    out.clear();
    out.resize(w * h * 3, 0);
    if w == 0 || h == 0 {
        return;
    }
    let (wf, hf) = (w as f64, h as f64);
    let src = &img.data;
    let row = w * 3;
    for (y, dst) in out.chunks_exact_mut(row).enumerate() {
        let yin = y as f64 + 0.5;
        // Loop invariants of PIL's `a * xin + b * yin + c` (same products, same order).
        let (byin, eyin) = (m[1] * yin, m[4] * yin);
        for (x, px) in dst.chunks_exact_mut(3).enumerate() {
            let xin = x as f64 + 0.5;
            let xx = m[0] * xin + byin + m[2];
            let yy = m[3] * xin + eyin + m[5];
            // Also rejects NaN.
            if !(xx >= 0.0 && xx < wf && yy >= 0.0 && yy < hf) {
                px.copy_from_slice(&fill);
                continue;
            }
            match resample {
                Resample::Bicubic => bicubic_pixel(src, w, h, xx, yy, px),
                Resample::Bilinear => bilinear_pixel(src, w, h, xx, yy, px),
            }
        }
    }
}

#[inline(always)]
fn clip_index(i: i64, n: usize) -> usize {
    i.clamp(0, n as i64 - 1) as usize
}

/// PIL's transform cubic (a = -1), Horner form in PIL's order.
#[inline(always)]
fn cubic(v1: f64, v2: f64, v3: f64, v4: f64, d: f64) -> f64 {
    let p1 = v2;
    let p2 = -v1 + v3;
    let p3 = 2.0 * (v1 - v2) + v3 - v4;
    let p4 = -v1 + v2 - v3 + v4;
    p1 + d * (p2 + d * (p3 + d * p4))
}

/// The `u8` of a filtered value, as PIL clips it.
#[inline(always)]
fn clip8(r: f64) -> u8 {
    if r <= 0.0 {
        0
    } else if r >= 255.0 {
        255
    } else {
        r as u8
    }
}

/// PIL's bicubic sample at `(xx, yy)`: a horizontal cubic on each of the 4 source rows, then a
/// vertical cubic on the 4 results, per channel, in `f64`, edges repeated.
///
/// A pass whose fractional offset is exactly 0 is skipped: `cubic(v1, v2, v3, v4, 0.0)` is
/// `v2 + 0.0 * (finite)`, which is `v2` up to the sign of a zero, and the sign of a zero changes
/// no non-zero sum or product downstream nor the final clip (`<= 0.0` gives 0 for both). Shears
/// and translations have such an offset on a whole axis (and a translation by a whole number of
/// pixels on both), so they cost one cubic per channel instead of five.
#[inline(always)]
fn bicubic_pixel(src: &[u8], w: usize, h: usize, xx: f64, yy: f64, px: &mut [u8]) {
    let xs = xx - 0.5;
    let ys = yy - 0.5;
    let (fx, ix) = floor_i(xs);
    let (fy, iy) = floor_i(ys);
    let dx = xs - fx;
    let dy = ys - fy;
    let x = ix - 1;
    let y = iy - 1;
    let c1 = clip_index(x + 1, w) * 3;
    let r1 = clip_index(y + 1, h) * w * 3;
    if dy == 0.0 {
        if dx == 0.0 {
            px.copy_from_slice(&src[r1 + c1..r1 + c1 + 3]);
            return;
        }
        let c0 = clip_index(x, w) * 3;
        let c2 = clip_index(x + 2, w) * 3;
        let c3 = clip_index(x + 3, w) * 3;
        let s = &src[r1..r1 + w * 3];
        for (b, out) in px.iter_mut().enumerate() {
            let at = |c: usize| s[c + b] as f64;
            *out = clip8(cubic(at(c0), at(c1), at(c2), at(c3), dx));
        }
        return;
    }
    let rows = [
        clip_index(y, h) * w * 3,
        r1,
        clip_index(y + 2, h) * w * 3,
        clip_index(y + 3, h) * w * 3,
    ];
    if dx == 0.0 {
        for (b, out) in px.iter_mut().enumerate() {
            let at = |r: usize| src[r + c1 + b] as f64;
            *out = clip8(cubic(
                at(rows[0]),
                at(rows[1]),
                at(rows[2]),
                at(rows[3]),
                dy,
            ));
        }
        return;
    }
    let cols = [
        clip_index(x, w) * 3,
        c1,
        clip_index(x + 2, w) * 3,
        clip_index(x + 3, w) * 3,
    ];
    // The three channels side by side (a fourth lane, unused, so that they fill vector
    // registers); each lane does exactly the scalar operations.
    let at = |r: usize, c: usize| {
        let s = &src[r + c..r + c + 3];
        [s[0] as f64, s[1] as f64, s[2] as f64, 0.0]
    };
    let mut v = [[0f64; 4]; 4];
    for (vr, &r) in v.iter_mut().zip(rows.iter()) {
        *vr = cubic_lanes(
            at(r, cols[0]),
            at(r, cols[1]),
            at(r, cols[2]),
            at(r, cols[3]),
            dx,
        );
    }
    let r = cubic_lanes(v[0], v[1], v[2], v[3], dy);
    px[0] = clip8(r[0]);
    px[1] = clip8(r[1]);
    px[2] = clip8(r[2]);
}

/// [`cubic`] on each of 4 lanes.
#[inline(always)]
fn cubic_lanes(v1: [f64; 4], v2: [f64; 4], v3: [f64; 4], v4: [f64; 4], d: f64) -> [f64; 4] {
    let mut r = [0f64; 4];
    for i in 0..4 {
        r[i] = cubic(v1[i], v2[i], v3[i], v4[i], d);
    }
    r
}

/// `(x.floor(), x.floor() as i64)` for finite `x` well inside the `i64` range, without the libm
/// call that `floor` is on baseline x86-64. The float may differ from `floor` only in the sign
/// of a zero (`-0.0` gives `+0.0`), which changes no offset `x - floor` but its zero's sign.
#[inline(always)]
fn floor_i(x: f64) -> (f64, i64) {
    let t = x as i64;
    let t = t - ((t as f64) > x) as i64;
    (t as f64, t)
}

#[inline(always)]
fn bilinear_pixel(src: &[u8], w: usize, h: usize, xx: f64, yy: f64, px: &mut [u8]) {
    let xs = xx - 0.5;
    let ys = yy - 0.5;
    let (fx, x) = floor_i(xs);
    let (fy, y) = floor_i(ys);
    let dx = xs - fx;
    let dy = ys - fy;
    let c0 = clip_index(x, w) * 3;
    let c1 = clip_index(x + 1, w) * 3;
    let r0 = clip_index(y, h) * w * 3;
    let r1 = clip_index(y + 1, h) * w * 3;
    for (b, out) in px.iter_mut().enumerate() {
        let lerp = |r: usize| {
            let a = src[r + c0 + b] as i32;
            let d = src[r + c1 + b] as i32 - a;
            a as f64 + d as f64 * dx
        };
        let v1 = lerp(r0);
        let v2 = lerp(r1);
        *out = (v1 + (v2 - v1) * dy) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The straightforward per-pixel form of [`affine_into`] (the reference of its tests).
    /// PIL's `Image.transform(size, AFFINE, matrix, resample, fillcolor=fill)` at the same size:
    /// output pixel (x, y) samples the input at `(a x' + b y' + c, d x' + e y' + f)` with
    /// `x' = x + 0.5`, `y' = y + 0.5`; positions outside the input keep `fill`. Writes into `out`.
    fn affine_into_reference(
        img: &Rgb8,
        m: [f64; 6],
        resample: Resample,
        fill: [u8; 3],
        out: &mut Vec<u8>,
    ) {
        let (w, h) = (img.width, img.height);
        out.clear();
        out.reserve(w * h * 3);
        for _ in 0..w * h {
            out.extend_from_slice(&fill);
        }
        if w == 0 || h == 0 {
            return;
        }
        let (wf, hf) = (w as f64, h as f64);
        let src = &img.data;
        let row = w * 3;
        for y in 0..h {
            let yin = y as f64 + 0.5;
            let dst = &mut out[y * row..(y + 1) * row];
            for x in 0..w {
                let xin = x as f64 + 0.5;
                let xx = m[0] * xin + m[1] * yin + m[2];
                let yy = m[3] * xin + m[4] * yin + m[5];
                // Also rejects NaN.
                if !(xx >= 0.0 && xx < wf && yy >= 0.0 && yy < hf) {
                    continue;
                }
                let px = &mut dst[x * 3..x * 3 + 3];
                match resample {
                    Resample::Bicubic => bicubic_pixel_reference(src, w, h, xx, yy, px),
                    Resample::Bilinear => bilinear_pixel_reference(src, w, h, xx, yy, px),
                }
            }
        }
    }

    fn bicubic_pixel_reference(src: &[u8], w: usize, h: usize, xx: f64, yy: f64, px: &mut [u8]) {
        let xs = xx - 0.5;
        let ys = yy - 0.5;
        let fx = xs.floor();
        let fy = ys.floor();
        let dx = xs - fx;
        let dy = ys - fy;
        let x = fx as i64 - 1;
        let y = fy as i64 - 1;
        // Rows and columns outside the image repeat the edge (PIL's XCLIP/YCLIP, and its reuse of
        // the previous row's value below the bottom edge, amount to the same).
        let cols = [
            clip_index(x, w) * 3,
            clip_index(x + 1, w) * 3,
            clip_index(x + 2, w) * 3,
            clip_index(x + 3, w) * 3,
        ];
        let rows = [
            clip_index(y, h) * w * 3,
            clip_index(y + 1, h) * w * 3,
            clip_index(y + 2, h) * w * 3,
            clip_index(y + 3, h) * w * 3,
        ];
        for (b, out) in px.iter_mut().enumerate() {
            let mut v = [0f64; 4];
            for (vr, &r) in v.iter_mut().zip(rows.iter()) {
                let at = |c: usize| src[r + c + b] as f64;
                *vr = cubic(at(cols[0]), at(cols[1]), at(cols[2]), at(cols[3]), dx);
            }
            let r = cubic(v[0], v[1], v[2], v[3], dy);
            *out = if r <= 0.0 {
                0
            } else if r >= 255.0 {
                255
            } else {
                r as u8
            };
        }
    }

    fn bilinear_pixel_reference(src: &[u8], w: usize, h: usize, xx: f64, yy: f64, px: &mut [u8]) {
        let xs = xx - 0.5;
        let ys = yy - 0.5;
        let fx = xs.floor();
        let fy = ys.floor();
        let dx = xs - fx;
        let dy = ys - fy;
        let x = fx as i64;
        let y = fy as i64;
        let c0 = clip_index(x, w) * 3;
        let c1 = clip_index(x + 1, w) * 3;
        let r0 = clip_index(y, h) * w * 3;
        let r1 = clip_index(y + 1, h) * w * 3;
        for (b, out) in px.iter_mut().enumerate() {
            let lerp = |r: usize| {
                let a = src[r + c0 + b] as i32;
                let d = src[r + c1 + b] as i32 - a;
                a as f64 + d as f64 * dx
            };
            let v1 = lerp(r0);
            let v2 = lerp(r1);
            *out = (v1 + (v2 - v1) * dy) as u8;
        }
    }

    /// The reference of [`Transform::apply`] for the geometric operations.
    fn apply_reference(
        t: &Transform,
        img: &mut Rgb8,
        fill: [u8; 3],
        resample: Resample,
        out: &mut Vec<u8>,
    ) {
        let (w, h) = (img.width as f64, img.height as f64);
        let m = match *t {
            Transform::Rotate(deg) => {
                if rotate_with(img, deg, resample, fill, out, affine_into_reference) {
                    std::mem::swap(&mut img.data, out);
                }
                return;
            }
            Transform::ShearX(f) => [1.0, f, 0.0, 0.0, 1.0, 0.0],
            Transform::ShearY(f) => [1.0, 0.0, 0.0, f, 1.0, 0.0],
            Transform::TranslateXRel(pct) => [1.0, 0.0, pct * w, 0.0, 1.0, 0.0],
            Transform::TranslateYRel(pct) => [1.0, 0.0, 0.0, 0.0, 1.0, pct * h],
            _ => unreachable!(),
        };
        affine_into_reference(img, m, resample, fill, out);
        std::mem::swap(&mut img.data, out);
    }

    fn random_image(rng: &mut ChaCha8Rng, width: usize, height: usize) -> Rgb8 {
        // Smooth gradients plus noise, and some saturated pixels, so that the filters overshoot
        // and undershoot (the clip) as on real edges.
        let data = (0..width * height * 3)
            .map(|i| match rng.random_range(0..8) {
                0 => 0,
                1 => 255,
                _ => ((i * 7 / 3) % 256) as u8 ^ rng.random_range(0..32u8),
            })
            .collect();
        Rgb8 {
            width,
            height,
            data,
        }
    }

    fn random_transform(rng: &mut ChaCha8Rng) -> Transform {
        // Up to twice timm's largest magnitudes (and whole or half pixels sometimes), so that
        // sources fall outside the image.
        let sign = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
        match rng.random_range(0..7) {
            0 => Transform::Rotate(sign * rng.random_range(0.0..60.0)),
            1 => Transform::Rotate([0.0, 90.0, 180.0, 270.0, 360.0, 45.0][rng.random_range(0..6)]),
            2 => Transform::ShearX(sign * rng.random_range(0.0..0.6)),
            3 => Transform::ShearY(sign * rng.random_range(0.0..0.6)),
            4 => Transform::TranslateXRel(sign * rng.random_range(0.0..0.9)),
            5 => Transform::TranslateYRel(sign * rng.random_range(0.0..0.9)),
            _ => {
                let v = sign * rng.random_range(0..8) as f64 / 16.0;
                if rng.random_bool(0.5) {
                    Transform::TranslateXRel(v)
                } else {
                    Transform::TranslateYRel(v)
                }
            }
        }
    }

    #[test]
    fn geometric_fast_path_matches_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(20261128);
        let mut scratch = Vec::new();
        for case in 0..600 {
            let (w, h) = match case % 4 {
                0 => (rng.random_range(1..6), rng.random_range(1..6)),
                _ => (rng.random_range(1..70), rng.random_range(1..70)),
            };
            let img = random_image(&mut rng, w, h);
            let t = random_transform(&mut rng);
            let resample = if rng.random_bool(0.75) {
                Resample::Bicubic
            } else {
                Resample::Bilinear
            };
            let fill = [rng.random(), rng.random(), rng.random()];
            let mut fast = img.clone();
            t.apply(&mut fast, fill, resample, &mut scratch);
            let mut reference = img.clone();
            apply_reference(&t, &mut reference, fill, resample, &mut scratch);
            assert!(
                fast.data == reference.data,
                "case {case}: {t:?} {resample:?} on {w}x{h} differs from the reference"
            );
        }
        // Arbitrary affine matrices, including ones with an exact zero offset on one axis only
        // in some rows or columns.
        for case in 0..300 {
            let (w, h) = (rng.random_range(1..50), rng.random_range(1..50));
            let img = random_image(&mut rng, w, h);
            let mut m = [0f64; 6];
            for v in &mut m {
                *v = match rng.random_range(0..4) {
                    0 => 0.0,
                    1 => rng.random_range(-4..5) as f64 / 2.0,
                    _ => rng.random_range(-1.5..1.5) * 10f64.powi(rng.random_range(0..2)),
                };
            }
            let fill = [rng.random(), rng.random(), rng.random()];
            let (mut fast, mut reference) = (Vec::new(), Vec::new());
            affine_into(&img, m, Resample::Bicubic, fill, &mut fast);
            affine_into_reference(&img, m, Resample::Bicubic, fill, &mut reference);
            assert!(fast == reference, "matrix case {case}: {m:?} on {w}x{h}");
        }
    }

    /// Old vs new per geometric op, 2000 applications to a 224x224 image each:
    /// `cargo test --release -p illama-data --lib geometric_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn geometric_speed() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let img = random_image(&mut rng, 224, 224);
        let fill = [128, 128, 128];
        let ops = [
            Transform::Rotate(27.0),
            Transform::ShearX(0.27),
            Transform::ShearY(-0.27),
            Transform::TranslateXRel(0.405),
            Transform::TranslateYRel(-0.405),
        ];
        let n = 2000;
        for resample in [Resample::Bicubic, Resample::Bilinear] {
            for t in &ops {
                let mut scratch = Vec::new();
                let mut work = img.clone();
                let start = std::time::Instant::now();
                for _ in 0..n {
                    work.data.copy_from_slice(&img.data);
                    t.apply(&mut work, fill, resample, &mut scratch);
                }
                let new = start.elapsed().as_secs_f64() * 1e3 / n as f64;
                let fast = work.data.clone();
                let start = std::time::Instant::now();
                for _ in 0..n {
                    work.data.copy_from_slice(&img.data);
                    apply_reference(t, &mut work, fill, resample, &mut scratch);
                }
                let old = start.elapsed().as_secs_f64() * 1e3 / n as f64;
                assert!(fast == work.data);
                println!(
                    "{resample:?} {t:?}: old {old:.3} ms, new {new:.3} ms, {:.2}x",
                    old / new
                );
            }
        }
    }
}
