//! Helpers shared by the end-to-end tests: the binary, the fixtures, and runs under a memory cap.
#![allow(dead_code)]

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_illama-tools"))
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// What a capped run did.
#[derive(Debug)]
pub struct Capped {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Peak resident memory of the child, in bytes.
    pub max_rss: u64,
}

impl Capped {
    /// The command failed on its own terms: an exit status of 1, not a crash or a kill.
    pub fn failed_cleanly(&self) -> bool {
        self.code == Some(1) && self.signal.is_none()
    }
    pub fn succeeded(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs the binary with `args` under an address-space limit of `limit_bytes` (so that a
/// regression fails fast instead of taking the machine's memory), with standard input closed,
/// and reports its peak RSS. A run that exceeds `timeout_s` is killed (and reported by signal).
pub fn run_capped(args: &[&str], limit_bytes: u64, timeout_s: u64) -> Capped {
    let mut cmd = bin();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // glibc reserves 64 MiB of address space per malloc arena and thread; two arenas keep
        // the reservation small so that the limit measures what is used.
        .env("MALLOC_ARENA_MAX", "2");
    // SAFETY: setrlimit and alarm are async-signal-safe and touch only the child.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit_bytes,
                rlim_max: limit_bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::alarm(timeout_s as u32);
            Ok(())
        });
    }
    let child = cmd.spawn().expect("binary starts");
    let pid = child.id() as libc::pid_t;
    child.wait_with_output_rusage(pid)
}

trait WaitRusage {
    fn wait_with_output_rusage(self, pid: libc::pid_t) -> Capped;
}

impl WaitRusage for std::process::Child {
    fn wait_with_output_rusage(mut self, pid: libc::pid_t) -> Capped {
        use std::io::Read;
        let mut stdout = self.stdout.take().unwrap();
        let mut stderr = self.stderr.take().unwrap();
        let err_reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = stderr.read_to_end(&mut s);
            s
        });
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let err = err_reader.join().unwrap();
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value to be overwritten by wait4.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for our own child, with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        assert_eq!(r, pid, "wait4 failed");
        // The Child must not be waited for again: forget it (its pipes are already taken).
        std::mem::forget(self);
        let st = std::process::ExitStatus::from_raw(status);
        Capped {
            code: st.code(),
            signal: st.signal(),
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
            max_rss: usage.ru_maxrss as u64 * 1024,
        }
    }
}

pub const MIB: u64 = 1 << 20;
