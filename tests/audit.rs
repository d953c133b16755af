//! End-to-end audit through the real binary: records of a killed node's requests survive on the
//! other nodes; a record altered on disk is named by `arca audit verify`; the CLI lists, exports
//! and hashes.

mod common;

use std::time::Duration;

use common::{eventually, stderr, DevCluster};

fn records(c: &DevCluster, node: u64, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["audit", "list", "--limit", "10000", "--format", "json"];
    all.extend_from_slice(args);
    serde_json::from_str::<Vec<serde_json::Value>>(&c.ok(node, &all)).unwrap()
}

#[test]
fn a_killed_nodes_records_survive_and_a_tampered_record_is_named() {
    let mut c = DevCluster::start(3);
    let victim = 2;
    // Requests answered by the victim: writes, reads, a denied request, a bad token.
    for i in 0..10 {
        c.ok(victim, &["kv", "put", &format!("app/k{i}"), "v=secret-audit-value"]);
        c.ok(victim, &["kv", "get", &format!("app/k{i}")]);
    }
    let denied =
        c.arca_with_token(victim, Some("arca_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), &["kv", "get", "app/k1"]);
    assert_eq!(denied.status.code(), Some(1));
    c.kill9(victim);

    let survivor = 1;
    let mine = eventually(Duration::from_secs(10), || {
        let out = c.arca(survivor, &["audit", "list", "--limit", "10000", "--format", "json"]);
        out.status.success().then(|| serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap())
    })
    .expect("the survivors answer");
    let answered_by_victim: Vec<_> = mine.iter().filter(|r| r["node"] == victim).collect();
    // Records are committed before their requests are handled; outcomes follow, so the last
    // outcome may have died with the node (`unknown`), never the record.
    let kv = |op: &str, decision: &str| {
        answered_by_victim.iter().filter(|r| r["operation"] == op && r["decision"] == decision).count()
    };
    assert_eq!((kv("KvPut", "allowed"), kv("KvGet", "allowed"), kv("KvGet", "unauthenticated")), (10, 10, 1));
    assert!(answered_by_victim
        .iter()
        .all(|r| ["ok", "unknown", "unauthenticated"].contains(&r["outcome"].as_str().unwrap())));
    let text = serde_json::to_string(&mine).unwrap();
    assert!(!text.contains("secret-audit-value") && !text.contains(&c.token), "a secret in the audit trail");

    // Filters, hash search, export.
    // The victim's own denied request may have lost its outcome with it (`unknown`), so the
    // filter is checked on a denial a survivor answers, once its outcome has been committed.
    let refused =
        c.arca_with_token(3, Some("arca_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"), &["kv", "get", "app/k2"]);
    assert_eq!(refused.status.code(), Some(1));
    let denied_only = eventually(Duration::from_secs(10), || {
        let found = records(&c, 3, &["--outcome", "unauthenticated"]);
        found.iter().any(|r| r["node"] == 3).then_some(found)
    })
    .expect("the survivor's refusal is listed under its outcome");
    // The filter matches the outcome or the decision: the victim's refusal may be `unknown`.
    assert!(denied_only.iter().all(|r| r["outcome"] == "unauthenticated" || r["decision"] == "unauthenticated"));
    let hash: serde_json::Value =
        serde_json::from_str(&c.ok(1, &["audit", "hash", &c.token, "--format", "json"])).unwrap();
    let hash = hash["hash"].as_str().unwrap().to_string();
    assert!(
        mine.iter().any(|r| r["request_hmacs"]["token"] == hash.as_str()),
        "the root token's requests are found by HMAC"
    );
    let export = eventually(Duration::from_secs(10), || {
        let out = c.arca(3, &["audit", "export", "--format", "jsonl"]);
        out.status.success().then(|| String::from_utf8(out.stdout).unwrap())
    })
    .expect("export from a survivor");
    assert!(export.lines().count() >= mine.len());
    assert!(export.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));

    // Tamper with one record in the stopped node's RocksDB, bring the node back: verify names it.
    let seq = 7u64;
    {
        let path = c.data_dir(victim).join("db");
        let cfs = ["default", "logs", "raft", "meta", "kv", "sys", "tokens", "audit", "staging"];
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, cfs).expect("open the stopped node's db");
        let cf = db.cf_handle("audit").unwrap();
        let key = [&b"r/"[..], &seq.to_be_bytes()[..]].concat();
        let mut value = db.get_cf(&cf, &key).unwrap().expect("record 7 exists");
        *value.last_mut().unwrap() ^= 0x01;
        db.put_cf(&cf, &key, &value).unwrap();
    }
    c.restart(victim);
    eventually(Duration::from_secs(30), || c.arca(victim, &["status"]).status.success().then_some(()))
        .expect("the restarted node answers");
    for share in &c.shares[..3] {
        c.ok(victim, &["operator", "unseal", share]);
    }
    let out = c.arca(1, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "verify must fail: {}", String::from_utf8_lossy(&out.stdout));
    let err = stderr(&out);
    assert!(err.contains(&format!("node {victim}")) && err.contains(&format!("sequence {seq}")), "{err}");
}

#[test]
fn an_intact_cluster_verifies() {
    let c = DevCluster::start(3);
    for node in 1..=3 {
        c.ok(node, &["kv", "put", "x", "k=v"]);
    }
    let out = c.arca(2, &["audit", "verify"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches(": ok").count(), 3);
}
