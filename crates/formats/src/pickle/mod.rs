//! Python pickles: a strict reader that executes nothing, and a minimal protocol-2 writer.

mod value;
mod vm;
mod write;

pub use value::{Object, Value};
pub use vm::{parse, Id, Pickle, PickleError};
pub use write::PickleWriter;
