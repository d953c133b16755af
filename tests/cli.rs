//! End-to-end tests of the `arca` binary itself.

use std::process::Command;

fn arca(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_arca")).args(args).output().expect("run arca")
}

#[test]
fn version_is_printed() {
    let out = arca(&["--version"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("arca {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn unknown_commands_are_usage_errors() {
    let out = arca(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown command \"frobnicate\""));
}
