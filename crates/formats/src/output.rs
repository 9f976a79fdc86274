//! Output: tensors to stream, and the one policy every writer of this project goes through.
//!
//! The policy ([`OutputPolicy`]):
//! - an output is never an input, nor a directory holding one (same inode, through symlinks and
//!   hard links, for every file and shard a command reads);
//! - special files (FIFOs, devices, sockets) and directories are never replaced, `--force` or
//!   not; without `--force` nothing that exists is replaced;
//! - `--force` replaces a regular file, or, for a directory of shards, only the files this tool
//!   wrote there (listed in its [`MANIFEST`]) and never any other file;
//! - a file or directory appears at its path only once complete: it is written under a hidden
//!   temporary name beside its destination (`.illama-tools-<pid>-<random>.partial`) and renamed
//!   into place. The temporaries of a run that is interrupted by a signal are removed by
//!   [`stop_outputs`] (the binary calls it from its signal handler); those of a run that
//!   was killed outright are removed by the next run that writes to the same folder, once no
//!   process with their pid is alive.

use crate::dtype::DType;
use crate::error::{FormatError, Result};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Streams a tensor's contiguous little-endian bytes into a writer; the path is the output's,
/// for naming it in errors.
pub type WriteBytes<'a> = Box<dyn FnMut(&mut dyn Write, &Path) -> Result<()> + 'a>;

/// A tensor to write: its description and a way to stream its contiguous little-endian bytes.
pub struct OutTensor<'a> {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub nbytes: u64,
    pub write: WriteBytes<'a>,
}

impl<'a> OutTensor<'a> {
    /// A tensor whose bytes are already in memory.
    pub fn from_bytes(
        name: impl Into<String>,
        dtype: DType,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    ) -> OutTensor<'a> {
        OutTensor {
            name: name.into(),
            dtype,
            shape,
            nbytes: bytes.len() as u64,
            write: Box::new(move |w, path| {
                w.write_all(&bytes).map_err(|e| FormatError::io(path, e))
            }),
        }
    }

    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// The file in an output directory that lists the files this tool wrote there: `--force` may
/// replace or remove those, and no others.
pub const MANIFEST: &str = ".illama-tools-output.json";

const TMP_PREFIX: &str = ".illama-tools-";
const TMP_SUFFIX: &str = ".partial";

/// What a command may write over: built once per command from `--force` and every path the
/// command reads.
#[derive(Debug, Clone, Default)]
pub struct OutputPolicy {
    force: bool,
    inputs: Vec<PathBuf>,
}

impl OutputPolicy {
    pub fn new(force: bool) -> OutputPolicy {
        OutputPolicy {
            force,
            inputs: Vec::new(),
        }
    }

    /// Adds paths the command reads (files or directories): no output may be or contain them.
    pub fn protect<P: AsRef<Path>>(mut self, inputs: impl IntoIterator<Item = P>) -> Self {
        self.inputs
            .extend(inputs.into_iter().map(|p| p.as_ref().to_path_buf()));
        self
    }

    pub fn force(&self) -> bool {
        self.force
    }

    fn refuse(dest: &Path, why: impl Into<String>) -> FormatError {
        FormatError::OutputRefused {
            path: dest.to_path_buf(),
            why: why.into(),
        }
    }

    /// Refuses `dest` if it is one of the inputs (the same file, through links).
    fn check_not_input(&self, dest: &Path) -> Result<()> {
        let Some(out) = identity(dest) else {
            return Ok(());
        };
        for input in &self.inputs {
            if identity(input) == Some(out) {
                return Err(Self::refuse(
                    dest,
                    format!(
                        "is an input of this command ({}); choose another output",
                        input.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// May a single file be written at `dest`?
    pub fn check_file(&self, dest: &Path) -> Result<()> {
        self.check_not_input(dest)?;
        let Ok(link) = dest.symlink_metadata() else {
            return Ok(());
        };
        // What the path leads to (a dangling link leads nowhere and is itself replaceable).
        let target = std::fs::metadata(dest).unwrap_or(link);
        let ft = target.file_type();
        if ft.is_dir() {
            return Err(Self::refuse(
                dest,
                "is a directory; name a file to write (directories are never replaced)",
            ));
        }
        if !ft.is_file() && !ft.is_symlink() {
            return Err(Self::refuse(
                dest,
                format!(
                    "is {}; refusing to replace it, even when asked to overwrite",
                    crate::input::kind_of(&ft)
                ),
            ));
        }
        if !self.force {
            return Err(FormatError::OutputExists {
                path: dest.to_path_buf(),
            });
        }
        Ok(())
    }

    /// May a directory of shards be written at `dest`? Returns the files of an earlier output of
    /// this tool there (from its manifest), which the new output replaces.
    pub fn check_dir(&self, dest: &Path) -> Result<BTreeSet<String>> {
        self.check_not_input(dest)?;
        if let Ok(d) = dest.canonicalize() {
            for input in &self.inputs {
                if let Ok(i) = input.canonicalize() {
                    if i.starts_with(&d) {
                        return Err(Self::refuse(
                            dest,
                            format!(
                                "holds an input of this command ({}); choose another output directory",
                                input.display()
                            ),
                        ));
                    }
                }
            }
        }
        let Ok(link) = dest.symlink_metadata() else {
            return Ok(BTreeSet::new());
        };
        let target = std::fs::metadata(dest).unwrap_or(link);
        if !target.is_dir() {
            return Err(Self::refuse(
                dest,
                format!(
                    "is {}; sharded output is a directory",
                    crate::input::kind_of(&target.file_type())
                ),
            ));
        }
        if !self.force {
            return Err(FormatError::OutputExists {
                path: dest.to_path_buf(),
            });
        }
        read_manifest(dest)
    }
}

/// (device, inode) of what `path` leads to.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn read_manifest(dir: &Path) -> Result<BTreeSet<String>> {
    let path = dir.join(MANIFEST);
    if path.symlink_metadata().is_err() {
        return Ok(BTreeSet::new());
    }
    let text = crate::input::read_bounded(&path, 16 << 20, "manifest")
        .map_err(|e| FormatError::Invalid(e.to_string()))?;
    let parsed: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| FormatError::corrupt(&path, format!("not a manifest of this tool: {e}")))?;
    Ok(parsed["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .filter(|n| is_plain_name(n))
        .map(str::to_string)
        .collect())
}

fn is_plain_name(n: &str) -> bool {
    !n.is_empty() && n != "." && n != ".." && !n.contains('/') && n != MANIFEST
}

fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

// ---- temporaries: registered while they exist, so that a signal can remove them

static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static NOTICES: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Set by [`stop_outputs`]: no new temporary may be created.
static CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Creates a temporary with `make` and registers it, holding the registry's lock throughout:
/// a signal handler (which takes the same lock) then either runs before the file exists or sees
/// it registered, never a file that exists unregistered.
fn create_registered<T>(
    make: impl FnOnce() -> std::io::Result<T>,
    path_of: impl Fn(&T) -> &Path,
) -> std::io::Result<T> {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    if CLOSED.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "the process is stopping",
        ));
    }
    let t = make()?;
    live.push(path_of(&t).to_path_buf());
    Ok(t)
}

fn unregister(p: &Path) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|x| x != p);
}

fn notice(s: String) {
    NOTICES.lock().unwrap_or_else(|e| e.into_inner()).push(s);
}

/// For signal handlers: refuses every temporary output from now on, then removes those still
/// being written (so that no other thread can start one between the removal and the exit).
/// After it, the process must exit without committing anything.
pub fn stop_outputs() -> Vec<PathBuf> {
    CLOSED.store(true, std::sync::atomic::Ordering::SeqCst);
    remove_partial_outputs()
}

/// Removes every temporary output of this process that is still being written.
pub fn remove_partial_outputs() -> Vec<PathBuf> {
    let live = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
    for p in &live {
        let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
    }
    live
}

/// Messages about what the output side did on its own (stale temporaries removed), for the
/// caller to show.
pub fn take_notices() -> Vec<String> {
    std::mem::take(&mut *NOTICES.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Removes the temporaries that runs of this tool which no longer exist left in `dir`, and
/// names those it cannot attribute to a process.
fn sweep_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(middle) = name
            .strip_prefix(TMP_PREFIX)
            .and_then(|r| r.strip_suffix(TMP_SUFFIX))
        else {
            continue;
        };
        let path = e.path();
        let pid = middle
            .split('-')
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .filter(|&p| p > 0);
        match pid {
            Some(pid) if !process_alive(pid) => {
                let removed = if e.file_type().is_ok_and(|t| t.is_dir()) {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                if removed.is_ok() {
                    notice(format!(
                        "removed {}, left by an interrupted run (pid {pid})",
                        path.display()
                    ));
                }
            }
            Some(_) => {}
            None => notice(format!(
                "{} looks like an unfinished output of an older version of this tool; remove it if no run is writing it",
                path.display()
            )),
        }
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// `.illama-tools-<pid>-`: the pid tells a later run whether the writer is still alive.
fn temp_prefix() -> String {
    format!("{TMP_PREFIX}{}-", std::process::id())
}

/// A file written under a temporary name beside its destination and renamed over it by
/// [`commit`](Self::commit); dropped without commit, it leaves nothing behind.
pub struct AtomicFile {
    tmp: Option<tempfile::NamedTempFile>,
    dest: PathBuf,
    policy: OutputPolicy,
}

impl AtomicFile {
    pub fn create(dest: &Path, policy: &OutputPolicy) -> Result<AtomicFile> {
        policy.check_file(dest)?;
        let dir = parent_of(dest);
        sweep_stale(&dir);
        let tmp = create_registered(
            || {
                tempfile::Builder::new()
                    .prefix(&temp_prefix())
                    .suffix(TMP_SUFFIX)
                    .tempfile_in(&dir)
            },
            |t| t.path(),
        )
        .map_err(|e| FormatError::io(&dir, e))?;
        Ok(AtomicFile {
            tmp: Some(tmp),
            dest: dest.to_path_buf(),
            policy: policy.clone(),
        })
    }

    /// Where the file is being written.
    pub fn tmp_path(&self) -> &Path {
        self.tmp.as_ref().expect("not committed").path()
    }

    pub fn file(&mut self) -> &mut std::fs::File {
        self.tmp.as_mut().expect("not committed").as_file_mut()
    }

    pub fn commit(mut self) -> Result<PathBuf> {
        let tmp = self.tmp.take().expect("not committed");
        tmp.as_file()
            .sync_all()
            .map_err(|e| FormatError::io(&self.dest, e))?;
        // Checked again: the destination may have changed while we wrote.
        self.policy.check_file(&self.dest)?;
        let path = tmp.path().to_path_buf();
        let r = tmp.persist(&self.dest);
        unregister(&path);
        r.map_err(|e| FormatError::io(&self.dest, e.error))?;
        Ok(self.dest.clone())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(t) = &self.tmp {
            unregister(t.path());
        }
    }
}

/// A directory of files built under a temporary name and moved into place on commit.
pub struct AtomicDir {
    tmp: Option<tempfile::TempDir>,
    dest: PathBuf,
    policy: OutputPolicy,
}

impl AtomicDir {
    pub fn create(dest: &Path, policy: &OutputPolicy) -> Result<AtomicDir> {
        policy.check_dir(dest)?;
        let dir = parent_of(dest);
        sweep_stale(&dir);
        let tmp = create_registered(
            || {
                tempfile::Builder::new()
                    .prefix(&temp_prefix())
                    .suffix(TMP_SUFFIX)
                    .tempdir_in(&dir)
            },
            |t| t.path(),
        )
        .map_err(|e| FormatError::io(&dir, e))?;
        Ok(AtomicDir {
            tmp: Some(tmp),
            dest: dest.to_path_buf(),
            policy: policy.clone(),
        })
    }

    /// The temporary directory to write into.
    pub fn path(&self) -> &Path {
        self.tmp.as_ref().expect("not committed").path()
    }

    /// Moves the written files into place. A new directory is renamed into place whole; into an
    /// existing one (`--force`), the files are moved one by one, replacing only files this tool
    /// wrote there earlier (and refusing any other file of the same name), then the earlier
    /// output's files that the new one does not have are removed.
    pub fn commit(mut self) -> Result<PathBuf> {
        let tmp = self.tmp.take().expect("not committed");
        let tmp_path = tmp.path().to_path_buf();
        let result = self.move_into_place(&tmp_path);
        unregister(&tmp_path);
        drop(tmp);
        result.map(|()| self.dest.clone())
    }

    fn move_into_place(&self, tmp: &Path) -> Result<()> {
        let ours_before = self.policy.check_dir(&self.dest)?;
        let mut names: Vec<String> = std::fs::read_dir(tmp)
            .map_err(|e| FormatError::io(tmp, e))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        write_manifest(tmp, &names)?;
        if self.dest.symlink_metadata().is_err() {
            let kept = tmp.with_extension("commit");
            std::fs::rename(tmp, &kept).map_err(|e| FormatError::io(tmp, e))?;
            return std::fs::rename(&kept, &self.dest).map_err(|e| {
                let _ = std::fs::remove_dir_all(&kept);
                FormatError::io(&self.dest, e)
            });
        }
        for n in &names {
            let at = self.dest.join(n);
            if at.symlink_metadata().is_ok() && !ours_before.contains(n) {
                return Err(OutputPolicy::refuse(
                    &at,
                    "exists and was not written by this tool; remove it or choose another output directory",
                ));
            }
        }
        // Index files last, so that a reader never sees an index naming shards not yet there.
        let (index, shards): (Vec<&String>, Vec<&String>) =
            names.iter().partition(|n| n.ends_with(".json"));
        for n in shards.into_iter().chain(index) {
            std::fs::rename(tmp.join(n), self.dest.join(n))
                .map_err(|e| FormatError::io(self.dest.join(n), e))?;
        }
        for old in ours_before.iter().filter(|o| !names.contains(o)) {
            let _ = std::fs::remove_file(self.dest.join(old));
        }
        std::fs::rename(tmp.join(MANIFEST), self.dest.join(MANIFEST))
            .map_err(|e| FormatError::io(self.dest.join(MANIFEST), e))
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if let Some(t) = &self.tmp {
            unregister(t.path());
        }
    }
}

fn write_manifest(dir: &Path, names: &[String]) -> Result<()> {
    let m = serde_json::json!({
        "written_by": format!("illama-tools {}", env!("CARGO_PKG_VERSION")),
        "files": names,
    });
    let path = dir.join(MANIFEST);
    let text = serde_json::to_string_pretty(&m).expect("json serialises") + "\n";
    std::fs::write(&path, text).map_err(|e| FormatError::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_is_never_an_output_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.pth");
        std::fs::write(&input, b"x").unwrap();
        let link = dir.path().join("link.pth");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let hard = dir.path().join("hard.pth");
        std::fs::hard_link(&input, &hard).unwrap();
        let p = OutputPolicy::new(true).protect([&input]);
        for dest in [&input, &link, &hard] {
            let e = AtomicFile::create(dest, &p).err().unwrap();
            assert!(e.to_string().contains("is an input"), "{e}");
        }
        let e = AtomicDir::create(dir.path(), &p).err().unwrap();
        assert!(e.to_string().contains("holds an input"), "{e}");
        assert_eq!(std::fs::read(&input).unwrap(), b"x");
    }

    #[test]
    fn special_files_and_directories_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = OutputPolicy::new(true);
        let e = AtomicFile::create(Path::new("/dev/null"), &p)
            .err()
            .unwrap();
        assert!(e.to_string().contains("character device"), "{e}");
        let e = AtomicFile::create(dir.path(), &p).err().unwrap();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = AtomicFile::create(&fifo, &p).err().unwrap();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = AtomicDir::create(&file, &p).err().unwrap();
        assert!(e.to_string().contains("a regular file"), "{e}");
    }

    #[test]
    fn force_replaces_only_what_this_tool_wrote_in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let write = |names: &[&str], force: bool| -> Result<PathBuf> {
            let d = AtomicDir::create(&out, &OutputPolicy::new(force))?;
            for n in names {
                std::fs::write(d.path().join(n), n.as_bytes()).unwrap();
            }
            d.commit()
        };
        write(&["a-1-of-2", "a-2-of-2", "index.json"], false).unwrap();
        std::fs::write(out.join("config.json"), b"user's").unwrap();
        assert!(matches!(
            write(&["x"], false),
            Err(FormatError::OutputExists { .. })
        ));
        write(&["a-1-of-1", "index.json"], true).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [MANIFEST, "a-1-of-1", "config.json", "index.json"].map(String::from)
        );
        assert_eq!(std::fs::read(out.join("config.json")).unwrap(), b"user's");
        // A file of the same name that this tool did not write is refused, and kept.
        let e = write(&["config.json"], true).unwrap_err();
        assert!(e.to_string().contains("not written by this tool"), "{e}");
        assert_eq!(std::fs::read(out.join("config.json")).unwrap(), b"user's");
        assert!(leftovers(dir.path()).is_empty());
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.starts_with(TMP_PREFIX))
            .collect()
    }
}
