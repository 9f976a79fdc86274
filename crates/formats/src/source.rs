//! Opened checkpoint files and the places inside them where tensor bytes live.

use crate::error::{FormatError, Result};
use memmap2::Mmap;
use std::borrow::Cow;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A checkpoint file, opened and memory-mapped (mapping reads nothing until a page is touched).
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub path: PathBuf,
    pub file: File,
    pub map: Mmap,
}

impl SourceFile {
    pub fn open(path: &Path) -> Result<SourceFile> {
        // Only regular files: a FIFO would block, a device such as /dev/zero never ends.
        let file = crate::input::open_regular(path)?;
        let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        if len == 0 {
            return Err(FormatError::corrupt(path, "the file is empty"));
        }
        // SAFETY: the map is read-only; a checkpoint modified while we read it is the user's
        // concurrent write, the same hazard every mmap-based loader (safetensors, llama.cpp) takes.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?;
        Ok(SourceFile {
            path: path.to_path_buf(),
            file,
            map,
        })
    }

    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Reads bytes with `pread`, without touching the mapping.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| FormatError::io(&self.path, e))
    }

    /// A reader over the file (not the mapping) for parsers that seek around, such as the zip
    /// directory reader: touching mapped pages would count them (with the kernel's large page
    /// folios, megabytes at a time) against our resident memory.
    pub fn reader(&self) -> Result<std::io::BufReader<File>> {
        let f = self
            .file
            .try_clone()
            .map_err(|e| FormatError::io(&self.path, e))?;
        Ok(std::io::BufReader::with_capacity(64 << 10, f))
    }

    /// Maps `[start, start + len)` into our page tables now, in one call
    /// (`MADV_POPULATE_READ`, Linux 5.14 and later) rather than a page fault per folio as the
    /// bytes are touched. A kernel without it is no error (touching the bytes faults them in);
    /// bytes that cannot be read, as when the file was shortened after it was opened, are one,
    /// naming the file, where touching them would kill the process with SIGBUS.
    pub fn populate(&self, start: u64, len: u64) -> Result<()> {
        if len == 0 || start >= self.len() {
            return Ok(());
        }
        let len = len.min(self.len() - start);
        #[cfg(target_os = "linux")]
        if let Err(e) =
            self.map
                .advise_range(memmap2::Advice::PopulateRead, start as usize, len as usize)
        {
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(FormatError::corrupt(
                    &self.path,
                    format!(
                        "bytes {start}..{} cannot be read ({e}): was the file changed while it was read?",
                        start + len
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether bytes `[start, start + len)` are in the page cache, as far as reading at most
    /// [`RESIDENCY_PROBE`] bytes of them with `preadv2(RWF_NOWAIT)` (which returns only what is
    /// cached) tells. `None` where the system cannot say. (`mincore` cannot serve: for a file
    /// the caller may not write, Linux reports every page as cached.)
    pub fn resident(&self, start: u64, len: u64) -> Option<bool> {
        if len == 0 || start.checked_add(len)? > self.len() {
            return None;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            use std::os::fd::AsRawFd;
            let mut buf = vec![0u8; len.min(RESIDENCY_PROBE) as usize];
            let iov = libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            // SAFETY: one iovec describing `buf`, which outlives the call; a plain read of a
            // descriptor this file owns.
            let n = unsafe {
                libc::preadv2(
                    self.file.as_raw_fd(),
                    &iov,
                    1,
                    libc::off_t::try_from(start).ok()?,
                    libc::RWF_NOWAIT,
                )
            };
            if n < 0 {
                let again = std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
                return again.then_some(false);
            }
            Some(n as usize == buf.len())
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        None
    }

    /// Drops our mapping of `[start, start + len)` from the resident set (the page cache keeps
    /// the data; touching it again maps it back).
    pub fn release(&self, start: u64, len: u64) {
        if len == 0 || start >= self.len() {
            return;
        }
        let len = len.min(self.len() - start);
        // SAFETY: the mapping is read-only and file-backed; MADV_DONTNEED only drops our page
        // table entries, and later reads fault the same file contents back in.
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start as usize,
                len as usize,
            )
        };
    }
}

/// The alignment of what a [`MapWindow`] maps and gives back: the x86-64 huge page. Page-cache
/// folios this large are mapped by one page-table entry, and giving back only part of one would
/// split it (a TLB flush on every core running this process).
const MAP_CHUNK: u64 = 2 << 20;

/// At most this many bytes of a range are read to tell whether it is cached
/// ([`SourceFile::resident`]).
const RESIDENCY_PROBE: u64 = 64 << 10;

/// How a [`MapWindow`] maps the bytes it is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapMode {
    /// Map the whole aligned chunks holding them, in one call each. The fastest way to read
    /// scattered rows that are in the page cache; on a cold cache it would read the chunks
    /// whole from disk.
    WholeChunks,
    /// Map only the bytes asked for: reads from disk no more than that.
    Exact,
}

/// Reads byte ranges of memory-mapped files through the map (no copy), keeping mapped only the
/// [`MAP_CHUNK`]-aligned chunks that cover the latest range: moving on gives the others back,
/// so however much of a file is read, at most the latest range plus two chunks count against
/// the resident set. Ranges read in increasing order map and give back each chunk once.
#[derive(Debug, Default)]
pub struct MapWindow<'a> {
    /// The file and the chunk-aligned span of it now mapped.
    open: Option<(&'a SourceFile, u64, u64)>,
}

impl<'a> MapWindow<'a> {
    pub(crate) fn read(
        &mut self,
        src: &'a SourceFile,
        start: u64,
        len: u64,
        mode: MapMode,
    ) -> Result<&'a [u8]> {
        let end = start
            .checked_add(len)
            .filter(|&e| e <= src.len())
            .ok_or_else(|| {
                FormatError::corrupt(
                    &src.path,
                    format!(
                        "{len} bytes at {start} lie beyond the end of the file ({} bytes)",
                        src.len()
                    ),
                )
            })?;
        // Chunks are aligned in memory, where huge pages are, not in the file (the kernel
        // usually places a large mapping on a huge page boundary, so the two agree).
        let skew = src.map.as_ptr() as u64 % MAP_CHUNK;
        let lo = (start + skew - (start + skew) % MAP_CHUNK).saturating_sub(skew);
        let hi = (end + skew)
            .div_ceil(MAP_CHUNK)
            .saturating_mul(MAP_CHUNK)
            .saturating_sub(skew)
            .min(src.len());
        // What of `lo..hi` is newly mapped (in whole-chunk mode); empty ranges are skipped.
        let mut new = [(lo, hi), (hi, hi)];
        match self.open {
            Some((f, open_lo, open_hi)) if std::ptr::eq(f, src) && lo < open_hi && open_lo < hi => {
                // Give back what lies outside the new span; map only what is new in it.
                if open_lo < lo {
                    src.release(open_lo, lo - open_lo);
                }
                if hi < open_hi {
                    src.release(hi, open_hi - hi);
                }
                new = [(lo, open_lo.max(lo)), (open_hi.min(hi), hi)];
            }
            _ => self.close(),
        }
        self.open = Some((src, lo, hi));
        match mode {
            MapMode::WholeChunks => {
                for (a, b) in new.into_iter().filter(|(a, b)| a < b) {
                    src.populate(a, b - a)?;
                }
            }
            MapMode::Exact => src.populate(start, len)?,
        }
        Ok(&src.map[start as usize..end as usize])
    }

    /// Gives back everything mapped.
    pub fn close(&mut self) {
        if let Some((src, lo, hi)) = self.open.take() {
            src.release(lo, hi - lo);
        }
    }
}

impl Drop for MapWindow<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

/// Where a storage's bytes are.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Location {
    /// Stored uncompressed at this file offset: readable in place.
    Mapped { start: u64 },
    /// A DEFLATE-compressed zip entry (rare): inflated on demand.
    Deflated { entry: usize },
}

/// A run of bytes that tensors view: a torch storage, or one safetensors tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Storage {
    /// Index of the file in [`crate::TensorStore::files`].
    pub file: usize,
    /// The storage's key in the checkpoint (`data/<key>` in a torch zip), or the tensor name.
    pub key: String,
    pub nbytes: u64,
    pub(crate) location: Location,
}

impl Storage {
    /// Absolute file offset of the first byte, for storages stored in place.
    pub fn file_offset(&self) -> Option<u64> {
        match self.location {
            Location::Mapped { start } => Some(start),
            Location::Deflated { .. } => None,
        }
    }

    pub(crate) fn bytes<'a>(&self, src: &'a SourceFile) -> Result<Cow<'a, [u8]>> {
        match self.location {
            Location::Mapped { start } => {
                let (s, e) = (start as usize, (start + self.nbytes) as usize);
                Ok(Cow::Borrowed(&src.map[s..e]))
            }
            Location::Deflated { entry } => inflate(src, entry, self.nbytes).map(Cow::Owned),
        }
    }

    /// Reads `buf.len()` bytes starting `at` bytes into the storage, with `pread` for mapped
    /// storages so that streaming a large file does not grow the process's resident set;
    /// compressed storages are inflated up to the end of `buf` through a fixed-size buffer.
    pub(crate) fn read_at(&self, src: &SourceFile, at: u64, buf: &mut [u8]) -> Result<()> {
        match self.location {
            Location::Mapped { start } => src
                .file
                .read_exact_at(buf, start + at)
                .map_err(|e| FormatError::io(&src.path, e)),
            Location::Deflated { entry } => {
                with_inflated(src, entry, self.nbytes, &mut |r, name| {
                    skip(r, at, src, name)?;
                    r.read_exact(buf)
                        .map_err(|e| FormatError::corrupt(&src.path, format!("{name}: {e}")))
                })
            }
        }
    }
}

/// Deflate cannot expand data by more than about 1032:1; a larger claimed size is a lie.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// The most bytes of one compressed zip entry ever inflated into memory at once (a compressed
/// `data.pkl`, or a compressed storage read whole by [`crate::TensorStore::bytes`]). Streaming
/// reads ([`crate::TensorStore::copy_to`] of a contiguous tensor) pass through a fixed buffer and
/// need no such bound.
pub const MAX_INFLATED_BYTES: u64 = 256 << 20;

/// Opens zip entry `entry`, checks that its claimed size is possible from its compressed size and
/// holds `expected` bytes, and hands `f` a reader over its inflated bytes (at most the claimed
/// size) and the entry's name.
pub(crate) fn with_inflated<T>(
    src: &SourceFile,
    entry: usize,
    expected: u64,
    f: &mut dyn FnMut(&mut dyn Read, &str) -> Result<T>,
) -> Result<T> {
    let corrupt = |why: String| FormatError::corrupt(&src.path, why);
    let mut archive = crate::torch::open_zip(src)?;
    let zf = archive
        .by_index(entry)
        .map_err(|e| corrupt(format!("zip entry {entry}: {e}")))?;
    let name = zf.name().map(|n| n.to_string()).unwrap_or_default();
    let size = zf.size();
    if size > zf.compressed_size().saturating_mul(MAX_DEFLATE_RATIO) + 1024 {
        return Err(corrupt(format!(
            "zip entry {name} claims {size} bytes from {} compressed bytes",
            zf.compressed_size()
        )));
    }
    if size < expected {
        return Err(corrupt(format!(
            "zip entry {name} holds {size} bytes but {expected} are needed"
        )));
    }
    let mut r = zf.take(size);
    f(&mut r, &name)
}

/// Reads and discards `n` bytes of `r`.
fn skip(r: &mut dyn Read, n: u64, src: &SourceFile, name: &str) -> Result<()> {
    let got = std::io::copy(&mut r.take(n), &mut std::io::sink())
        .map_err(|e| FormatError::corrupt(&src.path, format!("{name}: {e}")))?;
    if got != n {
        return Err(FormatError::corrupt(
            &src.path,
            format!("{name}: inflated to {got} bytes, {n} were needed"),
        ));
    }
    Ok(())
}

/// Inflates the first `expected` bytes of a zip entry into memory: at most
/// [`MAX_INFLATED_BYTES`].
pub(crate) fn inflate(src: &SourceFile, entry: usize, expected: u64) -> Result<Vec<u8>> {
    with_inflated(src, entry, expected, &mut |r, name| {
        if expected > MAX_INFLATED_BYTES {
            return Err(FormatError::corrupt(
                &src.path,
                format!(
                    "zip entry {name} would inflate to {expected} bytes in memory, more than the {} MiB allowed (compressed entries are read whole)",
                    MAX_INFLATED_BYTES >> 20
                ),
            ));
        }
        let mut out = Vec::with_capacity(expected as usize);
        r.take(expected)
            .read_to_end(&mut out)
            .map_err(|e| FormatError::corrupt(&src.path, format!("zip entry {name}: {e}")))?;
        if out.len() as u64 != expected {
            return Err(FormatError::corrupt(
                &src.path,
                format!(
                    "zip entry {name}: inflated to {} bytes, {expected} were needed",
                    out.len()
                ),
            ));
        }
        Ok(out)
    })
}

/// Streams bytes `[at, at + len)` of a compressed storage to `emit`, through a buffer of `chunk`
/// bytes.
pub(crate) fn stream_inflated(
    src: &SourceFile,
    entry: usize,
    nbytes: u64,
    at: u64,
    len: u64,
    chunk: usize,
    emit: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    with_inflated(src, entry, nbytes, &mut |r, name| {
        skip(r, at, src, name)?;
        let mut buf = vec![0u8; chunk.min(len as usize).max(1)];
        let mut left = len;
        while left > 0 {
            let n = (left as usize).min(buf.len());
            r.read_exact(&mut buf[..n])
                .map_err(|e| FormatError::corrupt(&src.path, format!("zip entry {name}: {e}")))?;
            emit(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `len` bytes whose byte `i` is a function of `i`, opened as a source.
    fn patterned(len: usize) -> (tempfile::NamedTempFile, SourceFile) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &bytes).unwrap();
        let src = SourceFile::open(f.path()).unwrap();
        (f, src)
    }

    fn expected(start: u64, len: u64) -> Vec<u8> {
        (start..start + len)
            .map(|i| (i as usize * 7 + i as usize / 4096) as u8)
            .collect()
    }

    #[test]
    fn map_window_reads_the_bytes_asked_for_in_both_modes() {
        let len = 3 * MAP_CHUNK as usize + 12_345;
        let (_f, src) = patterned(len);
        for mode in [MapMode::WholeChunks, MapMode::Exact] {
            let mut w = MapWindow::default();
            // Increasing rows that cross chunk boundaries, a jump back, then the file's tail.
            let mut ranges: Vec<(u64, u64)> = (0..30).map(|i| (i * 200_003 + 5, 9_000)).collect();
            ranges.push((17, 100));
            ranges.push((len as u64 - 300, 300));
            for (start, n) in ranges {
                let got = w.read(&src, start, n, mode).expect("inside the file");
                assert_eq!(got, &expected(start, n)[..], "{mode:?} at {start}");
            }
            w.close();
            // Given back, the bytes still read the same (mapped in again).
            assert_eq!(
                w.read(&src, 4096, 64, mode).unwrap(),
                &expected(4096, 64)[..]
            );
        }
    }

    #[test]
    fn map_window_keeps_only_the_chunks_around_the_latest_range() {
        let len = 6 * MAP_CHUNK as usize;
        let (_f, src) = patterned(len);
        let mut w = MapWindow::default();
        // Rows spread through the file, then rows that each straddle the next chunk boundary
        // (every window then overlaps the one before).
        let spread = (0..)
            .map(|i| i * 700_001)
            .take_while(|&at| at + 20_000 < len as u64);
        let straddling = (1..6).map(|i| i * MAP_CHUNK - 10_000);
        for at in spread.chain(straddling) {
            w.read(&src, at, 20_000, MapMode::WholeChunks).unwrap();
            let (_, lo, hi) = w.open.expect("a range is mapped");
            assert!(
                lo <= at && at + 20_000 <= hi,
                "the range is inside the window"
            );
            assert!(
                hi - lo <= 2 * MAP_CHUNK,
                "window {lo}..{hi} spans more than two chunks"
            );
            let base = src.map.as_ptr() as u64;
            assert!(
                lo == 0 || (base + lo) % MAP_CHUNK == 0,
                "chunks start on huge pages"
            );
            assert!(hi == len as u64 || (base + hi) % MAP_CHUNK == 0);
        }
    }

    #[test]
    fn map_window_refuses_ranges_outside_the_file() {
        let (_f, src) = patterned(10_000);
        let mut w = MapWindow::default();
        assert!(w.read(&src, 9_990, 11, MapMode::WholeChunks).is_err());
        assert!(w.read(&src, u64::MAX - 2, 5, MapMode::Exact).is_err());
        assert_eq!(w.read(&src, 9_990, 10, MapMode::Exact).unwrap().len(), 10);
    }

    #[test]
    fn a_file_shortened_after_it_was_opened_is_an_error_naming_it() {
        let (f, src) = patterned(3 * MAP_CHUNK as usize);
        std::fs::OpenOptions::new()
            .write(true)
            .open(f.path())
            .unwrap()
            .set_len(MAP_CHUNK)
            .unwrap();
        for mode in [MapMode::Exact, MapMode::WholeChunks] {
            let mut w = MapWindow::default();
            // Within the length seen when opened, beyond the file's end now: touching these
            // bytes would raise SIGBUS, so the read must fail first.
            let err = w
                .read(&src, 2 * MAP_CHUNK + 100, 5_000, mode)
                .map(|_| ())
                .expect_err("the bytes are gone");
            let msg = err.to_string();
            assert!(msg.contains(&f.path().display().to_string()), "{msg}");
            assert!(msg.contains("cannot be read"), "{msg}");
        }
    }

    #[test]
    fn residency_of_a_file_evicted_from_the_page_cache() {
        let (f, src) = patterned(256 << 10);
        std::fs::File::open(f.path()).unwrap().sync_all().unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on a descriptor we own.
        unsafe { libc::posix_fadvise(src.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        // Evicted (clean and not mapped, so the kernel drops it); where the system cannot
        // say, `None`.
        assert_ne!(src.resident(0, 256 << 10), Some(true));
        let mut sink = vec![0u8; 256 << 10];
        src.read_at(0, &mut sink).unwrap();
        assert_ne!(
            src.resident(0, 256 << 10),
            Some(false),
            "read again, so cached"
        );
    }

    #[test]
    fn residency_of_a_file_just_written_and_read() {
        let (_f, src) = patterned(64 << 10);
        let mut sink = vec![0u8; 64 << 10];
        src.read_at(0, &mut sink).unwrap();
        // Just read, so cached; where the system cannot say (not Linux), `None`.
        if let Some(all) = src.resident(0, 64 << 10) {
            assert!(all);
        }
        assert_eq!(src.resident(0, 0), None);
        assert_eq!(src.resident(60 << 10, 8 << 10), None, "past the end");
    }
}
