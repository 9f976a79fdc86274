//! Floating-point dtype conversion, streamed: a writer that converts elements as they pass.

use crate::dtype::DType;
use half::{bf16, f16};
use std::io::Write;

/// Whether a tensor of `from` becomes `to` under a `--dtype to` request: only floating-point
/// tensors are cast; integers and bools keep their type.
pub fn cast_target(from: DType, to: Option<DType>) -> DType {
    match to {
        Some(t) if from.is_float() && t.is_float() => t,
        _ => from,
    }
}

fn read(d: DType, b: &[u8]) -> f64 {
    match d {
        DType::F16 => f16::from_le_bytes([b[0], b[1]]).to_f64(),
        DType::BF16 => bf16::from_le_bytes([b[0], b[1]]).to_f64(),
        DType::F32 => f32::from_le_bytes(b.try_into().unwrap()) as f64,
        DType::F64 => f64::from_le_bytes(b.try_into().unwrap()),
        _ => unreachable!("only float dtypes are cast"),
    }
}

/// Converts one element, rounding to nearest even as torch's `.to()` does. Like torch, f64 goes
/// to f16/bf16 through f32 (two roundings; checked against torch 2.15).
fn convert(from: DType, to: DType, src: &[u8], dst: &mut Vec<u8>) {
    let v = read(from, src);
    match to {
        DType::F16 => dst.extend_from_slice(&f16::from_f32(v as f32).to_le_bytes()),
        DType::BF16 => dst.extend_from_slice(&bf16::from_f32(v as f32).to_le_bytes()),
        DType::F32 => dst.extend_from_slice(&(v as f32).to_le_bytes()),
        DType::F64 => dst.extend_from_slice(&v.to_le_bytes()),
        _ => unreachable!("only float dtypes are cast"),
    }
}

/// Only floating-point tensors are cast (a tensor already of the target type passes through).
fn check(from: DType, to: DType) -> crate::Result<()> {
    if from == to || (from.is_float() && to.is_float()) {
        Ok(())
    } else {
        Err(crate::FormatError::Invalid(format!(
            "cannot cast {from} to {to}: only floating-point tensors are cast"
        )))
    }
}

/// Converts a whole buffer of `from` elements.
pub fn cast_bytes(from: DType, to: DType, src: &[u8]) -> crate::Result<Vec<u8>> {
    check(from, to)?;
    if from == to {
        return Ok(src.to_vec());
    }
    let mut out = Vec::with_capacity(src.len() / from.size() * to.size());
    for e in src.chunks_exact(from.size()) {
        convert(from, to, e, &mut out);
    }
    Ok(out)
}

/// A writer that receives `from` elements and writes `to` elements to `inner`.
pub struct CastWriter<W: Write> {
    pub inner: W,
    from: DType,
    to: DType,
    partial: Vec<u8>,
    buf: Vec<u8>,
}

impl<W: Write> CastWriter<W> {
    /// A cast from `from` to `to`: both floating-point types, or the same type.
    pub fn new(inner: W, from: DType, to: DType) -> crate::Result<Self> {
        check(from, to)?;
        Ok(CastWriter {
            inner,
            from,
            to,
            partial: Vec::new(),
            buf: Vec::new(),
        })
    }
}

impl<W: Write> Write for CastWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.from == self.to {
            return self.inner.write(data);
        }
        let es = self.from.size();
        self.buf.clear();
        let mut rest = data;
        if !self.partial.is_empty() {
            let need = (es - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..need]);
            rest = &rest[need..];
            if self.partial.len() == es {
                convert(self.from, self.to, &self.partial, &mut self.buf);
                self.partial.clear();
            }
        }
        let whole = rest.len() / es * es;
        for e in rest[..whole].chunks_exact(es) {
            convert(self.from, self.to, e, &mut self.buf);
        }
        self.partial.extend_from_slice(&rest[whole..]);
        self.inner.write_all(&self.buf)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even_once() {
        // 1 + 2^-11 is exactly halfway between two f16 values: ties go to even (1.0).
        let x = 1.0f32 + 2f32.powi(-11);
        assert_eq!(
            cast_bytes(DType::F32, DType::F16, &x.to_le_bytes()).unwrap(),
            f16::ONE.to_le_bytes()
        );
        // f64 -> f16 goes through f32 as in torch: 1 + 2^-11 + 2^-40 first becomes the tie
        // 1 + 2^-11, which then rounds down to 1.0 (torch 2.15 gives 0x3c00 too).
        let y = 1.0f64 + 2f64.powi(-11) + 2f64.powi(-40);
        assert_eq!(
            cast_bytes(DType::F64, DType::F16, &y.to_le_bytes()).unwrap(),
            f16::ONE.to_le_bytes()
        );
    }

    #[test]
    fn writer_handles_elements_split_across_writes() {
        let vals: Vec<u8> = [1.5f32, -2.25, 3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut w = CastWriter::new(Vec::new(), DType::F32, DType::BF16).unwrap();
        w.write_all(&vals[..5]).unwrap();
        w.write_all(&vals[5..]).unwrap();
        assert_eq!(w.inner, cast_bytes(DType::F32, DType::BF16, &vals).unwrap());
        assert_eq!(w.inner.len(), 6);
    }

    #[test]
    fn integer_tensors_are_refused_not_a_panic() {
        let ints = 7i64.to_le_bytes();
        assert!(cast_bytes(DType::I64, DType::F16, &ints).is_err());
        assert!(cast_bytes(DType::F32, DType::I64, &[0; 4]).is_err());
        assert!(CastWriter::new(Vec::new(), DType::I64, DType::BF16).is_err());
        // The same type passes through untouched, integers included.
        assert_eq!(cast_bytes(DType::I64, DType::I64, &ints).unwrap(), ints);
    }
}
