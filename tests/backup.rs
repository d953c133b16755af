//! Backup and restore (issue: operating a cluster): a disaster-recovery drill on real
//! clusters through the real CLI, a rollback on the same cluster, refusals of damaged and
//! foreign backups, and the Vault API's snapshot endpoints through the real `bao` CLI.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use common::{eventually, stderr, DevCluster};
use serde_json::Value;

fn json(c: &DevCluster, node: u64, token: &str, args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.extend(["--format", "json"]);
    let out = c.arca_with_token(node, Some(token), &full);
    assert!(out.status.success(), "arca {args:?} on node {node}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Everything a user relies on, read through the API with `token`: every version of every
/// secret with its metadata, the policies, and what a reader token sees.
fn vault_state(c: &DevCluster, node: u64, token: &str, paths: &[String]) -> BTreeMap<String, Value> {
    let mut state = BTreeMap::new();
    for path in paths {
        let meta = json(c, node, token, &["kv", "metadata", "get", path]);
        for v in meta["versions"].as_array().unwrap() {
            let n = v["version"].as_u64().unwrap().to_string();
            let live = v["deleted_ms"].is_null() && v["destroyed"] != true;
            if live {
                let got = json(c, node, token, &["kv", "get", path, "--version", &n]);
                state.insert(format!("{path}@{n}"), got["data"].clone());
            }
        }
        state.insert(format!("{path}/metadata"), meta);
    }
    state.insert("policy".into(), json(c, node, token, &["policy", "read", "reader"]));
    state
}

fn rotations(c: &DevCluster, token: &str, path: &str) -> u64 {
    let v = json(c, 1, token, &["rotation", "status", path]);
    let s = if v.is_array() { v[0].clone() } else { v };
    s["rotations"].as_u64().unwrap_or(0)
}

fn sealed(c: &DevCluster, node: u64) -> Option<bool> {
    let out = c.arca_with_token(node, None, &["status", "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["sealed"].as_bool()
}

fn unseal(c: &DevCluster, node: u64, shares: &[String]) -> std::process::Output {
    let mut last = None;
    for share in shares {
        last = Some(c.arca_with_token(node, None, &["operator", "unseal", share]));
    }
    last.unwrap()
}

/// The decompressed contents of a backup (tar members back to back).
fn unpacked(file: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(file).unwrap()).read_to_end(&mut out).unwrap();
    out
}

#[test]
fn disaster_recovery_drill_and_rollback() {
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("vault.backup");
    let a = DevCluster::start(3);
    let root_a = a.token.clone();

    // The workload: secrets with several versions (one deleted, one destroyed), metadata, a
    // policy, a reader token, a rotation that runs on a schedule, and a keyring rotation.
    let paths: Vec<String> = (0..12).map(|i| format!("app/service{i}/db")).collect();
    for (i, p) in paths.iter().enumerate() {
        for v in 1..=3 {
            a.ok(1 + (i as u64 % 3), &["kv", "put", p, &format!("password=secret-{i}-v{v}-plaintext"), "user=app"]);
        }
    }
    a.ok(1, &["kv", "delete", &paths[0], "--versions", "2"]);
    a.ok(2, &["kv", "destroy", &paths[1], "--versions", "1"]);
    a.ok(3, &["kv", "metadata", "put", &paths[2], "--max-versions", "7"]);
    let policy = backups.path().join("reader.hcl");
    std::fs::write(&policy, "path \"secret/data/app/*\" { capabilities = [\"read\"] }\n").unwrap();
    a.ok(1, &["policy", "write", "reader", policy.to_str().unwrap()]);
    let reader = json(&a, 1, &root_a, &["token", "create", "--policy", "reader", "--ttl", "24h"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    a.ok(1, &["kv", "put", "app/rotated", "password=initial"]);
    a.ok(1, &["rotation", "set", "app/rotated", "--rotator", "random", "--every", "2s"]);
    eventually(Duration::from_secs(30), || (rotations(&a, &root_a, "app/rotated") >= 1).then_some(()))
        .expect("the scheduled rotation runs");
    a.ok(1, &["operator", "rotate"]);
    let term = json(&a, 1, &root_a, &["operator", "key-status"])["active_term"].as_u64().unwrap();
    assert!(term >= 2);

    // Save from a follower: the read barrier makes it as current as the leader.
    let follower = (1..=3).find(|n| *n != a.leader(1)).unwrap();
    let saved = json(&a, follower, &root_a, &["operator", "snapshot", "save", file.to_str().unwrap()]);
    assert_eq!(saved["keyring_term"].as_u64(), Some(term), "{saved}");
    let before = vault_state(&a, 1, &root_a, &paths);
    let rotated_before = rotations(&a, &root_a, "app/rotated");
    let audit_before = json(&a, 1, &root_a, &["audit", "list", "--limit", "100000"]).as_array().unwrap().len();

    // Ciphertext only: no secret value, token or key material in the file, compressed or not.
    let raw = std::fs::read(&file).unwrap();
    let plain = unpacked(&file);
    for needle in ["plaintext", &reader, &root_a, "secret-3-v2"] {
        for (what, bytes) in [("file", &raw), ("contents", &plain)] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "the backup's {what} holds {needle:?}"
            );
        }
    }
    for share in &a.shares {
        assert!(!plain.windows(share.len()).any(|w| w == share.as_bytes()), "the backup holds an unseal share");
    }

    // Rollback on the same cluster: a write after the backup disappears, the cluster stays
    // unsealed (its keys open the backup), and the trail records the restore.
    a.ok(2, &["kv", "put", "after/backup", "k=v"]);
    let out = a.arca(2, &["operator", "snapshot", "restore", file.to_str().unwrap()]);
    assert!(out.status.success(), "rollback: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stay unsealed"), "{}", String::from_utf8_lossy(&out.stdout));
    let gone = a.arca(1, &["kv", "get", "after/backup"]);
    assert!(!gone.status.success() && stderr(&gone).contains("no secret at after/backup"), "{}", stderr(&gone));
    assert_eq!(vault_state(&a, 3, &root_a, &paths), before);
    let out = a.arca(1, &["audit", "verify"]);
    assert!(out.status.success(), "audit verify after a rollback: {}", stderr(&out));
    let trail = json(&a, 1, &root_a, &["audit", "list", "--path", "sys/storage/raft/snapshot"]);
    let restore =
        trail.as_array().unwrap().iter().find(|r| r["operation"] == "SnapshotRestore").expect("restore record");
    assert_eq!(restore["outcome"], "ok", "{restore}");

    // Damaged backups are refused before anything changes.
    let bad = backups.path().join("damaged");
    std::fs::write(&bad, &raw[..raw.len() - 100]).unwrap();
    let out = a.arca(1, &["operator", "snapshot", "restore", bad.to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains("truncated"), "{}", stderr(&out));
    let mut altered = raw.clone();
    let at = altered.len() / 2;
    altered[at] ^= 0x20;
    std::fs::write(&bad, &altered).unwrap();
    assert!(!a.arca(1, &["operator", "snapshot", "restore", bad.to_str().unwrap()]).status.success());
    // The CLI checks locally first; the server checks again (a client that sends anything).
    let url = format!("{}/v1/sys/storage/raft/snapshot", a.api(1));
    let posted = std::process::Command::new("curl")
        .args(["-sS", "--cacert", a.ca.to_str().unwrap(), "-H", &format!("X-Vault-Token: {root_a}")])
        .args(["-X", "POST", "--data-binary", &format!("@{}", bad.display()), "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&posted.stdout), "400", "{}", stderr(&posted));
    // Without sudo: refused before the upload is read.
    let out = a.arca_with_token(1, Some(&reader), &["operator", "snapshot", "save", bad.to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains("permission denied"), "{}", stderr(&out));
    assert_eq!(vault_state(&a, 1, &root_a, &paths), before);

    // Disaster: every node and data directory of the cluster is gone.
    let shares_a = a.shares.clone();
    drop(a);

    // A new cluster (other ports, other shares) gets the backup.
    let b = DevCluster::start(3);
    let out = b.arca(1, &["operator", "snapshot", "restore", file.to_str().unwrap()]);
    assert!(
        !out.status.success() && stderr(&out).contains("--force"),
        "a foreign backup needs force: {}",
        stderr(&out)
    );
    b.ok(1, &["kv", "put", "b/only", "k=v"]);
    let out = b.arca(2, &["operator", "snapshot", "restore", "--force", file.to_str().unwrap()]);
    assert!(out.status.success(), "forced restore: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sealed themselves"));
    for node in 1..=3 {
        eventually(Duration::from_secs(20), || (sealed(&b, node) == Some(true)).then_some(()))
            .unwrap_or_else(|| panic!("node {node} did not seal after the restore"));
    }
    // The new cluster's own shares open nothing now.
    for node in 1..=3 {
        unseal(&b, node, &b.shares[..3]);
        assert_eq!(sealed(&b, node), Some(true), "node {node} unsealed with the wrong shares");
        b.arca_with_token(node, None, &["operator", "unseal", "--reset"]);
    }
    for node in 1..=3 {
        let out = unseal(&b, node, &shares_a[..3]);
        assert!(out.status.success(), "unseal node {node} with the original shares: {}", stderr(&out));
        assert_eq!(sealed(&b, node), Some(false));
    }

    // Everything is back, on every node, under the original cluster's tokens.
    for node in 1..=3 {
        let after = eventually(Duration::from_secs(20), || {
            let out = b.arca_with_token(node, Some(&root_a), &["kv", "metadata", "get", &paths[0]]);
            out.status.success().then(|| vault_state(&b, node, &root_a, &paths))
        })
        .expect("the restored node serves");
        assert_eq!(after, before, "node {node} differs from the backup");
    }
    let out = b.arca_with_token(1, Some(&reader), &["kv", "get", &paths[4]]);
    assert!(out.status.success(), "the reader token from the backup works: {}", stderr(&out));
    let out = b.arca_with_token(1, Some(&reader), &["kv", "put", &paths[4], "x=y"]);
    assert!(!out.status.success() && stderr(&out).contains("permission denied"), "{}", stderr(&out));
    let out = b.arca(1, &["kv", "get", "b/only"]);
    assert!(!out.status.success(), "the new cluster's root token and data are gone");
    assert_eq!(json(&b, 2, &root_a, &["operator", "key-status"])["active_term"].as_u64(), Some(term));
    let out = b.arca_with_token(3, Some(&root_a), &["audit", "verify"]);
    assert!(out.status.success(), "audit verify on the restored cluster: {}", stderr(&out));
    let trail = json(&b, 1, &root_a, &["audit", "list", "--limit", "100000"]);
    let trail = trail.as_array().unwrap();
    assert!(trail.len() > audit_before, "the backup's trail is back ({} ≤ {audit_before})", trail.len());
    let restore = trail.iter().rev().find(|r| r["operation"] == "SnapshotRestore").expect("the restore is recorded");
    assert_eq!(restore["details"]["forced"], "true", "{restore}");
    // The rotation schedule resumes under the new leader.
    eventually(Duration::from_secs(30), || (rotations(&b, &root_a, "app/rotated") > rotated_before).then_some(()))
        .expect("the restored rotation schedule runs again");
}

#[test]
fn bao_operator_raft_snapshot_save_and_restore() {
    let Ok(bao) = std::env::var("ARCA_BAO") else {
        panic!("ARCA_BAO must name the OpenBao CLI: run scripts/bao-setup.sh (scripts/test.sh does)");
    };
    let c = DevCluster::start(3);
    c.ok(1, &["kv", "put", "app/x", "k=before"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bao.snap");
    let run = |args: &[&str]| {
        std::process::Command::new(&bao)
            .args(args)
            .env("BAO_ADDR", c.api(2))
            .env("BAO_CACERT", &c.ca)
            .env("BAO_TOKEN", &c.token)
            .output()
            .unwrap()
    };
    let out = run(&["operator", "raft", "snapshot", "save", file.to_str().unwrap()]);
    assert!(out.status.success(), "bao snapshot save: {}", stderr(&out));
    // The file bao saved is an Arca backup like any other.
    c.ok(1, &["operator", "snapshot", "inspect", file.to_str().unwrap()]);
    c.ok(1, &["kv", "put", "app/x", "k=after"]);
    let out = run(&["operator", "raft", "snapshot", "restore", file.to_str().unwrap()]);
    assert!(out.status.success(), "bao snapshot restore: {}", stderr(&out));
    let got = json(&c, 3, &c.token, &["kv", "get", "app/x"]);
    assert_eq!(got["data"]["k"], "before");
}
