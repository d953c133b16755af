//! End-to-end tests of the `arca` binary that need no cluster.

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
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand 'frobnicate'"));
}

#[test]
fn an_invalid_config_exits_2_naming_the_field() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, "node_id = 0\ndata_dir = \"/tmp/x\"\n").unwrap();
    let out = arca(&["server", "--config", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: invalid configuration:") && err.contains("missing field `api`"), "{err}");

    std::fs::write(
        &path,
        std::fs::read_to_string("deploy/compose/node1.toml").unwrap().replace("node_id = 1", "node_id = 0"),
    )
    .unwrap();
    let err = String::from_utf8_lossy(&arca(&["server", "--config", path.to_str().unwrap()]).stderr).into_owned();
    assert!(err.contains("node_id: must be a positive integer"), "{err}");
}

#[test]
fn an_unreachable_node_is_a_one_line_error() {
    let dir = tempfile::TempDir::new().unwrap();
    let certs = dir.path().to_str().unwrap();
    assert!(arca(&["dev", "certs", "--dir", certs, "--nodes", "node1"]).status.success());
    let ca = dir.path().join("ca.pem");
    assert!(ca.exists(), "dev certs writes ca.pem");

    // No CA: said before anything is sent.
    let out = Command::new(env!("CARGO_BIN_EXE_arca"))
        .args(["--addr", "https://127.0.0.1:1", "status"])
        .env_remove("ARCA_CACERT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no CA certificate: set ARCA_CACERT"), "{err}");

    let out = arca(&["--addr", "https://127.0.0.1:1", "--cacert", ca.to_str().unwrap(), "status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: cannot reach https://127.0.0.1:1"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // The hint fits the cause: nothing listens there (not "set ARCA_CACERT"), said once.
    assert!(err.contains("is the node running") && !err.contains("ARCA_CACERT"), "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
}
