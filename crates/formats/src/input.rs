//! Opening input files safely: only regular files, never blocking, and never reading more than
//! a stated bound.
//!
//! A path a user passes may name a FIFO (opening it for reading blocks until a writer appears),
//! a device such as `/dev/zero` (reads never end), a directory, or a link to any of these. Every
//! reader of this project opens its inputs through [`open_regular`] or [`read_bounded`], which
//! refuse all of that up front with a message naming the path and what it is.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why an input file was not opened.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: is {what}, not a regular file")]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("{path}: {len} bytes, more than the {max} bytes a {what} may have")]
    TooLarge {
        path: PathBuf,
        len: u64,
        max: u64,
        what: &'static str,
    },
}

/// What a non-regular file is, in words.
pub fn kind_of(ft: &std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Opens `path` for reading if it is (or links to) a regular file.
///
/// The file is opened with `O_NONBLOCK`, so that a FIFO does not block the open, and its type is
/// then checked on the open descriptor, so that nothing can swap the file between the check and
/// the read. (`O_NONBLOCK` has no effect on reads of regular files.)
pub fn open_regular(path: &Path) -> Result<File, InputError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| InputError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let ft = file
        .metadata()
        .map_err(|source| InputError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .file_type();
    if !ft.is_file() {
        return Err(InputError::NotRegular {
            path: path.to_path_buf(),
            what: kind_of(&ft),
        });
    }
    Ok(file)
}

/// Reads a whole regular file of at most `max` bytes; `what` names it in the error
/// (`"shard index"`, `"image"`).
pub fn read_bounded(path: &Path, max: u64, what: &'static str) -> Result<Vec<u8>, InputError> {
    let file = open_regular(path)?;
    let io = |source| InputError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = file.metadata().map_err(io)?.len();
    if len > max {
        return Err(InputError::TooLarge {
            path: path.to_path_buf(),
            len,
            max,
            what,
        });
    }
    let mut out = Vec::with_capacity(len as usize);
    // `take` guards against a file that grows while we read it.
    file.take(max + 1).read_to_end(&mut out).map_err(io)?;
    if out.len() as u64 > max {
        return Err(InputError::TooLarge {
            path: path.to_path_buf(),
            len: out.len() as u64,
            max,
            what,
        });
    }
    Ok(out)
}

/// Reads a whole regular file as UTF-8 text of at most `max` bytes.
pub fn read_text_bounded(path: &Path, max: u64, what: &'static str) -> Result<String, InputError> {
    let bytes = read_bounded(path, max, what)?;
    String::from_utf8(bytes).map_err(|_| InputError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the {what} is not valid UTF-8 text"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_directories_devices_and_fifos_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let e = open_regular(dir.path()).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let e = read_bounded(Path::new("/dev/zero"), 1 << 20, "index").unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open_regular(&fifo).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        // Through a symlink too.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        assert!(open_regular(&link)
            .unwrap_err()
            .to_string()
            .contains("FIFO"));
    }

    #[test]
    fn bounds_the_bytes_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![7u8; 100]).unwrap();
        assert_eq!(read_bounded(&p, 100, "file").unwrap().len(), 100);
        let e = read_bounded(&p, 99, "shard index").unwrap_err();
        assert!(
            e.to_string()
                .contains("more than the 99 bytes a shard index"),
            "{e}"
        );
    }
}
