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
    #[error("{path}: not a checkpoint this tool reads ({why})")]
    UnknownFormat { path: PathBuf, why: String },
    #[error("{path}: corrupt or truncated file: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path}: pickle: {why}")]
    Pickle { path: PathBuf, why: String },
    #[error("{path}: tensor '{tensor}': {why}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        why: String,
    },
    #[error("{path}: {why}")]
    Unsupported { path: PathBuf, why: String },
    #[error("no tensor named '{0}' in this checkpoint")]
    NoSuchTensor(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {why}")]
    OutputRefused { path: PathBuf, why: String },
    #[error("{path} already exists (use --force to overwrite)")]
    OutputExists { path: PathBuf },
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;

impl FormatError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
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
