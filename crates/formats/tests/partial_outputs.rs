//! Temporaries of interrupted runs: removed on a signal (through the registry) and by the next
//! run once their writer is gone. In a test binary of its own, because the registry is global to
//! the process.

use illama_formats::output::{remove_partial_outputs, take_notices, AtomicFile, OutputPolicy};

#[test]
fn stale_temporaries_of_dead_runs_are_removed_and_live_ones_on_signal() {
    let dir = tempfile::tempdir().unwrap();
    // pid 2^31-1 is above any pid_max: no such process exists.
    let stale = dir.path().join(".illama-tools-2147483647-abc.partial");
    std::fs::write(&stale, b"half").unwrap();
    let stale_dir = dir.path().join(".illama-tools-2147483647-def.partial");
    std::fs::create_dir(&stale_dir).unwrap();
    std::fs::write(stale_dir.join("model-00001-of-00002.safetensors"), b"x").unwrap();
    let live = dir
        .path()
        .join(format!(".illama-tools-{}-x.partial", std::process::id()));
    std::fs::write(&live, b"live").unwrap();
    let old_style = dir.path().join(".illama-tools-Ab12Cd.partial");
    std::fs::write(&old_style, b"?").unwrap();

    let f =
        AtomicFile::create(&dir.path().join("o.safetensors"), &OutputPolicy::new(false)).unwrap();
    assert!(!stale.exists() && !stale_dir.exists());
    assert!(live.exists(), "a live process's temporary is kept");
    assert!(
        old_style.exists(),
        "a temporary of unknown owner is named, not removed"
    );
    let notices = take_notices();
    assert_eq!(
        notices
            .iter()
            .filter(|n| n.contains("interrupted run"))
            .count(),
        2,
        "{notices:?}"
    );
    assert!(notices.iter().any(|n| n.contains("Ab12Cd")), "{notices:?}");

    let tmp = f.tmp_path().to_path_buf();
    assert!(tmp.exists());
    assert_eq!(remove_partial_outputs(), vec![tmp.clone()]);
    assert!(!tmp.exists());
    drop(f);
    assert!(!dir.path().join("o.safetensors").exists());
}
