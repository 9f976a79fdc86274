//! ggml's block-quantised types and their dequantisation, element for element as ggml computes
//! it (f32 arithmetic in the same order, so the results are bit-identical to ggml's and to the
//! `gguf` Python package's).
//!
//! A quantised row is a run of blocks, each holding a fixed number of elements; rows never share
//! a block, so any one row can be dequantised alone.

use half::{bf16, f16};
use serde::Serialize;
use std::fmt;

/// The element type of a GGUF tensor (ggml's `ggml_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    F64,
    I8,
    I16,
    I32,
    I64,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
    /// A type this reader lists but cannot dequantise (K-quants below 4 bits, i-quants, ...);
    /// the block geometry is known, so offsets and sizes can still be checked.
    Other {
        id: u32,
        name: &'static str,
        block_elems: u32,
        block_bytes: u32,
    },
}

/// Elements of a K-quant super-block.
const QK_K: usize = 256;

impl GgmlType {
    /// The type with ggml's id `id`, or `None` for an id this reader does not know at all.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        use GgmlType::*;
        let other = |name, block_elems, block_bytes| Other {
            id,
            name,
            block_elems,
            block_bytes,
        };
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => other("Q8_1", 32, 36),
            10 => other("Q2_K", 256, 84),
            11 => other("Q3_K", 256, 110),
            12 => Q4K,
            13 => Q5K,
            14 => Q6K,
            15 => other("Q8_K", 256, 292),
            16 => other("IQ2_XXS", 256, 66),
            17 => other("IQ2_XS", 256, 74),
            18 => other("IQ3_XXS", 256, 98),
            19 => other("IQ1_S", 256, 50),
            20 => other("IQ4_NL", 32, 18),
            21 => other("IQ3_S", 256, 110),
            22 => other("IQ2_S", 256, 82),
            23 => other("IQ4_XS", 256, 136),
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => other("IQ1_M", 256, 56),
            30 => BF16,
            // Repacked layouts llama.cpp wrote in 2024 and later removed: blocks of Q4_0/IQ4_NL size.
            31 => other("Q4_0_4_4", 32, 18),
            32 => other("Q4_0_4_8", 32, 18),
            33 => other("Q4_0_8_8", 32, 18),
            34 => other("TQ1_0", 256, 54),
            35 => other("TQ2_0", 256, 66),
            36 => other("IQ4_NL_4_4", 32, 18),
            37 => other("IQ4_NL_4_8", 32, 18),
            38 => other("IQ4_NL_8_8", 32, 18),
            39 => other("MXFP4", 32, 17),
            40 => other("NVFP4", 64, 36),
            41 => other("Q1_0", 128, 18),
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            BF16 => "BF16",
            F64 => "F64",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Other { name, .. } => name,
        }
    }

    /// (elements, bytes) of one block; plain types are blocks of one element.
    pub fn block(self) -> (usize, usize) {
        use GgmlType::*;
        match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            F64 | I64 => (1, 8),
            I8 => (1, 1),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q4K => (QK_K, 144),
            Q5K => (QK_K, 176),
            Q6K => (QK_K, 210),
            Other {
                block_elems,
                block_bytes,
                ..
            } => (block_elems as usize, block_bytes as usize),
        }
    }

    /// The element type when stored plainly (one element per block), as our dtype.
    pub fn plain_dtype(self) -> Option<crate::DType> {
        use crate::DType as D;
        use GgmlType::*;
        Some(match self {
            F32 => D::F32,
            F16 => D::F16,
            BF16 => D::BF16,
            F64 => D::F64,
            I8 => D::I8,
            I16 => D::I16,
            I32 => D::I32,
            I64 => D::I64,
            _ => return None,
        })
    }

    /// Whether [`dequantize`] reads this type (every float type and the quantised types above).
    pub fn dequantizable(self) -> bool {
        !matches!(
            self,
            GgmlType::Other { .. } | GgmlType::I8 | GgmlType::I16 | GgmlType::I32 | GgmlType::I64
        )
    }

    /// Bytes of `elems` elements (a multiple of the block size); `None` when not a multiple or
    /// too large.
    pub fn bytes_for(self, elems: u64) -> Option<u64> {
        let (be, bb) = self.block();
        if elems % be as u64 != 0 {
            return None;
        }
        (elems / be as u64).checked_mul(bb as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Dequantises `src` (whole blocks of `ty`) into `out` (as many f32 elements as the blocks hold).
///
/// Panics if the lengths disagree or the type is not [`GgmlType::dequantizable`]; callers size
/// both from the tensor's checked geometry.
pub fn dequantize(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    let (be, bb) = ty.block();
    assert_eq!(src.len() / bb * be, out.len(), "{ty}: block count mismatch");
    assert_eq!(src.len() % bb, 0, "{ty}: partial block");
    let blocks = src.chunks_exact(bb).zip(out.chunks_exact_mut(be));
    match ty {
        GgmlType::F32 => {
            for (b, y) in blocks {
                y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (b, y) in blocks {
                y[0] = half_at(b, 0);
            }
        }
        GgmlType::BF16 => {
            for (b, y) in blocks {
                y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        GgmlType::F64 => {
            for (b, y) in blocks {
                y[0] = f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32;
            }
        }
        GgmlType::Q8_0 => blocks.for_each(|(b, y)| q8_0(b, y)),
        GgmlType::Q4_0 => blocks.for_each(|(b, y)| q4_0(b, y)),
        GgmlType::Q4_1 => blocks.for_each(|(b, y)| q4_1(b, y)),
        GgmlType::Q5_0 => blocks.for_each(|(b, y)| q5_0(b, y)),
        GgmlType::Q5_1 => blocks.for_each(|(b, y)| q5_1(b, y)),
        GgmlType::Q4K => blocks.for_each(|(b, y)| q4_k(b, y)),
        GgmlType::Q5K => blocks.for_each(|(b, y)| q5_k(b, y)),
        GgmlType::Q6K => blocks.for_each(|(b, y)| q6_k(b, y)),
        _ => panic!("{ty} is not dequantizable"),
    }
}

/// `d: f16, qs: [i8; 32]`.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = q as i8 as f32 * d;
    }
}

/// `d: f16, qs: [u8; 16]`: element j in the low nibble of byte j, element j+16 in its high one.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// `d: f16, m: f16, qs: [u8; 16]`.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = (q & 0x0f) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// The fifth bits of a Q5 block's 32 elements, bit j for element j.
fn fifth_bits(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// `d: f16, qh: u32, qs: [u8; 16]`.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let qh = fifth_bits(&b[2..6]);
    for (j, &q) in b[6..22].iter().enumerate() {
        let lo = ((q & 0x0f) as u32 | ((qh >> j) & 1) << 4) as i32 - 16;
        let hi = ((q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4) as i32 - 16;
        y[j] = lo as f32 * d;
        y[j + 16] = hi as f32 * d;
    }
}

/// `d: f16, m: f16, qh: u32, qs: [u8; 16]`.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    let qh = fifth_bits(&b[4..8]);
    for (j, &q) in b[8..24].iter().enumerate() {
        let lo = (q & 0x0f) as u32 | ((qh >> j) & 1) << 4;
        let hi = (q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        y[j] = lo as f32 * d + m;
        y[j + 16] = hi as f32 * d + m;
    }
}

/// The 6-bit scale and min of sub-block `j` (of 8) packed in a K-quant's 12 scale bytes.
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`: 8 sub-blocks of 32 with a 6-bit scale
/// and min each; a byte holds element l of one sub-block (low nibble) and of the next (high).
fn q4_k(b: &[u8], y: &mut [f32]) {
    k_quant_4_5(b, None, &b[16..144], y)
}

/// `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`: Q4_K plus a fifth bit per
/// element, bit 2c (low nibble) and 2c+1 (high nibble) of `qh[l]` for chunk c.
fn q5_k(b: &[u8], y: &mut [f32]) {
    k_quant_4_5(b, Some(&b[16..48]), &b[48..176], y)
}

/// Q4_K and Q5_K, which share the scales' layout; `qh` holds Q5_K's fifth bits.
fn k_quant_4_5(b: &[u8], qh: Option<&[u8]>, qs: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let scales = &b[4..16];
    let sub_block = |j: usize| {
        let (sc, m) = scale_min_k4(j, scales);
        (d * sc as f32, dmin * m as f32)
    };
    for (chunk, (qs, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let ((d1, min1), (d2, min2)) = (sub_block(2 * chunk), sub_block(2 * chunk + 1));
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        for (l, &q) in qs.iter().enumerate() {
            let (fifth_lo, fifth_hi) = match qh {
                Some(h) => (u8::from(h[l] & u1 != 0) * 16, u8::from(h[l] & u2 != 0) * 16),
                None => (0, 0),
            };
            y[l] = d1 * ((q & 0x0f) + fifth_lo) as f32 - min1;
            y[l + 32] = d2 * ((q >> 4) + fifth_hi) as f32 - min2;
        }
    }
}

/// `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`: two halves of 128 elements, each
/// element 4 low bits from `ql` and 2 high bits from `qh`, minus 32, times a per-16 scale.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let s = |k: usize| d * (sc[is + k] as i8) as f32;
            y[l] = s(0) * q1 as f32;
            y[l + 32] = s(2) * q2 as f32;
            y[l + 64] = s(4) * q3 as f32;
            y[l + 96] = s(6) * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_is_scale_times_int8() {
        let mut b = vec![0u8; 34];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        for (j, q) in b[2..].iter_mut().enumerate() {
            *q = (j as i8 - 16) as u8;
        }
        let mut y = [0f32; 32];
        dequantize(GgmlType::Q8_0, &b, &mut y);
        assert_eq!(y[0], -8.0);
        assert_eq!(y[31], 7.5);
    }

    #[test]
    fn geometry_of_every_known_id_is_consistent() {
        for id in 0..64 {
            if let Some(t) = GgmlType::from_id(id) {
                let (e, b) = t.block();
                assert!(e >= 1 && b >= 1, "{t}");
                assert_eq!(t.bytes_for(e as u64 * 3), Some(b as u64 * 3));
            }
        }
    }
}
