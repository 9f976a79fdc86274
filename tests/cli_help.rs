//! Every command has `--help` with examples and a `--json` flag, as the README says.

mod common;

use common::bin;

const COMMANDS: [&str; 8] = [
    "inspect",
    "convert",
    "select",
    "logits",
    "verify",
    "predict",
    "finetune",
    "quickstart",
];

#[test]
fn every_command_has_examples_and_json() {
    let top = bin().arg("--help").output().unwrap();
    let top = String::from_utf8_lossy(&top.stdout).into_owned();
    for cmd in COMMANDS {
        assert!(top.contains(cmd), "`--help` does not list {cmd}");
        let out = bin().args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success(), "{cmd} --help failed");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Examples"), "{cmd} --help has no examples");
        // Every example line runs this command.
        let examples = help.split("Examples").nth(1).unwrap();
        assert!(
            examples.contains(&format!("illama-tools {cmd}")),
            "{cmd}: examples do not show the command"
        );
        assert!(help.contains("--json"), "{cmd} has no --json");
    }
}

/// The libraries name no flags; the command line adds what to do, in its own flags.
#[test]
fn failures_hint_at_the_flag_that_helps() {
    let dir = tempfile::tempdir().unwrap();
    let weights = common::fixture("model/tiny.safetensors");
    let out = dir.path().join("w.pth");
    let convert = || {
        bin()
            .args([
                "convert",
                weights.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    assert!(convert().status.success());
    let again = convert();
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("already exists") && err.contains("hint: add --force"),
        "{err}"
    );

    let val = dir.path().join("val");
    std::fs::create_dir_all(val.join("n01440764")).unwrap();
    std::fs::write(val.join("n01440764/broken.JPEG"), b"not a jpeg at all").unwrap();
    let v = bin()
        .args([
            "verify",
            "--imagenet",
            val.to_str().unwrap(),
            "--weights",
            weights.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!v.status.success());
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(
        err.contains("broken.JPEG") && err.contains("hint: --skip-bad"),
        "{err}"
    );
    assert!(
        !err.contains("use --skip-bad"),
        "the library names no flag: {err}"
    );

    // A GGUF file given to a command that needs a PyTorch or safetensors checkpoint.
    let gguf = common::fixture("selection/gguf/gqa_q8_0.gguf");
    let c = bin()
        .args([
            "convert",
            gguf.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--force",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&c.stderr);
    assert!(!c.status.success());
    assert!(
        err.contains("gqa_q8_0.gguf: a llama.cpp GGUF file")
            && err.contains("hint: `illama-tools inspect FILE.gguf`"),
        "{err}"
    );
}

/// An error's causes are printed once each: library errors often quote their cause in their own
/// message, and printing the chain as well would say it twice.
#[test]
fn errors_say_their_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pth");
    let out = bin()
        .args(["inspect", missing.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("missing.pth"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
