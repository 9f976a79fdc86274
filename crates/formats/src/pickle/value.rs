use super::Id;

/// One node of a decoded pickle. Containers refer to their items by [`Id`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits, as little-endian two's-complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Set(Vec<Id>),
    /// A module attribute named by `GLOBAL`/`STACK_GLOBAL`. Never imported.
    Global {
        module: String,
        name: String,
    },
    /// The result of a call (`REDUCE`, `NEWOBJ`, `INST`, `OBJ`), never performed.
    /// Boxed, so that every value stays small (the arena holds one per opcode).
    Object(Box<Object>),
    PersistentId(Id),
}

/// A call recorded instead of performed, with whatever `BUILD`, `SETITEMS` and `APPENDS`
/// later did to its result.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub callable: Id,
    pub args: Id,
    pub kwargs: Option<Id>,
    pub state: Option<Id>,
    pub dict_items: Vec<(Id, Id)>,
    pub list_items: Vec<Id>,
}

impl Value {
    /// The kind of value with its article, for messages: `an int`, `a str`, `an integer wider
    /// than 64 bits`.
    pub fn a_kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::BigInt(_) => "an integer wider than 64 bits",
            Value::Float(_) => "a float",
            Value::Str(_) => "a str",
            Value::Bytes(_) => "a bytes object",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
            Value::Set(_) => "a set",
            Value::Global { .. } => "a global",
            Value::Object(_) => "an object",
            Value::PersistentId(_) => "a persistent id",
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::BigInt(_) => "integer wider than 64 bits",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::Global { .. } => "global",
            Value::Object(_) => "object",
            Value::PersistentId(_) => "persistent id",
        }
    }
}
