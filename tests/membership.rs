//! Membership an operator manages: non-voting members (learners) for read scale-out, and
//! autopilot's dead-member cleanup, next to a 3-voter `arca dev cluster`, with extra nodes
//! started from their own configs as real `arca server` processes.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{eventually, stderr, DevCluster, ExtraNode, Formation, ARCA};
use serde_json::Value;

fn start_node(c: &DevCluster, id: u64, api: u16, non_voter: bool) -> ExtraNode {
    c.start_extra(&format!("node{id}"), api, Formation::Join { id, non_voter })
}

fn unseal(c: &DevCluster, node: &ExtraNode) {
    for share in &c.shares[..3] {
        let out = arca_at(c, &node.api, &["operator", "unseal", share]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

fn members(c: &DevCluster) -> Vec<Value> {
    let out = c.arca(1, &["operator", "members", "--format", "json"]);
    serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|m| m.as_array().cloned()).unwrap_or_default()
}

fn autopilot(c: &DevCluster, node: u64) -> Value {
    serde_json::from_str(&c.ok(node, &["operator", "autopilot", "state", "--format", "json"])).unwrap()
}

fn arca_at(c: &DevCluster, api: &str, args: &[&str]) -> std::process::Output {
    Command::new(ARCA)
        .args(args)
        .env("ARCA_ADDR", api)
        .env("ARCA_CACERT", &c.ca)
        .env("ARCA_TOKEN", &c.token)
        .env("HOME", c.home())
        .output()
        .unwrap()
}

#[test]
fn learners_serve_reads_without_a_vote_and_their_loss_stops_nothing() {
    let c = DevCluster::start(3);
    c.issue_certs(5);
    let base = common::free_base(2);
    let learners = [start_node(&c, 4, base, true), start_node(&c, 5, base + 10, true)];

    // They join as non-voters, are unsealed with the cluster's shares, and then serve.
    let members = eventually(Duration::from_secs(60), || {
        let out = c.arca(1, &["operator", "members", "--format", "json"]);
        let m: Value = serde_json::from_slice(&out.stdout).ok()?;
        (m.as_array()?.len() == 5).then_some(m)
    })
    .expect("both learners became members");
    let voters: Vec<u64> =
        members.as_array().unwrap().iter().filter(|m| m["voter"] == true).map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(voters, vec![1, 2, 3], "learners have no vote: {members}");
    for l in &learners {
        unseal(&c, l);
    }

    // Linearizable reads on a learner: a write acknowledged by the voters is read right away.
    for n in 0..5 {
        c.ok(1 + n % 3, &["kv", "put", "app/config", &format!("v={n}")]);
        for l in &learners {
            let got = eventually(Duration::from_secs(10), || {
                let out = arca_at(&c, &l.api, &["kv", "get", "--field", "v", "app/config"]);
                out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            })
            .expect("the learner serves reads once unsealed");
            assert_eq!(got, n.to_string(), "a read on learner {} missed an acknowledged write", l.api);
        }
    }

    // Both learners killed: writes go on at once (the quorum is the voters').
    drop(learners);
    let started = Instant::now();
    for n in 0..10 {
        c.ok(1 + n % 3, &["kv", "put", "app/after", &format!("v={n}")]);
    }
    assert!(started.elapsed() < Duration::from_secs(10), "writes slowed by dead learners: {:?}", started.elapsed());
    assert_eq!(c.ok(2, &["kv", "get", "--field", "v", "app/after"]).trim(), "9");
}

/// Autopilot on (3 s): a 4th voter is killed and removed once it has been silent that long
/// (3 voters are left, the configured minimum), and a fresh node replaces it under a new id.
#[test]
fn autopilot_removes_a_dead_voter_and_a_fresh_node_replaces_it() {
    let c = DevCluster::start_with(
        3,
        "[autopilot]\ncleanup_dead_servers = true\ndead_server_last_contact_threshold_s = 3\nmin_quorum = 3\n",
    );
    c.issue_certs(5);
    let base = common::free_base(2);
    let fourth = start_node(&c, 4, base, false);
    let four = eventually(Duration::from_secs(60), || {
        let m = members(&c);
        (m.len() == 4 && m.iter().all(|m| m["voter"] == true)).then_some(m)
    });
    assert!(four.is_some(), "node 4 did not become a voter: {:?}", members(&c));
    unseal(&c, &fourth);
    let leader = c.leader(1);
    let healthy = eventually(Duration::from_secs(10), || {
        let s = autopilot(&c, leader);
        (s["healthy"] == true).then_some(s)
    })
    .expect("a healthy cluster");
    assert_eq!(healthy["failure_tolerance"], 1, "4 voters, quorum 3: {healthy}");

    // Killed: removed after the threshold; writes never stop.
    drop(fourth);
    let killed = Instant::now();
    let removed = eventually(Duration::from_secs(30), || {
        c.ok(1, &["kv", "put", "app/x", "v=1"]);
        (members(&c).len() == 3).then_some(())
    });
    assert!(removed.is_some(), "autopilot did not remove the dead voter: {:?}", members(&c));
    assert!(killed.elapsed() >= Duration::from_secs(3), "removed before the threshold: {:?}", killed.elapsed());
    let log = c.log();
    assert!(log.contains("autopilot: removing"), "autopilot says what it did");

    // A fresh node with a new id replaces the dead one.
    let fifth = start_node(&c, 5, base + 10, false);
    let replaced = eventually(Duration::from_secs(60), || {
        let m = members(&c);
        (m.len() == 4 && m.iter().any(|m| m["id"] == 5 && m["voter"] == true)).then_some(())
    });
    assert!(replaced.is_some(), "node 5 did not join: {:?}", members(&c));
    unseal(&c, &fifth);
    let read = eventually(Duration::from_secs(10), || {
        let out = arca_at(&c, &fifth.api, &["kv", "get", "--field", "v", "app/x"]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    assert_eq!(read.as_deref(), Some("1"));
}
