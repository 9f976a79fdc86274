//! sha256 of whole teacher files, computed on background threads while selection runs, so that a
//! selected checkpoint can record exactly what `sha256sum` prints for each file it came from.

use crate::error::SelectError;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one worker hashed: (index of the file, its hash or why not).
type WorkerResult = Vec<(usize, Result<String, SelectError>)>;

/// Hashing in progress: one worker per core (at most one per file), each taking the next file.
/// Dropped before [`FileHashes::wait`] has collected every hash (the selection failed), it
/// stops the workers at their next chunk instead of letting them read the teacher to the end.
pub(crate) struct FileHashes {
    workers: Vec<JoinHandle<WorkerResult>>,
    files: Arc<Vec<PathBuf>>,
    stop: Arc<AtomicBool>,
}

impl Drop for FileHashes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The hashes, in the order of the files given, and how long the caller waited for them.
pub(crate) struct Hashed {
    pub sha256: Vec<(PathBuf, String)>,
    pub waited: Duration,
}

const CHUNK: usize = 1 << 20;

fn hash_file(path: &Path, stop: &AtomicBool) -> Result<String, SelectError> {
    let io = |e: std::io::Error| SelectError::Teacher(format!("{}: {e}", path.display()));
    let mut f =
        illama_formats::input::open_regular(path).map_err(|e| SelectError::Format(e.into()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(SelectError::Teacher(format!(
                "{}: hashing stopped",
                path.display()
            )));
        }
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl FileHashes {
    pub fn spawn(files: Vec<PathBuf>) -> FileHashes {
        let files = Arc::new(files);
        let next = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = (0..cores.min(files.len()))
            .map(|_| {
                let (files, next, stop) = (files.clone(), next.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(f) = files.get(i) else {
                            return done;
                        };
                        done.push((i, hash_file(f, &stop)));
                    }
                })
            })
            .collect();
        FileHashes {
            workers,
            files,
            stop,
        }
    }

    /// Waits for every file's hash.
    pub fn wait(mut self) -> Result<Hashed, SelectError> {
        let start = Instant::now();
        let mut out: Vec<Option<String>> = vec![None; self.files.len()];
        for w in std::mem::take(&mut self.workers) {
            let done = w
                .join()
                .map_err(|_| SelectError::Teacher("a hashing thread panicked".into()))?;
            for (i, r) in done {
                out[i] = Some(r?);
            }
        }
        Ok(Hashed {
            sha256: self
                .files
                .iter()
                .cloned()
                .zip(out.into_iter().map(|h| h.expect("every file was hashed")))
                .collect(),
            waited: start.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_sha256sum_of_each_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"abc").unwrap();
        // Larger than one read, so that chunking is exercised.
        std::fs::write(&b, vec![7u8; 3 * CHUNK + 5]).unwrap();
        let h = FileHashes::spawn(vec![a.clone(), b.clone()])
            .wait()
            .unwrap();
        assert_eq!(h.sha256[0].0, a);
        // sha256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            h.sha256[0].1,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let want: String = Sha256::digest(vec![7u8; 3 * CHUNK + 5])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(h.sha256[1].1, want);
        let missing = FileHashes::spawn(vec![dir.path().join("gone")]).wait();
        assert!(missing.err().unwrap().to_string().contains("gone"));
    }
}
