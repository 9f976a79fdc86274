//! Progress of long work: the library reports, the binary draws (or not).

/// Reports progress of long work; the CLI draws a bar, libraries and tests pass [`NoProgress`].
pub trait Progress: Sync {
    fn begin(&self, what: &str, total_bytes: u64);
    fn advance(&self, bytes: u64);
    fn end(&self);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}
