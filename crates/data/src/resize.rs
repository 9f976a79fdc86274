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

/// How each output index of one axis maps onto the input: computed per output index, on demand,
/// so that nothing is ever sized by the whole output (an extreme aspect ratio can ask for an
/// output axis of millions of pixels of which a crop keeps 224).
#[derive(Debug, Clone, Copy)]
struct Axis {
    in_size: usize,
    scale: f64,
    filterscale: f64,
    support: f64,
}

/// The input run and normalisation of one output index.
#[derive(Debug, Clone, Copy)]
struct Tap {
    center: f64,
    /// First input index and number of inputs.
    xmin: usize,
    n: usize,
    /// Sum of the unnormalised kernel over the run (PIL's `ww`).
    ww: f64,
}

impl Axis {
    fn new(in_size: usize, out_size: usize) -> Axis {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        Axis {
            in_size,
            scale,
            filterscale,
            support: 2.0 * filterscale,
        }
    }

    /// PIL's `precompute_coeffs` for output index `xx`, without storing the kernel.
    fn tap(&self, xx: usize) -> Tap {
        let center = (xx as f64 + 0.5) * self.scale;
        // C's (int) cast truncates toward zero.
        let xmin = ((center - self.support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + self.support + 0.5) as i64).min(self.in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let ss = 1.0 / self.filterscale;
        let mut ww = 0.0;
        for x in 0..n {
            ww += bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
        }
        Tap {
            center,
            xmin,
            n,
            ww,
        }
    }

    /// The fixed-point weight of input `xmin + x` in `tap`, exactly as PIL rounds it.
    fn weight(&self, tap: &Tap, x: usize) -> i32 {
        let ss = 1.0 / self.filterscale;
        let k = bicubic((x as f64 + tap.xmin as f64 - tap.center + 0.5) * ss);
        let w = if tap.ww != 0.0 { k / tap.ww } else { k };
        let fixed = w * (1u32 << PRECISION_BITS) as f64;
        (if w < 0.0 { fixed - 0.5 } else { fixed + 0.5 }) as i32
    }

    /// The fixed-point kernel of `tap`.
    fn weights(&self, tap: &Tap) -> Vec<i32> {
        (0..tap.n).map(|x| self.weight(tap, x)).collect()
    }
}

/// Above this, the horizontally resized rows are not kept, and kernels above it are not stored:
/// each is computed where it is used (slower, but memory stays proportional to the output
/// whatever the source's shape, e.g. a 1 x 67M-pixel image warped to 384 x 384).
const MAX_INTERMEDIATE_BYTES: usize = 32 << 20;

/// The fixed-point kernels of a window of output indices: stored when they are small, computed
/// on use otherwise.
struct Kernels {
    axis: Axis,
    taps: Vec<Tap>,
    stored: Option<Vec<Vec<i32>>>,
}

impl Kernels {
    fn new(axis: Axis, window: std::ops::Range<usize>, limit: usize) -> Kernels {
        let taps: Vec<Tap> = window.map(|o| axis.tap(o)).collect();
        let total: usize = taps.iter().map(|t| t.n).sum();
        let stored = (total * 4 <= limit).then(|| taps.iter().map(|t| axis.weights(t)).collect());
        Kernels { axis, taps, stored }
    }

    /// First input index and number of inputs of the window's `o`-th output.
    fn run(&self, o: usize) -> (usize, usize) {
        (self.taps[o].xmin, self.taps[o].n)
    }

    fn weight(&self, o: usize, i: usize) -> i32 {
        match &self.stored {
            Some(k) => k[o][i],
            None => self.axis.weight(&self.taps[o], i),
        }
    }

    /// Inputs needed by the whole window.
    fn span(&self) -> std::ops::Range<usize> {
        let lo = self.taps.iter().map(|t| t.xmin).min().unwrap_or(0);
        let hi = self.taps.iter().map(|t| t.xmin + t.n).max().unwrap_or(0);
        lo..hi
    }
}

/// PIL accumulates in 32-bit integers (`ss`, with the rounding half already added); the sums of
/// 8-bit values times a normalised bicubic kernel stay below 2^31.
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Why a resize or crop was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResizeError {
    #[error("image of {width}x{height} pixels holds {len} bytes, not {width}x{height}x3")]
    Malformed {
        width: usize,
        height: usize,
        len: usize,
    },
    #[error("empty image or output ({0}x{1})")]
    Empty(usize, usize),
    #[error("window {w}x{h} at ({left}, {top}) is outside the {out_w}x{out_h} output")]
    Window {
        left: usize,
        top: usize,
        w: usize,
        h: usize,
        out_w: usize,
        out_h: usize,
    },
}

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Rgb8 {
    /// Checks that the image is non-empty and `data` holds exactly `width x height x 3` bytes.
    pub fn check(&self) -> Result<(), ResizeError> {
        if self.width == 0 || self.height == 0 {
            return Err(ResizeError::Empty(self.width, self.height));
        }
        let want = self
            .width
            .checked_mul(self.height)
            .and_then(|p| p.checked_mul(3));
        if want != Some(self.data.len()) {
            return Err(ResizeError::Malformed {
                width: self.width,
                height: self.height,
                len: self.data.len(),
            });
        }
        Ok(())
    }

    /// The `width x height` window at (`left`, `top`).
    pub fn crop(
        &self,
        left: usize,
        top: usize,
        width: usize,
        height: usize,
    ) -> Result<Rgb8, ResizeError> {
        self.check()?;
        check_window(self.width, self.height, left, top, width, height)?;
        Ok(self.crop_unchecked(left, top, width, height))
    }

    fn crop_unchecked(&self, left: usize, top: usize, width: usize, height: usize) -> Rgb8 {
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

fn check_window(
    out_w: usize,
    out_h: usize,
    left: usize,
    top: usize,
    w: usize,
    h: usize,
) -> Result<(), ResizeError> {
    let inside = |start: usize, len: usize, size: usize| {
        start.checked_add(len).is_some_and(|end| end <= size)
    };
    if !inside(left, w, out_w) || !inside(top, h, out_h) {
        return Err(ResizeError::Window {
            left,
            top,
            w,
            h,
            out_w,
            out_h,
        });
    }
    Ok(())
}

/// The window `[left, left + w) x [top, top + h)` of `img` resized to `out_w x out_h`, as PIL
/// computes it.
///
/// Memory is bounded by the window, never by `out_w x out_h`: kernels are computed for the
/// window's columns and rows only. The horizontal pass keeps the 8-bit rows that the window's
/// output rows read and the vertical pass sums them row by row in 32-bit integers, as PIL does;
/// when those rows or the kernels would exceed 32 MiB (extreme shapes, e.g. a 1 x 67M-pixel
/// image warped to 384), each source row is instead added into the 32-bit sums of the output rows
/// that read it and dropped, and kernels are computed where they are used. Either way the pixels
/// are PIL's exactly: each output pixel is the same integer sum of the same fixed-point products.
pub fn resize_window(
    img: &Rgb8,
    out_w: usize,
    out_h: usize,
    left: usize,
    top: usize,
    w: usize,
    h: usize,
) -> Result<Rgb8, ResizeError> {
    resize_window_within(img, out_w, out_h, left, top, w, h, MAX_INTERMEDIATE_BYTES)
}

/// [`resize_window`] keeping at most `limit` bytes of intermediate rows and of kernels.
#[allow(clippy::too_many_arguments)]
fn resize_window_within(
    img: &Rgb8,
    out_w: usize,
    out_h: usize,
    left: usize,
    top: usize,
    w: usize,
    h: usize,
    limit: usize,
) -> Result<Rgb8, ResizeError> {
    img.check()?;
    if out_w == 0 || out_h == 0 || w == 0 || h == 0 {
        return Err(ResizeError::Empty(w.min(out_w), h.min(out_h)));
    }
    check_window(out_w, out_h, left, top, w, h)?;
    let need_h = out_w != img.width;
    let need_v = out_h != img.height;
    if !need_h && !need_v {
        return Ok(img.crop_unchecked(left, top, w, h));
    }
    // Horizontal kernels of the window's columns.
    let columns = need_h.then(|| Kernels::new(Axis::new(img.width, out_w), left..left + w, limit));
    // One source row through the horizontal pass (or its window columns, without one).
    let horizontal_row = |y: usize, out: &mut [u8]| {
        let src = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
        let Some(cols) = &columns else {
            out.copy_from_slice(&src[left * 3..(left + w) * 3]);
            return;
        };
        for (o, px) in out.chunks_exact_mut(3).enumerate() {
            let (xmin, n) = cols.run(o);
            let taps = src[xmin * 3..(xmin + n) * 3].chunks_exact(3);
            let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
            let mut add = |kw: i32, v: &[u8]| {
                acc[0] += v[0] as i32 * kw;
                acc[1] += v[1] as i32 * kw;
                acc[2] += v[2] as i32 * kw;
            };
            match &cols.stored {
                Some(k) => k[o].iter().zip(taps).for_each(|(&kw, v)| add(kw, v)),
                None => taps
                    .enumerate()
                    .for_each(|(i, v)| add(cols.weight(o, i), v)),
            }
            px[0] = clip8(acc[0]);
            px[1] = clip8(acc[1]);
            px[2] = clip8(acc[2]);
        }
    };
    let row_bytes = w * 3;
    let mut out = vec![0u8; row_bytes * h];
    if !need_v {
        for (y, o) in (top..top + h).zip(out.chunks_exact_mut(row_bytes)) {
            horizontal_row(y, o);
        }
        return Ok(Rgb8 {
            width: w,
            height: h,
            data: out,
        });
    }
    let rows = Kernels::new(Axis::new(img.height, out_h), top..top + h, limit);
    let span = rows.span();
    if span.len() * row_bytes > limit {
        // Stream: each source row is made once, added into the 32-bit sums of the output rows
        // that read it (their runs move forward monotonically), and dropped.
        let mut acc = vec![1i32 << (PRECISION_BITS - 1); row_bytes * h];
        let mut row = vec![0u8; row_bytes];
        let (mut first, mut last) = (0, 0);
        for y in span {
            while first < h && rows.run(first).0 + rows.run(first).1 <= y {
                first += 1;
            }
            while last < h && rows.run(last).0 <= y {
                last += 1;
            }
            if first >= last {
                continue;
            }
            horizontal_row(y, &mut row);
            for o in first..last {
                let (ymin, n) = rows.run(o);
                if y < ymin || y >= ymin + n {
                    continue;
                }
                let kw = rows.weight(o, y - ymin);
                for (a, &v) in acc[o * row_bytes..(o + 1) * row_bytes].iter_mut().zip(&row) {
                    *a += v as i32 * kw;
                }
            }
        }
        for (p, a) in out.iter_mut().zip(acc) {
            *p = clip8(a);
        }
        return Ok(Rgb8 {
            width: w,
            height: h,
            data: out,
        });
    }
    // PIL's two passes: the horizontal one into 8-bit rows (only the source rows the window
    // reads), then the vertical one, output row by output row.
    let mut tmp = vec![0u8; span.len() * row_bytes];
    for (y, o) in span.clone().zip(tmp.chunks_exact_mut(row_bytes)) {
        horizontal_row(y, o);
    }
    let mut acc = vec![0i32; row_bytes];
    for (o, out_row) in out.chunks_exact_mut(row_bytes).enumerate() {
        acc.fill(1 << (PRECISION_BITS - 1));
        let (ymin, n) = rows.run(o);
        for i in 0..n {
            let kw = rows.weight(o, i);
            let at = (ymin + i - span.start) * row_bytes;
            for (a, &v) in acc.iter_mut().zip(&tmp[at..at + row_bytes]) {
                *a += v as i32 * kw;
            }
        }
        for (p, &a) in out_row.iter_mut().zip(&acc) {
            *p = clip8(a);
        }
    }
    Ok(Rgb8 {
        width: w,
        height: h,
        data: out,
    })
}

/// A whole-image resize.
pub fn resize(img: &Rgb8, out_w: usize, out_h: usize) -> Result<Rgb8, ResizeError> {
    resize_window(img, out_w, out_h, 0, 0, out_w, out_h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_and_computed_kernels_give_the_same_pixels() {
        // A tall and a wide image, warped and cropped: the bounded path (nothing stored) must
        // equal the two-pass path.
        let mut data = Vec::new();
        for i in 0..3 * 7 * 900 {
            data.push((i * 37 % 251) as u8);
        }
        for (w, h) in [(7, 900), (900, 7)] {
            let img = Rgb8 {
                width: w,
                height: h,
                data: data.clone(),
            };
            for (ow, oh, l, t, ww, hh) in [(16, 16, 0, 0, 16, 16), (40, 3000, 5, 1200, 24, 24)] {
                let fast = resize_window_within(&img, ow, oh, l, t, ww, hh, usize::MAX).unwrap();
                let slow = resize_window_within(&img, ow, oh, l, t, ww, hh, 0).unwrap();
                assert_eq!(fast, slow, "{w}x{h} -> {ow}x{oh}");
            }
        }
    }

    #[test]
    fn identity_and_constant_images() {
        let img = Rgb8 {
            width: 5,
            height: 4,
            data: (0..60).map(|v| v as u8).collect(),
        };
        assert_eq!(resize(&img, 5, 4).unwrap(), img);
        let flat = Rgb8 {
            width: 37,
            height: 23,
            data: vec![77; 37 * 23 * 3],
        };
        let r = resize(&flat, 11, 50).unwrap();
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
        let full = resize(&img, 30, 70).unwrap();
        assert_eq!(
            resize_window(&img, 30, 70, 3, 20, 24, 40).unwrap(),
            full.crop(3, 20, 24, 40).unwrap()
        );
        assert!(resize_window(&img, 30, 70, 10, 20, 24, 40).is_err());
        assert!(resize_window(&img, 0, 70, 0, 0, 0, 40).is_err());
    }
}
