//! PIL's `Image.resize(..., BICUBIC)` for 8-bit RGB, bit for bit: separable convolution with a
//! support widened by the downscale factor (antialiasing), Keys' cubic with a = -0.5, weights
//! normalised then fixed-point (22 fractional bits), a horizontal pass rounded to 8 bits, then a
//! vertical pass. Output pixels can be restricted to a window, which gives exactly the pixels a
//! full resize followed by a crop would (each output pixel depends only on its own weights).

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point weights of each output index over a run of input indices.
struct Coeffs {
    /// (first input index, number of inputs) per output index.
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

fn coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for x in 0..xmax {
            let w = if ww != 0.0 { k[x] / ww } else { k[x] };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs {
        bounds,
        ksize,
        weights,
    }
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Rgb8 {
    pub fn crop(&self, left: usize, top: usize, width: usize, height: usize) -> Rgb8 {
        let mut data = Vec::with_capacity(width * height * 3);
        for y in top..top + height {
            let row = (y * self.width + left) * 3;
            data.extend_from_slice(&self.data[row..row + width * 3]);
        }
        Rgb8 {
            width,
            height,
            data,
        }
    }
}

/// The window `[left, left + w) x [top, top + h)` of `img` resized to `out_w x out_h`, as PIL
/// computes it.
pub fn resize_window(
    img: &Rgb8,
    out_w: usize,
    out_h: usize,
    left: usize,
    top: usize,
    w: usize,
    h: usize,
) -> Rgb8 {
    assert!(
        left + w <= out_w && top + h <= out_h,
        "window outside the output"
    );
    let need_h = out_w != img.width;
    let need_v = out_h != img.height;
    if !need_h && !need_v {
        return img.crop(left, top, w, h);
    }
    let cv = need_v.then(|| coeffs(img.height, out_h));
    // Source rows the vertical pass will read for the window's rows.
    let (row0, row1) = match &cv {
        Some(c) => {
            let first = c.bounds[top].0;
            let last = (top..top + h)
                .map(|y| c.bounds[y].0 + c.bounds[y].1)
                .max()
                .unwrap_or(first);
            (first, last)
        }
        None => (top, top + h),
    };
    // Horizontal pass over those rows, window columns only.
    let horizontal = if need_h {
        let ch = coeffs(img.width, out_w);
        let mut out = Vec::with_capacity((row1 - row0) * w * 3);
        for y in row0..row1 {
            let src = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
            for xx in left..left + w {
                let (xmin, n) = ch.bounds[xx];
                let k = &ch.weights[xx * ch.ksize..xx * ch.ksize + n];
                let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
                for (i, &kw) in k.iter().enumerate() {
                    let p = (xmin + i) * 3;
                    for (a, &v) in acc.iter_mut().zip(&src[p..p + 3]) {
                        *a += v as i64 * kw as i64;
                    }
                }
                out.extend(acc.iter().map(|&a| clip8(a)));
            }
        }
        Rgb8 {
            width: w,
            height: row1 - row0,
            data: out,
        }
    } else {
        // Only the window's columns, all needed rows.
        let rows = img.crop(left, row0, w, row1 - row0);
        Rgb8 {
            width: w,
            height: row1 - row0,
            data: rows.data,
        }
    };
    let Some(cv) = cv else {
        return horizontal;
    };
    let mut out = Vec::with_capacity(w * h * 3);
    for yy in top..top + h {
        let (ymin, n) = cv.bounds[yy];
        let k = &cv.weights[yy * cv.ksize..yy * cv.ksize + n];
        for x in 0..w {
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            for (i, &kw) in k.iter().enumerate() {
                let p = ((ymin + i - row0) * w + x) * 3;
                for (a, &v) in acc.iter_mut().zip(&horizontal.data[p..p + 3]) {
                    *a += v as i64 * kw as i64;
                }
            }
            out.extend(acc.iter().map(|&a| clip8(a)));
        }
    }
    Rgb8 {
        width: w,
        height: h,
        data: out,
    }
}

/// A whole-image resize.
pub fn resize(img: &Rgb8, out_w: usize, out_h: usize) -> Rgb8 {
    resize_window(img, out_w, out_h, 0, 0, out_w, out_h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_constant_images() {
        let img = Rgb8 {
            width: 5,
            height: 4,
            data: (0..60).map(|v| v as u8).collect(),
        };
        assert_eq!(resize(&img, 5, 4), img);
        let flat = Rgb8 {
            width: 37,
            height: 23,
            data: vec![77; 37 * 23 * 3],
        };
        let r = resize(&flat, 11, 50);
        assert!(r.data.iter().all(|&v| v == 77));
    }

    #[test]
    fn a_window_equals_the_crop_of_the_full_resize() {
        let data: Vec<u8> = (0..41 * 29 * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        let img = Rgb8 {
            width: 41,
            height: 29,
            data,
        };
        let full = resize(&img, 30, 70);
        assert_eq!(
            resize_window(&img, 30, 70, 3, 20, 24, 40),
            full.crop(3, 20, 24, 40)
        );
    }
}
