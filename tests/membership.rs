//! Membership an operator manages: non-voting members (learners) for read scale-out, next to a
//! 3-voter `arca dev cluster`, started from their own configs as real `arca server` processes.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{eventually, stderr, DevCluster, ARCA};
use serde_json::Value;

struct Node {
    child: Child,
    api: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts node `id` from node 1's config, on its own ports and data dir, joining node 1 as a
/// non-voter.
fn start_learner(c: &DevCluster, id: u64, api: u16) -> Node {
    let dir = c.dir.path();
    let config = std::fs::read_to_string(c.config(1)).unwrap();
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let text = config
        .replace(&addr(c.base), &addr(api))
        .replace(&addr(c.base + 1), &addr(api + 1))
        .replace(&dir.join("node1/").display().to_string(), &dir.join(format!("node{id}/")).display().to_string())
        .replace("node_id = 1", &format!("node_id = {id}"))
        .replace("bootstrap = true", &format!("join = [\"{}\"]\nnon_voter = true", addr(c.base + 1)))
        .replace("node1", &format!("node{id}"));
    let node_dir = dir.join(format!("node{id}"));
    std::fs::create_dir_all(&node_dir).unwrap();
    std::fs::write(node_dir.join("node.toml"), text).unwrap();
    let log = std::fs::File::create(dir.join(format!("node{id}.log"))).unwrap();
    let child = Command::new(ARCA)
        .args(["server", "--config"])
        .arg(node_dir.join("node.toml"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Node { child, api: format!("https://127.0.0.1:{api}") }
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
    let out = Command::new(ARCA)
        .args(["dev", "certs", "--dir"])
        .arg(c.dir.path().join("certs"))
        .args(["--nodes", "node1,node2,node3,node4,node5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let base = common::free_base(2);
    let learners = [start_learner(&c, 4, base), start_learner(&c, 5, base + 10)];

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
        for share in &c.shares[..3] {
            let out = arca_at(&c, &l.api, &["operator", "unseal", share]);
            assert!(out.status.success(), "{}", stderr(&out));
        }
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
