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
