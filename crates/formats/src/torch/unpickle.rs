//! Turns the object graph of a `torch.save` pickle into a checkpoint tree and a list of tensor
//! descriptions, recognising the handful of globals torch uses to rebuild tensors and treating
//! every other global as opaque data.
//!
//! # Bounds
//!
//! The pickle's graph may reference one value many times (the memo), and the tree we build copies
//! a value each time it is referenced. A tiny pickle could therefore expand to gigabytes, so every
//! node produced is charged against [`MAX_TREE_BYTES`] (64 MiB): its size, plus any text it holds
//! (strings, dict keys, class names) and any shape, stride or key it gives a tensor. Beyond that
//! budget the pickle is refused ("the pickle expands to more than 64 MiB through shared
//! references"). Nesting is limited to [`MAX_DEPTH`] levels, and no value of the pickle is copied
//! before it is charged, so time is bounded by the budget too.

use crate::dtype::DType;
use crate::error::excerpt;
use crate::pickle::{Id, Object, Pickle, Value};
use crate::tree::Node;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};

/// A tensor as the pickle describes it: a strided view into a storage named by key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub storage_offset: usize,
    pub storage_key: String,
}

/// A storage as its persistent id declares it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StorageDecl {
    /// Element type of the storage (`U8` for untyped storages, whose numel counts bytes).
    pub dtype: DType,
    pub numel: u64,
    /// Legacy files may declare a storage as a view `(root key, element offset)` of another.
    pub view_of: Option<(String, u64)>,
}

impl StorageDecl {
    pub fn nbytes(&self) -> Option<u64> {
        self.numel.checked_mul(self.dtype.size() as u64)
    }
}

pub(crate) struct Interpreted {
    pub root: Node,
    pub tensors: Vec<RawTensor>,
    pub storages: BTreeMap<String, StorageDecl>,
}

/// Nesting depth of the objects of a pickle.
pub(crate) const MAX_DEPTH: usize = 512;
/// Bytes the tree built from one pickle may hold (nodes, their text, tensor shapes), however
/// often the pickle references its values.
pub(crate) const MAX_TREE_BYTES: usize = 64 << 20;

/// Why the object tree of a `torch.save` pickle was refused. The cases a caller may act on
/// (a bound reached, something this reader does not support, a tensor's arguments) have their
/// own variant; what is only ever shown is [`UnpickleError::Malformed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnpickleError {
    /// The tree would hold more than `max_bytes` (the pickle references large values many
    /// times).
    #[error(
        "the pickle expands to more than {} MiB through shared references",
        .max_bytes >> 20
    )]
    TooLarge { max_bytes: usize },
    /// Objects nested deeper than `max_depth`.
    #[error("objects are nested more than {max_depth} levels deep")]
    TooDeep { max_depth: usize },
    /// A dict key (a tuple of tuples...) nested deeper than `max_depth`.
    #[error("a dict key nested more than {max_depth} levels deep")]
    KeyTooDeep { max_depth: usize },
    /// A storage class that is not one of torch's (`os.system`, `torch.EvilStorage`).
    #[error("unsupported storage type {}", excerpt(&format!("{module}.{name}")))]
    UnsupportedStorageType { module: String, name: String },
    /// A `torch.<name>` dtype this reader has no [`DType`] for.
    #[error("unsupported dtype torch.{}", excerpt(.name))]
    UnsupportedDtype { name: String },
    /// A storage key that Python 2 wrote as a `str` of bytes that are not UTF-8.
    #[error("storage key is bytes that are not UTF-8 text")]
    StorageKeyNotUtf8,
    /// An integer argument (`what`: `size`, `stride`, `storage size`, ...) that does not fit in
    /// 64 bits.
    #[error("{what} is an integer wider than 64 bits")]
    WideInt { what: &'static str },
    /// A tensor's storage argument is a persistent id of something other than a storage;
    /// `found` describes it (`('module', ...)`).
    #[error(
        "persistent id is {found} where a ('storage', type, key, location, size) tuple is expected"
    )]
    NotAStorage { found: String },
    /// A tensor rebuilt by `rebuild` (`torch._utils._rebuild_tensor_v2`) could not be read.
    #[error("{rebuild}: {why}")]
    Tensor {
        rebuild: String,
        why: Box<UnpickleError>,
    },
    /// Anything else: a pickle whose objects are not what `torch.save` writes.
    #[error("{0}")]
    Malformed(String),
}

impl UnpickleError {
    /// The error itself, or for [`UnpickleError::Tensor`] the reason inside it.
    pub fn innermost(&self) -> &UnpickleError {
        match self {
            UnpickleError::Tensor { why, .. } => why.innermost(),
            other => other,
        }
    }
}

type R<T> = Result<T, UnpickleError>;

pub(crate) fn interpret(p: &Pickle) -> R<Interpreted> {
    let mut it = Interpreter {
        p,
        tensors: Vec::new(),
        tensor_of: BTreeMap::new(),
        storages: BTreeMap::new(),
        path: Vec::new(),
        held: 0,
    };
    let root = it.node(p.root)?;
    Ok(Interpreted {
        root,
        tensors: it.tensors,
        storages: it.storages,
    })
}

struct Interpreter<'a> {
    /// Borrowed for `'a`, so that values can be read without copying them.
    p: &'a Pickle,
    tensors: Vec<RawTensor>,
    /// The same pickled tensor object reached twice is one tensor.
    tensor_of: BTreeMap<Id, usize>,
    storages: BTreeMap<String, StorageDecl>,
    path: Vec<Id>,
    /// Bytes charged so far against [`MAX_TREE_BYTES`].
    held: usize,
}

impl<'a> Interpreter<'a> {
    fn v(&self, id: Id) -> &'a Value {
        self.p.get(id)
    }

    /// Charges `bytes` against [`MAX_TREE_BYTES`].
    fn charge(&mut self, bytes: usize) -> R<()> {
        self.held = self.held.saturating_add(bytes);
        if self.held > MAX_TREE_BYTES {
            return Err(UnpickleError::TooLarge {
                max_bytes: MAX_TREE_BYTES,
            });
        }
        Ok(())
    }

    fn node(&mut self, id: Id) -> R<Node> {
        self.charge(std::mem::size_of::<Node>())?;
        if self.path.len() >= MAX_DEPTH {
            return Err(UnpickleError::TooDeep {
                max_depth: MAX_DEPTH,
            });
        }
        if self.path.contains(&id) {
            return Ok(Node::Opaque {
                class: "<recursive reference>".into(),
                state: None,
            });
        }
        self.path.push(id);
        let r = self.node_inner(id);
        self.path.pop();
        r
    }

    fn node_inner(&mut self, id: Id) -> R<Node> {
        // Charge before copying: nothing of the pickle is copied uncharged.
        Ok(match self.v(id) {
            Value::None => Node::Scalar(Json::Null),
            Value::Bool(b) => Node::Scalar(Json::Bool(*b)),
            Value::Int(i) => Node::Scalar(Json::from(*i)),
            Value::BigInt(b) => {
                self.charge(2 * b.len() + 32)?;
                Node::Scalar(Json::String(big_int_hex(b)))
            }
            Value::Float(f) => Node::Scalar(float_json(*f)),
            Value::Str(s) => {
                self.charge(s.len())?;
                Node::Scalar(Json::String(s.clone()))
            }
            Value::Bytes(b) => Node::Opaque {
                class: format!("bytes[{}]", b.len()),
                state: None,
            },
            Value::Tuple(items) | Value::List(items) | Value::Set(items) => Node::List(
                items
                    .iter()
                    .map(|&i| self.node(i))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Dict(pairs) => self.dict(pairs)?,
            Value::Global { module, name } => {
                self.charge(module.len() + name.len() + 1)?;
                Node::Opaque {
                    class: format!("{module}.{name}"),
                    state: None,
                }
            }
            Value::PersistentId(_) => Node::Opaque {
                class: "<persistent id>".into(),
                state: None,
            },
            Value::Object(o) => self.object(id, o)?,
        })
    }

    fn dict(&mut self, pairs: &[(Id, Id)]) -> R<Node> {
        let mut out: Vec<(String, Node)> = Vec::new();
        // Position of each key in `out`: a dict of n entries costs n look-ups, not n^2/2.
        let mut slot_of: HashMap<String, usize> = HashMap::new();
        for &(k, v) in pairs {
            let mut key = String::new();
            self.key_string(k, &mut key, 0)?;
            // The key is held twice (entry and index), each with its String header.
            self.charge(2 * (key.len() + std::mem::size_of::<(String, Node)>()))?;
            let value = self.node(v)?;
            // Python dicts keep the last value for a repeated key, at the first key's position.
            match slot_of.get(&key) {
                Some(&i) => out[i].1 = value,
                None => {
                    slot_of.insert(key.clone(), out.len());
                    out.push((key, value));
                }
            }
        }
        Ok(Node::Dict(out))
    }

    /// Appends the text of a dict key to `out`; tuple keys join their items with commas.
    fn key_string(&mut self, k: Id, out: &mut String, depth: usize) -> R<()> {
        if depth >= MAX_DEPTH {
            return Err(UnpickleError::KeyTooDeep {
                max_depth: MAX_DEPTH,
            });
        }
        // Each item of a tuple key costs a little, so that a key of shared tuples cannot
        // take time out of proportion to the budget.
        self.charge(8)?;
        match self.v(k) {
            Value::Str(s) => {
                self.charge(s.len())?;
                out.push_str(s)
            }
            Value::Int(i) => out.push_str(&i.to_string()),
            Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
            Value::None => out.push_str("None"),
            Value::Float(f) => out.push_str(&f.to_string()),
            Value::Tuple(items) => {
                for (n, &i) in items.iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    self.key_string(i, out, depth + 1)?;
                }
            }
            other => {
                out.push('<');
                out.push_str(other.kind());
                out.push_str(" key>");
            }
        }
        Ok(())
    }

    fn global_name(&self, id: Id) -> Option<String> {
        match self.v(id) {
            Value::Global { module, name } => Some(format!("{module}.{name}")),
            _ => None,
        }
    }

    /// The items of a tuple or list, borrowed from the pickle (never copied).
    fn tuple_items(&self, id: Id) -> &'a [Id] {
        match self.v(id) {
            Value::Tuple(items) | Value::List(items) => items,
            _ => &[],
        }
    }

    fn object(&mut self, id: Id, o: &Object) -> R<Node> {
        let Some(class) = self.global_name(o.callable) else {
            return Ok(Node::Opaque {
                class: "<call of a computed callable>".into(),
                state: None,
            });
        };
        self.charge(class.len())?;
        let args = self.tuple_items(o.args);
        match class.as_str() {
            "torch._utils._rebuild_tensor_v2"
            | "torch._utils._rebuild_tensor_v3"
            | "torch._utils._rebuild_tensor" => self.rebuild_tensor(id, &class, args),
            // Tensor subclasses: _rebuild_from_type_v2(func, subclass, func_args, state).
            "torch._tensor._rebuild_from_type_v2" => {
                let inner = args.first().and_then(|&f| self.global_name(f));
                match (inner, args.get(2)) {
                    (Some(func), Some(&func_args))
                        if func.starts_with("torch._utils._rebuild_tensor") =>
                    {
                        let func_args = self.tuple_items(func_args);
                        self.rebuild_tensor(id, &func, func_args)
                    }
                    _ => Err(UnpickleError::Malformed(format!(
                        "{} with an unsupported rebuild function",
                        excerpt(&class)
                    ))),
                }
            }
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
                match args.first() {
                    Some(&data) => self.node(data),
                    None => Err(UnpickleError::Malformed(format!(
                        "{} without arguments",
                        excerpt(&class)
                    ))),
                }
            }
            "collections.OrderedDict" | "builtins.dict" | "__builtin__.dict" => {
                // `OrderedDict([(k, v), ...])`, then whatever SETITEMS added, in that order.
                let init = args.first().map_or(&[][..], |&i| self.tuple_items(i));
                self.charge((init.len() + o.dict_items.len()) * std::mem::size_of::<(Id, Id)>())?;
                let mut pairs: Vec<(Id, Id)> = Vec::with_capacity(init.len() + o.dict_items.len());
                for &item in init {
                    if let [k, v] = self.tuple_items(item) {
                        pairs.push((*k, *v));
                    }
                }
                pairs.extend_from_slice(&o.dict_items);
                self.dict(&pairs)
            }
            "torch.Size" | "builtins.list" | "builtins.tuple" => match args.first() {
                Some(&items) => self.node(items),
                None => Ok(Node::List(Vec::new())),
            },
            "numpy.core.multiarray.scalar" | "numpy._core.multiarray.scalar" => {
                Ok(self.numpy_scalar(args).unwrap_or(Node::Opaque {
                    class: "numpy scalar".into(),
                    state: None,
                }))
            }
            _ => {
                let state = match (o.state, args.is_empty()) {
                    (Some(s), _) => Some(Box::new(self.node(s)?)),
                    (None, false) => Some(Box::new(self.node(o.args)?)),
                    (None, true) if !o.dict_items.is_empty() => {
                        Some(Box::new(self.dict(&o.dict_items)?))
                    }
                    (None, true) => None,
                };
                Ok(Node::Opaque { class, state })
            }
        }
    }

    /// A tensor rebuilt by `class(*args)`; the same pickled object reached twice is one tensor.
    fn rebuild_tensor(&mut self, id: Id, class: &str, args: &[Id]) -> R<Node> {
        if let Some(&t) = self.tensor_of.get(&id) {
            return Ok(Node::Tensor(t));
        }
        let t = self
            .tensor(class, args)
            .map_err(|why| UnpickleError::Tensor {
                rebuild: class.to_string(),
                why: Box::new(why),
            })?;
        self.charge(
            std::mem::size_of::<RawTensor>()
                + 2 * std::mem::size_of::<usize>() * t.shape.len()
                + t.storage_key.len(),
        )?;
        self.tensors.push(t);
        let index = self.tensors.len() - 1;
        self.tensor_of.insert(id, index);
        Ok(Node::Tensor(index))
    }

    fn int(&self, id: Id, what: &'static str) -> R<u64> {
        match self.v(id) {
            Value::Int(i) if *i >= 0 => Ok(*i as u64),
            Value::Int(i) => Err(UnpickleError::Malformed(format!(
                "{what} is negative ({i})"
            ))),
            Value::BigInt(_) => Err(UnpickleError::WideInt { what }),
            other => Err(UnpickleError::Malformed(format!(
                "{what} is {}, not an int",
                other.a_kind()
            ))),
        }
    }

    fn usize_tuple(&self, id: Id, what: &'static str) -> R<Vec<usize>> {
        match self.v(id) {
            Value::Tuple(items) | Value::List(items) => items
                .iter()
                .map(|&i| {
                    let v = self.int(i, what)?;
                    usize::try_from(v)
                        .map_err(|_| UnpickleError::Malformed(format!("{what} {v} is too large")))
                })
                .collect(),
            Value::Object(o) if self.global_name(o.callable).as_deref() == Some("torch.Size") => {
                match self.tuple_items(o.args).first() {
                    Some(&inner) => self.usize_tuple(inner, what),
                    None => Ok(Vec::new()),
                }
            }
            other => Err(UnpickleError::Malformed(format!(
                "{what} is {}, not a tuple",
                other.a_kind()
            ))),
        }
    }

    fn tensor(&mut self, class: &str, args: &[Id]) -> R<RawTensor> {
        let needed = if class.ends_with("_v3") { 7 } else { 4 };
        if args.len() < needed {
            return Err(UnpickleError::Malformed(format!(
                "expected at least {needed} arguments, got {}",
                args.len()
            )));
        }
        let (key, storage_dtype) = self.storage(args[0])?;
        let storage_offset = self.int(args[1], "storage offset")? as usize;
        let shape = self.usize_tuple(args[2], "size")?;
        let strides = self.usize_tuple(args[3], "stride")?;
        if shape.len() != strides.len() {
            return Err(UnpickleError::Malformed(format!(
                "size has {} dimensions but stride has {}",
                shape.len(),
                strides.len()
            )));
        }
        let dtype = if class.ends_with("_v3") {
            match self.v(args[6]) {
                Value::Global { module, name } if module == "torch" => DType::from_torch_name(name)
                    .ok_or_else(|| UnpickleError::UnsupportedDtype { name: name.clone() })?,
                other => {
                    return Err(UnpickleError::Malformed(format!(
                        "dtype argument is {}",
                        other.a_kind()
                    )))
                }
            }
        } else {
            storage_dtype
        };
        Ok(RawTensor {
            dtype,
            shape,
            strides,
            storage_offset,
            storage_key: key,
        })
    }

    /// Decodes `('storage', torch.XStorage, key, location, numel[, view_metadata])`, declares the
    /// storage, and returns the key of the storage the tensor views.
    fn storage(&mut self, id: Id) -> R<(String, DType)> {
        let Value::PersistentId(pid) = self.v(id) else {
            return Err(UnpickleError::Malformed(format!(
                "storage argument is {}, not a persistent id",
                self.v(id).a_kind()
            )));
        };
        let items = self.tuple_items(*pid);
        if items.len() < 5 || self.v(items[0]) != &Value::Str("storage".into()) {
            let found = match items.first().map(|&i| self.v(i)) {
                Some(Value::Str(s)) => format!("('{}', ...)", excerpt(s)),
                Some(other) => format!("a tuple starting with {}", other.a_kind()),
                None => self.v(*pid).a_kind().to_string(),
            };
            return Err(UnpickleError::NotAStorage { found });
        }
        let (module, name) = match self.v(items[1]) {
            Value::Global { module, name } => (module.clone(), name.clone()),
            other => {
                return Err(UnpickleError::Malformed(format!(
                    "storage type is {}",
                    other.a_kind()
                )))
            }
        };
        let dtype = if name == "UntypedStorage" && module.starts_with("torch") {
            DType::U8
        } else if module == "torch" || module == "torch.cuda" {
            // Old (legacy-format) checkpoints saved on a GPU name `torch.cuda.FloatStorage`.
            DType::from_torch_storage_class(&name)
                .ok_or(UnpickleError::UnsupportedStorageType { module, name })?
        } else {
            return Err(UnpickleError::UnsupportedStorageType { module, name });
        };
        let key = match self.v(items[2]) {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Bytes(_) => return Err(UnpickleError::StorageKeyNotUtf8),
            other => {
                return Err(UnpickleError::Malformed(format!(
                    "storage key is {}",
                    other.a_kind()
                )))
            }
        };
        let numel = self.int(items[4], "storage size")?;
        self.declare(
            &key,
            StorageDecl {
                dtype,
                numel,
                view_of: None,
            },
        )?;
        // Pre-1.0 files name a view of the root storage: (view key, element offset, view size).
        match items.get(5).map(|&v| self.v(v)) {
            None | Some(Value::None) => Ok((key, dtype)),
            Some(Value::Tuple(view)) if view.len() == 3 => {
                let view_key = match self.v(view[0]) {
                    Value::Str(s) => s.clone(),
                    other => {
                        return Err(UnpickleError::Malformed(format!(
                            "storage view key is {}",
                            other.a_kind()
                        )))
                    }
                };
                let offset = self.int(view[1], "storage view offset")?;
                let size = self.int(view[2], "storage view size")?;
                self.declare(
                    &view_key,
                    StorageDecl {
                        dtype,
                        numel: size,
                        view_of: Some((key, offset)),
                    },
                )?;
                Ok((view_key, dtype))
            }
            Some(other) => Err(UnpickleError::Malformed(format!(
                "storage view metadata is {}",
                other.a_kind()
            ))),
        }
    }

    fn declare(&mut self, key: &str, decl: StorageDecl) -> R<()> {
        match self.storages.get(key) {
            Some(prev) if prev.nbytes() != decl.nbytes() || prev.view_of != decl.view_of => {
                Err(UnpickleError::Malformed(format!(
                    "storage '{}' is declared twice, differently",
                    excerpt(key)
                )))
            }
            Some(_) => Ok(()),
            None => {
                self.charge(key.len() + std::mem::size_of::<(String, StorageDecl)>())?;
                self.storages.insert(key.to_string(), decl);
                Ok(())
            }
        }
    }

    /// Bytes as protocol 3+ writes them, or as protocol 2 does: `_codecs.encode(text, 'latin1')`;
    /// only short ones (a numpy scalar's), so that a shared large value is never copied.
    fn bytes_of(&self, id: Id) -> Option<Vec<u8>> {
        const MAX: usize = 16;
        match self.v(id) {
            Value::Bytes(b) if b.len() <= MAX => Some(b.clone()),
            // Python 2 wrote the bytes as a `str`; the reader made text of them if they were
            // UTF-8, and that text's UTF-8 is those bytes again.
            Value::Str(s) if s.len() <= MAX => Some(s.as_bytes().to_vec()),
            Value::Object(o)
                if self.global_name(o.callable).as_deref() == Some("_codecs.encode") =>
            {
                let args = self.tuple_items(o.args);
                match (
                    args.first().map(|&i| self.v(i)),
                    args.get(1).map(|&i| self.v(i)),
                ) {
                    (Some(Value::Str(text)), Some(Value::Str(enc)))
                        if (enc == "latin1" || enc == "latin-1") && text.len() <= 2 * MAX =>
                    {
                        text.chars().map(|c| u8::try_from(c as u32).ok()).collect()
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn numpy_scalar(&self, args: &[Id]) -> Option<Node> {
        let [dtype, data] = args[..] else { return None };
        let bytes = self.bytes_of(data)?;
        let Value::Object(d) = self.v(dtype) else {
            return None;
        };
        let code = match self.tuple_items(d.args).first().map(|&i| self.v(i)) {
            Some(Value::Str(s)) if s.len() <= 8 => s.clone(),
            _ => return None,
        };
        let big_endian = d.state.is_some_and(|s| {
            self.tuple_items(s)
                .get(1)
                .is_some_and(|&b| self.v(b) == &Value::Str(">".into()))
        });
        if big_endian {
            return None;
        }
        let b = bytes.as_slice();
        let json = match (code.as_str(), b.len()) {
            ("f8", 8) => float_json(f64::from_le_bytes(b.try_into().ok()?)),
            ("f4", 4) => float_json(f32::from_le_bytes(b.try_into().ok()?) as f64),
            ("i8", 8) => Json::from(i64::from_le_bytes(b.try_into().ok()?)),
            ("i4", 4) => Json::from(i32::from_le_bytes(b.try_into().ok()?)),
            ("u8", 8) => Json::from(u64::from_le_bytes(b.try_into().ok()?)),
            ("u4", 4) => Json::from(u32::from_le_bytes(b.try_into().ok()?)),
            ("b1", 1) => Json::Bool(b[0] != 0),
            _ => return None,
        };
        Some(Node::Scalar(json))
    }
}

fn float_json(f: f64) -> Json {
    serde_json::Number::from_f64(f)
        .map(Json::Number)
        .unwrap_or_else(|| Json::String(f.to_string()))
}

fn big_int_hex(le: &[u8]) -> String {
    let hex: String = le.iter().rev().map(|b| format!("{b:02x}")).collect();
    format!("int(0x{hex}, two's complement)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pickle::PickleWriter;

    fn interpret_bytes(bytes: &[u8]) -> R<Interpreted> {
        interpret(&crate::pickle::parse(bytes).unwrap())
    }

    /// A dict of 1000 one-KiB strings, referenced 100 times (100 MiB expanded): refused by the
    /// byte budget, though it is only some thousand nodes.
    #[test]
    fn shared_references_are_charged_by_bytes() {
        let mut p = b"\x80\x02}q\x00(".to_vec();
        for i in 0..1000u32 {
            let key = format!("k{i}");
            p.push(b'X');
            p.extend((key.len() as u32).to_le_bytes());
            p.extend(key.as_bytes());
            p.push(b'X');
            p.extend(1024u32.to_le_bytes());
            p.extend([b'v'; 1024]);
        }
        p.push(b'u');
        let once = {
            let mut q = p.clone();
            q.push(b'.');
            q
        };
        assert!(interpret_bytes(&once).is_ok());
        p.extend(b"0("); // pop the dict, then a list of 100 references to it
        p.extend(b"h\x00".repeat(100));
        p.extend(b"l.");
        let e = interpret_bytes(&p).err().unwrap();
        assert_eq!(
            e,
            UnpickleError::TooLarge {
                max_bytes: MAX_TREE_BYTES
            }
        );
        assert!(
            e.to_string()
                .contains("expands to more than 64 MiB through shared references"),
            "{e}"
        );
    }

    #[test]
    fn ordered_dict_keeps_its_order_and_later_items() {
        // OrderedDict([('a', 1), ('b', 2)]) then SETITEMS c=3.
        let mut p = PickleWriter::new();
        p.global("collections", "OrderedDict");
        p.mark();
        p.mark();
        p.str("a");
        p.int(1);
        p.tuple_from_mark();
        p.mark();
        p.str("b");
        p.int(2);
        p.tuple_from_mark();
        p.tuple_from_mark();
        let mut b = p.finish();
        b.pop(); // STOP
        b.extend(b"\x85R(X\x01\x00\x00\x00cK\x03u.");
        let it = interpret_bytes(&b).unwrap();
        let Node::Dict(d) = it.root else {
            panic!("{:?}", it.root)
        };
        let keys: Vec<&str> = d.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }

    #[test]
    fn deep_tuple_keys_are_refused_not_recursed() {
        // {((((...(None,)...),),): 1} nested 10,000 deep.
        let mut p = b"\x80\x02}N".to_vec();
        p.extend(std::iter::repeat_n(0x85u8, 10_000));
        p.extend(b"K\x01s.");
        let e = interpret_bytes(&p).err().unwrap();
        assert_eq!(e, UnpickleError::KeyTooDeep { max_depth: 512 });
        assert!(e.to_string().contains("nested more than 512 levels"), "{e}");
    }

    #[test]
    fn a_wide_integer_is_called_so() {
        let v = Value::BigInt(vec![0; 9]);
        assert_eq!(v.a_kind(), "an integer wider than 64 bits");
        assert_ne!(v.kind(), "int");
    }

    /// `numpy.float64(3.0)` as Python 2 pickled it: the dtype's byte order and the value's bytes
    /// are `str`s (SHORT_BINSTRING), here valid UTF-8 and so read as text.
    #[test]
    fn python2_numpy_scalars_keep_their_value() {
        let mut p = b"\x80\x02cnumpy.core.multiarray\nscalar\nq\x00cnumpy\ndtype\nq\x01U\x02f8q\x02K\x00K\x01\x87q\x03Rq\x04(K\x03U\x01<q\x05NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x06bU\x08".to_vec();
        p.extend(3.0f64.to_le_bytes());
        p.extend(b"q\x07\x86q\x08Rq\x09.");
        let it = interpret_bytes(&p).unwrap();
        assert_eq!(it.root, Node::Scalar(Json::from(3.0)));
    }

    /// A persistent id that is not a storage is named in the error.
    #[test]
    fn a_module_persistent_id_where_a_storage_belongs_is_named() {
        let mut p = PickleWriter::new();
        p.global("torch._utils", "_rebuild_tensor");
        p.mark();
        p.mark();
        p.str("module");
        p.global("torch.nn", "Linear");
        p.tuple_from_mark();
        p.persistent_id();
        p.int(0);
        p.int_tuple(&[2]);
        p.int_tuple(&[1]);
        p.tuple_from_mark();
        p.reduce();
        let e = interpret_bytes(&p.finish()).err().unwrap();
        match &e {
            UnpickleError::Tensor { rebuild, why } => {
                assert_eq!(rebuild, "torch._utils._rebuild_tensor");
                assert_eq!(
                    **why,
                    UnpickleError::NotAStorage {
                        found: "('module', ...)".into()
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            e.to_string().contains("torch._utils._rebuild_tensor: persistent id is ('module', ...) where a ('storage', type, key, location, size) tuple is expected"),
            "{e}"
        );
    }

    /// `('storage', torch.cuda.FloatStorage, '0', 'cuda:0', 6)` as pre-1.6 GPU checkpoints wrote.
    #[test]
    fn cuda_storage_classes_of_old_checkpoints_are_read() {
        let mut p = PickleWriter::new();
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.mark();
        p.mark();
        p.str("storage");
        p.global("torch.cuda", "FloatStorage");
        p.str("0");
        p.str("cuda:0");
        p.int(6);
        p.tuple_from_mark();
        p.persistent_id();
        p.int(0);
        p.int_tuple(&[2, 3]);
        p.int_tuple(&[3, 1]);
        p.bool(false);
        p.global("collections", "OrderedDict");
        p.empty_tuple();
        p.reduce();
        p.tuple_from_mark();
        p.reduce();
        let parsed = crate::pickle::parse(&p.finish()).unwrap();
        let it = interpret(&parsed).unwrap();
        assert_eq!(it.root, Node::Tensor(0));
        assert_eq!(it.tensors[0].dtype, DType::F32);
        assert_eq!(it.storages["0"].numel, 6);
    }
}
