//! A strict pickle virtual machine that builds a graph of values and executes nothing.
//!
//! Python's unpickler calls whatever a `GLOBAL` names; this one only records the name. Calls
//! (`REDUCE`, `NEWOBJ`, `BUILD`) become [`Value::Object`] nodes holding the callable and its
//! arguments, which the torch layer later recognises (`_rebuild_tensor_v2`, `OrderedDict`, ...) or
//! keeps as opaque data. Objects live in an arena and are referred to by [`Id`], so that the memo
//! and in-place mutation (`SETITEMS` on a memoised dict) behave as in Python without reference
//! counting.
//!
//! Every length read from the stream is checked against the bytes that remain before anything is
//! allocated, so a hostile header cannot make us allocate more than the input's size.
//!
//! Memory is proportional to the input: each opcode (at least one byte) adds at most three values
//! to the arena (a [`Value`] is 56 bytes, plus text or bytes copied from the input itself), one
//! stack slot or one memo entry. No opcode copies a value already in the arena, except
//! `STACK_GLOBAL`, which copies two strings and therefore refuses names longer than
//! [`MAX_GLOBAL_NAME`] bytes. Error messages quote input text only as a short excerpt.

use crate::error::excerpt;

use super::Value;

/// Longest module or attribute name a `GLOBAL`, `INST` or `STACK_GLOBAL` may carry (Python's own
/// names are far shorter); this bounds what `STACK_GLOBAL`, which copies its two strings, can
/// allocate per input byte.
pub const MAX_GLOBAL_NAME: usize = 1024;

/// Index of a value in [`Pickle::values`].
pub type Id = usize;

/// The decoded object graph of one pickle.
#[derive(Debug)]
pub struct Pickle {
    pub values: Vec<Value>,
    pub root: Id,
    /// Bytes consumed, including the STOP opcode (legacy files hold several pickles in a row).
    pub consumed: usize,
}

impl Pickle {
    pub fn get(&self, id: Id) -> &Value {
        &self.values[id]
    }
}

/// Why a pickle was refused, with the byte offset of the opcode that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleError {
    pub offset: usize,
    pub why: String,
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at byte {})", self.why, self.offset)
    }
}

enum Slot {
    Value(Id),
    Mark,
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    op_start: usize,
    values: Vec<Value>,
    stack: Vec<Slot>,
    memo: std::collections::HashMap<u64, Id>,
}

type R<T> = Result<T, PickleError>;

/// Parses one pickle at the start of `data`.
pub fn parse(data: &[u8]) -> R<Pickle> {
    let mut vm = Vm {
        data,
        pos: 0,
        op_start: 0,
        values: Vec::new(),
        stack: Vec::new(),
        memo: std::collections::HashMap::new(),
    };
    let root = vm.run()?;
    Ok(Pickle {
        values: vm.values,
        root,
        consumed: vm.pos,
    })
}

impl<'a> Vm<'a> {
    fn err<T>(&self, why: impl Into<String>) -> R<T> {
        Err(PickleError {
            offset: self.op_start,
            why: why.into(),
        })
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let remaining = self.data.len() - self.pos;
        if n > remaining {
            return self.err(format!(
                "truncated: needs {n} more bytes, only {remaining} remain"
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> R<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    /// A length prefix that must fit in what remains of the input.
    fn len(&mut self, n: u64) -> R<usize> {
        let remaining = (self.data.len() - self.pos) as u64;
        if n > remaining {
            return self.err(format!(
                "truncated: length {n} exceeds the {remaining} bytes that remain"
            ));
        }
        Ok(n as usize)
    }

    fn line(&mut self) -> R<&'a [u8]> {
        let rest = &self.data[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => self.err("truncated: unterminated text argument"),
        }
    }

    fn line_str(&mut self) -> R<String> {
        let l = self.line()?;
        match std::str::from_utf8(l) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => self.err("text argument is not valid UTF-8"),
        }
    }

    /// A `GLOBAL`/`INST` name line, at most [`MAX_GLOBAL_NAME`] bytes.
    fn global_name(&mut self) -> R<String> {
        let s = self.line_str()?;
        if s.len() > MAX_GLOBAL_NAME {
            return self.err(format!(
                "global name '{}' is longer than {MAX_GLOBAL_NAME} bytes",
                excerpt(&s)
            ));
        }
        Ok(s)
    }

    fn new_value(&mut self, v: Value) -> Id {
        self.values.push(v);
        self.values.len() - 1
    }

    fn push(&mut self, v: Value) {
        let id = self.new_value(v);
        self.stack.push(Slot::Value(id));
    }

    fn pop(&mut self) -> R<Id> {
        match self.stack.pop() {
            Some(Slot::Value(id)) => Ok(id),
            Some(Slot::Mark) => self.err("unexpected MARK on the stack"),
            None => self.err("stack underflow"),
        }
    }

    fn top(&self) -> R<Id> {
        match self.stack.last() {
            Some(Slot::Value(id)) => Ok(*id),
            Some(Slot::Mark) => self.err("unexpected MARK on the stack"),
            None => self.err("stack underflow"),
        }
    }

    /// Pops everything above the topmost MARK, and the MARK.
    fn pop_mark(&mut self) -> R<Vec<Id>> {
        let Some(mark) = self.stack.iter().rposition(|s| matches!(s, Slot::Mark)) else {
            return self.err("no MARK on the stack");
        };
        let items = self
            .stack
            .drain(mark + 1..)
            .map(|s| match s {
                Slot::Value(id) => id,
                Slot::Mark => unreachable!("rposition found the topmost mark"),
            })
            .collect();
        self.stack.pop();
        Ok(items)
    }

    fn memo_get(&mut self, key: u64) -> R<()> {
        match self.memo.get(&key) {
            Some(&id) => {
                self.stack.push(Slot::Value(id));
                Ok(())
            }
            None => self.err(format!("memo key {key} read before it was written")),
        }
    }

    fn memo_put(&mut self, key: u64) -> R<()> {
        let id = self.top()?;
        self.memo.insert(key, id);
        Ok(())
    }

    fn add_dict_items(&mut self, target: Id, items: Vec<Id>) -> R<()> {
        if items.len() % 2 != 0 {
            return self.err("SETITEMS with an odd number of items");
        }
        let pairs: Vec<(Id, Id)> = items.chunks(2).map(|c| (c[0], c[1])).collect();
        match &mut self.values[target] {
            Value::Dict(d) => d.extend(pairs),
            Value::Object(o) => o.dict_items.extend(pairs),
            other => {
                let kind = other.kind();
                return self.err(format!("SETITEM(S) on a {kind}"));
            }
        }
        Ok(())
    }

    fn add_list_items(&mut self, target: Id, items: Vec<Id>) -> R<()> {
        match &mut self.values[target] {
            Value::List(l) => l.extend(items),
            Value::Object(o) => o.list_items.extend(items),
            other => {
                let kind = other.kind();
                return self.err(format!("APPEND(S) on a {kind}"));
            }
        }
        Ok(())
    }

    fn add_set_items(&mut self, target: Id, items: Vec<Id>) -> R<()> {
        match &mut self.values[target] {
            Value::Set(l) => l.extend(items),
            other => {
                let kind = other.kind();
                return self.err(format!("ADDITEMS on a {kind}"));
            }
        }
        Ok(())
    }

    fn object(&mut self, callable: Id, args: Id, kwargs: Option<Id>) {
        self.push(Value::Object(Box::new(super::Object {
            callable,
            args,
            kwargs,
            state: None,
            dict_items: Vec::new(),
            list_items: Vec::new(),
        })));
    }

    fn int_from_text(&mut self, text: &str) -> R<Value> {
        let t = text.trim_end_matches('L');
        match t {
            "00" => return Ok(Value::Bool(false)),
            "01" => return Ok(Value::Bool(true)),
            _ => {}
        }
        match t.parse::<i64>() {
            Ok(v) => Ok(Value::Int(v)),
            Err(_) => self.err(format!(
                "integer '{}' is not a 64-bit integer",
                excerpt(text)
            )),
        }
    }

    fn long_from_bytes(&mut self, b: &[u8]) -> Value {
        if b.is_empty() {
            return Value::Int(0);
        }
        if b.len() <= 8 {
            let neg = b[b.len() - 1] & 0x80 != 0;
            let mut buf = if neg { [0xffu8; 8] } else { [0u8; 8] };
            buf[..b.len()].copy_from_slice(b);
            return Value::Int(i64::from_le_bytes(buf));
        }
        Value::BigInt(b.to_vec())
    }

    fn run(&mut self) -> R<Id> {
        loop {
            self.op_start = self.pos;
            let op = self.u8()?;
            match op {
                // ---- stack and memo
                b'(' => self.stack.push(Slot::Mark),
                b'.' => {
                    let root = self.pop()?;
                    return Ok(root);
                }
                b'0' => {
                    self.stack
                        .pop()
                        .map_or_else(|| self.err("stack underflow"), |_| Ok(()))?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let id = self.top()?;
                    self.stack.push(Slot::Value(id));
                }
                b'g' => {
                    let s = self.line_str()?;
                    let Ok(k) = s.parse::<u64>() else {
                        return self.err(format!("bad GET key '{}'", excerpt(&s)));
                    };
                    self.memo_get(k)?
                }
                b'h' => {
                    let k = self.u8()? as u64;
                    self.memo_get(k)?
                }
                b'j' => {
                    let k = self.u32()? as u64;
                    self.memo_get(k)?
                }
                b'p' => {
                    let s = self.line_str()?;
                    let Ok(k) = s.parse::<u64>() else {
                        return self.err(format!("bad PUT key '{}'", excerpt(&s)));
                    };
                    self.memo_put(k)?
                }
                b'q' => {
                    let k = self.u8()? as u64;
                    self.memo_put(k)?
                }
                b'r' => {
                    let k = self.u32()? as u64;
                    self.memo_put(k)?
                }
                0x94 => {
                    // MEMOIZE
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?
                }
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return self.err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    // FRAME: a length hint only.
                    self.u64()?;
                }

                // ---- scalars
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v as i64))
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64))
                }
                b'I' | b'L' => {
                    let s = self.line_str()?;
                    let v = self.int_from_text(&s)?;
                    self.push(v)
                }
                0x8a => {
                    let n = self.u8()? as u64;
                    let n = self.len(n)?;
                    let b = self.take(n)?;
                    let v = self.long_from_bytes(b);
                    self.push(v)
                }
                0x8b => {
                    let n = self.u32()? as u64;
                    let n = self.len(n)?;
                    let b = self.take(n)?;
                    let v = self.long_from_bytes(b);
                    self.push(v)
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.push(Value::Float(v))
                }
                b'F' => {
                    let s = self.line_str()?;
                    let Ok(v) = s.trim().parse::<f64>() else {
                        return self.err(format!("bad FLOAT '{}'", excerpt(&s)));
                    };
                    self.push(Value::Float(v))
                }

                // ---- strings and bytes
                b'X' => {
                    let n = self.u32()? as u64;
                    self.unicode(n)?
                }
                0x8c => {
                    let n = self.u8()? as u64;
                    self.unicode(n)?
                }
                0x8d => {
                    let n = self.u64()?;
                    self.unicode(n)?
                }
                b'V' => {
                    // Protocol 0 raw-unicode-escape; torch never writes it. Accept plain text.
                    let s = self.line_str()?;
                    self.push(Value::Str(s))
                }
                // Python 2 `str` (STRING, BINSTRING, SHORT_BINSTRING): text, as torch.load
                // decodes it (UTF-8), or bytes when it is not UTF-8.
                b'S' => {
                    let l = self.line()?;
                    let t = l.strip_prefix(b"'").and_then(|x| x.strip_suffix(b"'"));
                    let t = t.or_else(|| l.strip_prefix(b"\"").and_then(|x| x.strip_suffix(b"\"")));
                    let Some(t) = t else {
                        return self.err("STRING argument is not quoted");
                    };
                    let Some(raw) = unescape_py2(t) else {
                        return self.err("STRING argument has a bad escape");
                    };
                    self.push(py2_str(raw))
                }
                b'T' => {
                    let n = self.u32()? as i32;
                    if n < 0 {
                        return self.err(format!("BINSTRING of negative length {n}"));
                    }
                    self.py2_string(n as u64)?
                }
                b'U' => {
                    let n = self.u8()? as u64;
                    self.py2_string(n)?
                }
                b'B' => {
                    let n = self.u32()? as u64;
                    self.bytes(n)?
                }
                b'C' => {
                    let n = self.u8()? as u64;
                    self.bytes(n)?
                }
                0x8e | 0x96 => {
                    let n = self.u64()?;
                    self.bytes(n)?
                }

                // ---- containers
                b')' => self.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(items))
                }
                b']' => self.push(Value::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(items))
                }
                b'a' => {
                    let item = self.pop()?;
                    let target = self.top()?;
                    self.add_list_items(target, vec![item])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.add_list_items(target, items)?
                }
                b'}' => self.push(Value::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return self.err("DICT with an odd number of items");
                    }
                    let pairs = items.chunks(2).map(|c| (c[0], c[1])).collect();
                    self.push(Value::Dict(pairs))
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let target = self.top()?;
                    self.add_dict_items(target, vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.add_dict_items(target, items)?
                }
                0x8f => self.push(Value::Set(Vec::new())),
                0x90 => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.add_set_items(target, items)?
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Value::Set(items))
                }

                // ---- names and calls (recorded, never executed)
                b'c' => {
                    let module = self.global_name()?;
                    let name = self.global_name()?;
                    self.push(Value::Global { module, name })
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&self.values[module], &self.values[name]) {
                        (Value::Str(m), Value::Str(n))
                            if m.len() > MAX_GLOBAL_NAME || n.len() > MAX_GLOBAL_NAME =>
                        {
                            return self.err(format!(
                                "STACK_GLOBAL name of {} bytes (at most {MAX_GLOBAL_NAME})",
                                m.len().max(n.len())
                            ))
                        }
                        (Value::Str(m), Value::Str(n)) => {
                            let v = Value::Global {
                                module: m.clone(),
                                name: n.clone(),
                            };
                            self.push(v)
                        }
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.object(callable, args, None)
                }
                0x81 => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.object(class, args, None)
                }
                0x92 => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.object(class, args, Some(kwargs))
                }
                b'i' => {
                    let module = self.global_name()?;
                    let name = self.global_name()?;
                    let items = self.pop_mark()?;
                    let class = self.new_value(Value::Global { module, name });
                    let args = self.new_value(Value::Tuple(items));
                    self.object(class, args, None)
                }
                b'o' => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return self.err("OBJ without a class");
                    }
                    let class = items.remove(0);
                    let args = self.new_value(Value::Tuple(items));
                    self.object(class, args, None)
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?;
                    match &mut self.values[target] {
                        Value::Object(o) => o.state = Some(state),
                        other => {
                            let kind = other.kind();
                            return self.err(format!("BUILD on a {kind}"));
                        }
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(Value::PersistentId(pid))
                }
                b'P' => {
                    let s = self.line_str()?;
                    let pid = self.new_value(Value::Str(s));
                    self.push(Value::PersistentId(pid))
                }
                0x82..=0x84 => {
                    return self.err("extension-registry opcodes (EXT1/2/4) are not supported")
                }
                0x97 | 0x98 => {
                    return self.err("out-of-band buffers (protocol 5) are not supported")
                }
                other => return self.err(format!("unknown opcode 0x{other:02x}")),
            }
        }
    }

    fn unicode(&mut self, n: u64) -> R<()> {
        let n = self.len(n)?;
        let b = self.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => {
                let s = s.to_string();
                self.push(Value::Str(s));
                Ok(())
            }
            Err(_) => self.err("string is not valid UTF-8"),
        }
    }

    /// BINSTRING / SHORT_BINSTRING: a Python 2 `str` of `n` bytes.
    fn py2_string(&mut self, n: u64) -> R<()> {
        let n = self.len(n)?;
        let b = self.take(n)?.to_vec();
        self.push(py2_str(b));
        Ok(())
    }

    fn bytes(&mut self, n: u64) -> R<()> {
        let n = self.len(n)?;
        let b = self.take(n)?.to_vec();
        self.push(Value::Bytes(b));
        Ok(())
    }
}

/// A Python 2 `str` as `torch.load` (Python 3, `encoding='utf-8'`) reads it: text when its bytes
/// are UTF-8. Python would refuse other bytes; they are kept as bytes here, so that a checkpoint
/// with, say, a Latin-1 note still opens.
fn py2_str(raw: Vec<u8>) -> Value {
    match String::from_utf8(raw) {
        Ok(s) => Value::Str(s),
        Err(e) => Value::Bytes(e.into_bytes()),
    }
}

/// The body of a protocol-0 STRING, written by Python 2's `repr`: `\\`, `\'`, `\"`, `\n`,
/// `\r`, `\t`, `\xhh` and the other escapes Python's `escape_decode` knows. None on a bad escape.
fn unescape_py2(t: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(t.len());
    let mut i = 0;
    while i < t.len() {
        if t[i] != b'\\' {
            out.push(t[i]);
            i += 1;
            continue;
        }
        let c = *t.get(i + 1)?;
        i += 2;
        match c {
            b'\\' | b'\'' | b'"' => out.push(c),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'x' => {
                let hex = t.get(i..i + 2)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let digit = |d: u8| (d as char).to_digit(16).unwrap_or(0) as u8;
                out.push(digit(hex[0]) * 16 + digit(hex[1]));
                i += 2;
            }
            b'0'..=b'7' => {
                // Up to three octal digits.
                let mut v = (c - b'0') as u32;
                for _ in 0..2 {
                    match t.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            // Python keeps an unknown escape as it is.
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_str(n: usize) -> Vec<u8> {
        let mut b = vec![b'X'];
        b.extend((n as u32).to_le_bytes());
        b.extend(std::iter::repeat_n(b'm', n));
        b
    }

    /// STACK_GLOBAL copies its strings; memo reuse would multiply them, so long names are refused.
    #[test]
    fn long_global_names_are_refused() {
        let mut p = b"\x80\x04".to_vec();
        p.extend(long_str(MAX_GLOBAL_NAME + 1));
        p.extend(b"\x94");
        p.extend(long_str(3));
        p.extend(b"\x93.");
        let e = parse(&p).unwrap_err();
        assert!(e.why.contains("STACK_GLOBAL name of 1025 bytes"), "{e}");
        let mut p = b"\x80\x04".to_vec();
        p.extend(long_str(MAX_GLOBAL_NAME));
        p.extend(long_str(3));
        p.extend(b"\x93.");
        assert!(parse(&p).is_ok());
        let mut p = b"c".to_vec();
        p.extend(std::iter::repeat_n(b'm', 5000));
        p.extend(b"\nx\n.");
        let e = parse(&p).unwrap_err();
        assert!(
            e.why.len() < 200 && e.why.contains("5000 bytes in all"),
            "{e}"
        );
    }

    /// Python 2 `str` (SHORT_BINSTRING, BINSTRING, protocol-0 STRING with its escapes) reads as
    /// text when it is UTF-8, as `torch.load` decodes it, and as bytes when it is not.
    #[test]
    fn python2_strings_are_text_when_utf8() {
        let p = parse(
            b"\x80\x02(U\x03abcT\x02\x00\x00\x00\xc3\xa9U\x02\xff\xfeS'a\\'b\\x41\\n\\\\'\nl.",
        )
        .unwrap();
        let Value::List(items) = p.get(p.root) else {
            panic!("{:?}", p.get(p.root))
        };
        let got: Vec<&Value> = items.iter().map(|&i| p.get(i)).collect();
        assert_eq!(
            got,
            [
                &Value::Str("abc".into()),
                &Value::Str("\u{e9}".into()),
                &Value::Bytes(vec![0xff, 0xfe]),
                &Value::Str("a'bA\n\\".into()),
            ]
        );
        let e = parse(b"T\xff\xff\xff\xffabc.").unwrap_err();
        assert!(e.why.contains("negative length"), "{e}");
        let e = parse(b"S'\\x4g'\n.").unwrap_err();
        assert!(e.why.contains("bad escape"), "{e}");
    }

    #[test]
    fn messages_quote_only_an_excerpt() {
        for op in [b'I', b'L', b'F', b'g', b'p'] {
            let mut p = vec![op];
            p.extend(std::iter::repeat_n(b'7', 1 << 20));
            p.extend(b"x\n.");
            let e = parse(&p).unwrap_err().to_string();
            assert!(e.len() < 200, "{}: {} bytes", op as char, e.len());
        }
    }
}
