use std::path::PathBuf;

/// Everything that can go wrong while reading or writing a checkpoint.
///
/// Every variant that concerns a file names it, so that a user holding a directory of shards knows
/// which one is broken.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a checkpoint this tool reads ({})", clip(.why))]
    UnknownFormat { path: PathBuf, why: String },
    #[error("{path}: corrupt or truncated file: {}", clip(.why))]
    Corrupt { path: PathBuf, why: String },
    #[error("{path}: pickle: {}", clip(.why))]
    Pickle { path: PathBuf, why: String },
    /// The pickle was read, but its objects do not make a checkpoint tree: a bound was reached, a
    /// storage type or dtype is not supported, a tensor's arguments are wrong. `entry` is the
    /// pickle's zip entry (`archive/data.pkl`); legacy files have none.
    #[error("{path}: pickle: {}", clip(&in_entry(.entry.as_deref(), .why)))]
    Unpickle {
        path: PathBuf,
        entry: Option<String>,
        why: crate::torch::UnpickleError,
    },
    #[error("{path}: tensor '{}': {}", excerpt(.tensor), clip(.why))]
    BadTensor {
        path: PathBuf,
        tensor: String,
        why: String,
    },
    #[error("{path}: {}", clip(.why))]
    Unsupported { path: PathBuf, why: String },
    /// A GGUF file where a PyTorch or safetensors checkpoint is needed: GGUF is read for listing
    /// and weight selection only ([`crate::gguf`]).
    #[error("{path}: a llama.cpp GGUF file, which is read for listing and weight selection only, not as a PyTorch or safetensors checkpoint")]
    Gguf { path: PathBuf },
    #[error("no tensor named '{}' in this checkpoint", excerpt(.0))]
    NoSuchTensor(String),
    #[error("{}", clip(.0))]
    Invalid(String),
    /// The checkpoint's tree has no entry the user asked for, or its tensors cannot be named.
    #[error("{path}: {}", clip(&.why.to_string()))]
    Tree {
        path: PathBuf,
        why: crate::tree::TreeError,
    },
    #[error("{path}: {why}")]
    OutputRefused { path: PathBuf, why: String },
    #[error("{path} already exists")]
    OutputExists { path: PathBuf },
    /// An input that is not a regular file (a FIFO, a device, a directory), or larger than the
    /// bound for its kind; the message names the path.
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;

impl FormatError {
    /// An I/O failure on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FormatError::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn corrupt(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        FormatError::Corrupt {
            path: path.into(),
            why: why.into(),
        }
    }
}

/// `why`, after the name of the zip entry it concerns when there is one.
fn in_entry(entry: Option<&str>, why: &impl std::fmt::Display) -> String {
    match entry {
        Some(e) => format!("{e}: {why}"),
        None => why.to_string(),
    }
}

/// Longest piece of input text an error message repeats whole.
const EXCERPT_CHARS: usize = 64;

/// `text` as an error message may quote it: whole when short, else its first characters and its
/// length, so that a hostile file cannot make a message as large as itself.
pub fn excerpt(text: &str) -> String {
    if text.chars().count() <= EXCERPT_CHARS {
        return text.to_string();
    }
    let head: String = text.chars().take(EXCERPT_CHARS / 2).collect();
    format!("{head}... ({} bytes in all)", text.len())
}

/// Longest explanation an error message carries whole (a safety net: messages quote input text
/// through [`excerpt`] already).
const MAX_WHY_CHARS: usize = 480;

/// `why`, cut to [`MAX_WHY_CHARS`] characters with its length noted.
fn clip(why: &str) -> String {
    if why.chars().count() <= MAX_WHY_CHARS {
        return why.to_string();
    }
    let head: String = why.chars().take(MAX_WHY_CHARS - 80).collect();
    format!("{head}... (a {}-byte message, cut)", why.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short() {
        assert_eq!(excerpt("model.weight"), "model.weight");
        let long = "9".repeat(2 << 20);
        let e = excerpt(&long);
        assert!(e.len() < 100, "{e}");
        assert!(e.ends_with("(2097152 bytes in all)"), "{e}");
        let err = FormatError::BadTensor {
            path: "x.pth".into(),
            tensor: long,
            why: "bad".into(),
        };
        assert!(err.to_string().len() < 200);
        let err = FormatError::Invalid(format!("a: {}", "x".repeat(1 << 20)));
        assert!(err.to_string().len() < 600, "{err}");
    }
}
