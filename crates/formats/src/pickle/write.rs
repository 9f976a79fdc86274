/// Emits protocol-2 opcodes, only those `torch.load(weights_only=True)` accepts.
///
/// The caller composes objects from these primitives in stack order, exactly as a pickle is read.
#[derive(Debug)]
pub struct PickleWriter {
    buf: Vec<u8>,
}

impl Default for PickleWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PickleWriter {
    pub fn new() -> Self {
        PickleWriter { buf: vec![0x80, 2] }
    }

    pub fn global(&mut self, module: &str, name: &str) {
        self.buf.push(b'c');
        self.buf.extend_from_slice(module.as_bytes());
        self.buf.push(b'\n');
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(b'\n');
    }

    pub fn mark(&mut self) {
        self.buf.push(b'(');
    }

    /// Closes a tuple opened with [`mark`](Self::mark).
    pub fn tuple_from_mark(&mut self) {
        self.buf.push(b't');
    }

    pub fn empty_tuple(&mut self) {
        self.buf.push(b')');
    }

    pub fn empty_dict(&mut self) {
        self.buf.push(b'}');
    }

    /// Adds the key/value pairs pushed since the last mark to the dict below them.
    pub fn setitems(&mut self) {
        self.buf.push(b'u');
    }

    pub fn reduce(&mut self) {
        self.buf.push(b'R');
    }

    pub fn build(&mut self) {
        self.buf.push(b'b');
    }

    pub fn persistent_id(&mut self) {
        self.buf.push(b'Q');
    }

    pub fn none(&mut self) {
        self.buf.push(b'N');
    }

    pub fn bool(&mut self, v: bool) {
        self.buf.push(if v { 0x88 } else { 0x89 });
    }

    pub fn str(&mut self, s: &str) {
        self.buf.push(b'X');
        self.buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(s.as_bytes());
    }

    pub fn float(&mut self, v: f64) {
        self.buf.push(b'G');
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn int(&mut self, v: i64) {
        if (0..256).contains(&v) {
            self.buf.extend_from_slice(&[b'K', v as u8]);
        } else if (0..65536).contains(&v) {
            self.buf.push(b'M');
            self.buf.extend_from_slice(&(v as u16).to_le_bytes());
        } else if i32::try_from(v).is_ok() {
            self.buf.push(b'J');
            self.buf.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            // LONG1: minimal little-endian two's complement.
            let bytes = v.to_le_bytes();
            let mut n = 8;
            while n > 1 {
                let (last, prev) = (bytes[n - 1], bytes[n - 2]);
                let redundant =
                    (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0);
                if !redundant {
                    break;
                }
                n -= 1;
            }
            self.buf.extend_from_slice(&[0x8a, n as u8]);
            self.buf.extend_from_slice(&bytes[..n]);
        }
    }

    /// A tuple of ints (shapes, strides).
    pub fn int_tuple(&mut self, items: &[i64]) {
        self.mark();
        for &i in items {
            self.int(i);
        }
        self.tuple_from_mark();
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(b'.');
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Value};
    use super::*;

    #[test]
    fn ints_round_trip_through_the_reader() {
        for v in [
            0i64,
            1,
            255,
            256,
            65535,
            65536,
            -1,
            -129,
            i32::MAX as i64,
            i32::MIN as i64,
            1 << 31,
            -(1 << 31) - 1,
            1 << 40,
            i64::MAX,
            i64::MIN,
        ] {
            let mut w = PickleWriter::new();
            w.int(v);
            let p = parse(&w.finish()).unwrap();
            assert_eq!(p.get(p.root), &Value::Int(v), "{v}");
        }
    }
}
