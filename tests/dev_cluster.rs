//! End-to-end: `arca dev cluster` and the CLI, as a user runs them.

mod common;

use std::time::{Duration, Instant};

use common::{count_in_files, eventually, stderr, DevCluster};

#[test]
fn secrets_round_trip_on_every_node_and_bad_input_is_refused_clearly() {
    let c = DevCluster::start(3);
    c.ok(1, &["kv", "put", "app/db", "password=s3cret", "user=app"]);
    for node in 1..=3 {
        assert_eq!(c.ok(node, &["kv", "get", "--field", "password", "app/db"]).trim(), "s3cret", "node {node}");
    }
    // A write through a follower, a new version, reads of old versions and listing.
    let follower = (1..=3).find(|&n| n != c.leader(1)).unwrap();
    c.ok(follower, &["kv", "put", "--cas", "1", "app/db", "password=rotated"]);
    assert_eq!(c.ok(1, &["kv", "get", "--field", "password", "--version", "1", "app/db"]).trim(), "s3cret");
    assert_eq!(c.ok(3, &["kv", "get", "--field", "password", "app/db"]).trim(), "rotated");
    assert_eq!(c.ok(2, &["kv", "list", "app/"]).trim(), "db");
    let meta: serde_json::Value =
        serde_json::from_str(&c.ok(2, &["kv", "metadata", "get", "app/db", "--format", "json"])).unwrap();
    assert_eq!(meta["current_version"], 2);

    // Bad inputs: each gets its own message and exit 1; the cluster keeps serving.
    let long_path = "x".repeat(600);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["kv", "put", "a//b", "k=v"], "empty segment"),
        (vec!["kv", "put", "a/../b", "k=v"], "'.' and '..'"),
        (vec!["kv", "put", "a b", "k=v"], "is not allowed"),
        (vec!["kv", "get", &long_path], "longer than 512"),
        (vec!["kv", "put", "--cas", "1", "app/db", "k=v"], "check-and-set failed"),
        (vec!["kv", "get", "--version", "9", "app/db"], "version 9 of app/db does not exist"),
        (vec!["kv", "get", "app/none"], "no secret at app/none"),
    ];
    for (args, expected) in cases {
        let out = c.arca(2, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with("error: ") && err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one readable line: {err}");
    }
    let big = c.dir.path().join("big.txt");
    std::fs::write(&big, "x".repeat(600 * 1024)).unwrap();
    let err = stderr(&c.arca(1, &["kv", "put", "app/big", &format!("v=@{}", big.display())]));
    assert!(err.contains("over the 524288-byte limit"), "{err}");
    let err = stderr(&c.arca_with_token(1, None, &["kv", "get", "app/db"]));
    assert!(err.contains("missing token"), "{err}");
    let err = stderr(&c.arca_with_token(
        1,
        Some("arca_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        &["kv", "get", "app/db"],
    ));
    assert!(err.contains("invalid or expired token"), "{err}");
    assert_eq!(c.arca(1, &["kv", "frobnicate"]).status.code(), Some(2), "usage errors exit 2");
    assert_eq!(c.ok(3, &["kv", "get", "--field", "password", "app/db"]).trim(), "rotated");

    // The console carries Arca's own events, not openraft's routine protocol chatter (its INFO
    // and WARN lines; an ERROR, say an RPC timing out on a loaded machine, is still shown).
    let log = c.log();
    assert!(log.contains("arca server listening") && log.contains("node unsealed"), "{log}");
    let chatter: Vec<&str> = log.lines().filter(|l| l.contains("openraft") && !l.contains(" ERROR ")).collect();
    assert!(chatter.is_empty(), "openraft's routine lines on the console: {chatter:#?}");
}

#[test]
fn no_secret_value_or_token_reaches_any_data_file() {
    let c = DevCluster::start(3);
    let marker = format!("marker-{}", std::process::id()) + "-a7f3c9e1d5b2";
    // The path is stored in clear (paths are not secret); finding it proves the scan reads the
    // files the data lives in, so zero hits for the value means something.
    let control_path = format!("scan/control-{}", std::process::id());
    for i in 0..20 {
        c.ok(1 + i % 3, &["kv", "put", &format!("{control_path}-{i}"), &format!("value={marker}")]);
    }
    for node in 1..=3 {
        assert_eq!(c.ok(node, &["kv", "get", "--field", "value", &format!("{control_path}-0")]).trim(), marker);
    }
    for node in 1..=3 {
        let dir = c.data_dir(node);
        assert!(count_in_files(&dir, control_path.as_bytes()) > 0, "scan sees node {node}'s data files");
        assert_eq!(count_in_files(&dir, marker.as_bytes()), 0, "secret value in clear on node {node}");
        assert_eq!(count_in_files(&dir, c.token.as_bytes()), 0, "root token in clear on node {node}");
        for share in &c.shares {
            assert_eq!(count_in_files(&dir, share.as_bytes()), 0, "unseal share on node {node}");
        }
    }
}

#[test]
fn killing_the_leader_keeps_the_cluster_serving_and_a_restarted_node_comes_back_sealed() {
    let mut c = DevCluster::start(3);
    c.ok(1, &["kv", "put", "app/db", "password=before"]);
    let leader = c.leader(1);
    let survivor = (1..=3).find(|&n| n != leader).unwrap();
    c.kill9(leader);
    let killed = Instant::now();

    // Within 3 s a survivor serves a write and a read.
    let served = eventually(Duration::from_secs(3), || {
        let out = c.arca(survivor, &["kv", "put", "app/db", "password=after"]);
        println!("{:?}: {}", killed.elapsed(), stderr(&out).trim());
        out.status.success().then_some(())
    });
    assert!(
        served.is_some(),
        "no write within 3 s of killing the leader: {}",
        stderr(&c.arca(survivor, &["kv", "get", "app/db"]))
    );
    println!("first write after the leader was killed: {:?}", killed.elapsed());
    let other = (1..=3).find(|&n| n != leader && n != survivor).unwrap();
    assert_eq!(c.ok(other, &["kv", "get", "--field", "password", "app/db"]).trim(), "after");

    // The old leader restarts sealed (logging JSON lines for a log shipper), and serves the
    // latest data once unsealed.
    c.restart_with(leader, &["--log-format", "json"]);
    let status = eventually(Duration::from_secs(30), || {
        let out = c.arca(leader, &["status", "--format", "json"]);
        out.status.success().then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap())
    })
    .expect("restarted node answers status");
    assert_eq!(status["sealed"], true);
    let err = stderr(&c.arca(leader, &["kv", "get", "app/db"]));
    assert!(err.contains("node is sealed; unseal it with 'arca operator unseal'"), "{err}");
    for share in &c.shares[1..4] {
        c.ok(leader, &["operator", "unseal", share]);
    }
    assert_eq!(c.ok(leader, &["kv", "get", "--field", "password", "app/db"]).trim(), "after");
    let log = std::fs::read_to_string(c.restart_log(leader)).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    assert!(lines.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string()), "{log}");
    assert!(lines.iter().any(|l| l["fields"]["message"] == "node unsealed"), "{log}");
}

#[test]
fn wrong_shares_keep_a_node_sealed_with_a_clear_error_each() {
    let c = DevCluster::start(3);
    c.ok(2, &["operator", "seal"]);
    let status =
        |node| -> serde_json::Value { serde_json::from_str(&c.ok(node, &["status", "--format", "json"])).unwrap() };
    assert_eq!(status(2)["sealed"], true);
    assert_eq!(status(1)["sealed"], false, "sealing is per node");

    // A share of another cluster: made by a second, independent dev cluster.
    let other = DevCluster::start(1);
    let cases = [
        ("not-a-share!", "not valid base64"),
        ("aGVsbG8=", "decodes to 5 bytes"),
        (other.shares[0].as_str(), "different share set"),
    ];
    c.ok(2, &["operator", "unseal", &c.shares[0]]);
    for (share, expected) in cases {
        let out = c.arca(2, &["operator", "unseal", share]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains(expected), "{share}: {}", stderr(&out));
    }
    let err = stderr(&c.arca(2, &["operator", "unseal", &c.shares[0]]));
    assert!(err.contains("was already provided"), "{err}");
    c.ok(2, &["operator", "unseal", &c.shares[1]]);
    let s = status(2);
    assert_eq!(
        (s["sealed"].as_bool(), s["progress"].as_u64()),
        (Some(true), Some(2)),
        "two of three shares: still sealed"
    );
    assert!(stderr(&c.arca(2, &["kv", "list"])).contains("node is sealed"));
    c.ok(2, &["operator", "unseal", &c.shares[4]]);
    assert_eq!(status(2)["sealed"], false);
    c.ok(2, &["kv", "put", "x", "k=v"]);
}
