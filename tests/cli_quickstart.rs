//! End-to-end test of `illama-tools quickstart` on a short budget: every step runs, fine-tuning
//! lifts accuracy well above chance and above where it started, and it writes only under its
//! folder (refusing a folder it did not make).

mod common;

use common::bin;

#[test]
fn the_pipeline_runs_and_learns() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qs");
    let run = || {
        bin()
            .args([
                "quickstart",
                "--output-dir",
                out.to_str().unwrap(),
                "--epochs",
                "8",
                "--train-per-class",
                "64",
                "--workers",
                "2",
                "--json",
            ])
            .output()
            .unwrap()
    };
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["select"]["meta_layout_identical"], true, "{r}");
    assert_eq!(r["convert"]["identical"], true);
    let before = r["accuracy_before"].as_f64().unwrap();
    let after = r["finetune"]["selected_final_acc1"].as_f64().unwrap();
    let verified = r["verify"]["top1"].as_f64().unwrap();
    // 6 classes: chance is 16.7%.
    assert!(after >= 50.0, "fine-tuned top-1 {after}% (chance 16.7%)");
    assert!(after > before + 20.0, "{before}% -> {after}%");
    assert!(verified >= 50.0, "verify {verified}%");
    assert!(r["finetune"]["random_final_acc1"].as_f64().is_some());
    assert_eq!(r["predict"]["top"].as_array().unwrap().len(), 3);
    // Nothing outside its folder; everything it lists is there.
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "wrote beside its folder"
    );
    for p in [
        "illama_ws_quickstart.pth",
        "run-selected/log.txt",
        "data/val",
    ] {
        assert!(out.join(p).exists(), "{p}");
    }
    // A second run reuses its own folder.
    let again = run();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // A folder with other files is refused and left alone.
    let foreign = dir.path().join("mine");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "keep").unwrap();
    let o = bin()
        .args(["quickstart", "--output-dir", foreign.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("did not write"));
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 1);
}
