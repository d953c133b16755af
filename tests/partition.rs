//! Network partitions between real `arca server` processes (issue: proven under faults, the
//! process-level variant of scenarios 1 and 2): each node behind a TCP proxy that cuts links
//! ([`common::proxy`]), while clients on every node read, write, check-and-set and delete hot
//! secrets over gRPC and the Vault HTTP API. In turn:
//!
//! 1. the leader is cut off from both followers: the majority elects another leader and serves,
//!    the old one serves no stale read and acknowledges no write;
//! 2. the leader hears no follower (one way: its messages arrive, their answers do not);
//! 3. a follower is cut off: its clients get errors, never stale data.
//!
//! The cluster heals after each without operator action, and the whole history must be
//! linearizable (`arca_check`), closing reads on every node included.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arca_check::KvInput;
use common::history::{check, closing_reads, grpc, over_grpc, spawn_clients, target, History, Seen, KEYS};
use common::{eventually, DevCluster};

/// The leader as node `ask` sees it, if it knows one that is not `not`.
fn leader_other_than(c: &DevCluster, ask: u64, not: u64) -> Option<u64> {
    let out = c.arca(ask, &["operator", "members", "--format", "json"]);
    let members: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let leader = members.as_array()?.iter().find(|m| m["leader"] == true)?["id"].as_u64()?;
    (leader != not).then_some(leader)
}

/// The leader node `ask` knows, waiting (bounded) through an election.
fn leader_seen_by(c: &DevCluster, ask: u64) -> u64 {
    eventually(Duration::from_secs(15), || leader_other_than(c, ask, 0))
        .unwrap_or_else(|| panic!("node {ask} knows no leader after 15 s"))
}

#[test]
fn partitions_between_processes_keep_the_history_linearizable() {
    // Requests fail closed after 2 s without a committed audit record (the default is 5 s).
    let mut c = DevCluster::start_with(3, "[audit]\ndeadline_ms = 2000\n");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let links = c.route_through_proxies(&rt);
    let started = Instant::now();
    let until = Instant::now() + Duration::from_secs(45);
    let history = Arc::new(History::default());
    let clients = spawn_clients(&rt, &c, started, until, &history);
    let others = |n: u64| -> Vec<u64> { (1..=3).filter(|&x| x != n).collect() };
    std::thread::sleep(Duration::from_secs(3));

    // 1. The leader alone on its side.
    let old = leader_seen_by(&c, 1);
    let rest = others(old);
    links.partition(&[old], &rest);
    let cut = Instant::now();
    let new = eventually(Duration::from_secs(15), || leader_other_than(&c, rest[0], old))
        .unwrap_or_else(|| panic!("the majority {rest:?} elected no leader without node {old}"));
    println!("leader {old} isolated; node {new} leads the majority after {:?}", cut.elapsed());
    std::thread::sleep(Duration::from_secs(5));
    links.heal();
    std::thread::sleep(Duration::from_secs(3));

    // 2. The leader hears nobody: its messages reach the followers, their answers do not.
    let deaf = leader_seen_by(&c, rest[0]);
    for f in others(deaf) {
        links.cut(f, deaf);
    }
    println!("leader {deaf} hears no follower");
    std::thread::sleep(Duration::from_secs(6));
    links.heal();
    std::thread::sleep(Duration::from_secs(3));

    // 3. A follower alone.
    let leader = leader_seen_by(&c, 1);
    let follower = others(leader)[0];
    links.partition(&[follower], &others(follower));
    println!("follower {follower} isolated");
    std::thread::sleep(Duration::from_secs(1));
    // Its clients get an error within the audit deadline (2 s), never data.
    for _ in 0..3 {
        let t = target(&c, follower);
        let asked = Instant::now();
        let seen = rt.block_on(async { over_grpc(&mut grpc(&t), &t.token, KEYS[0], &KvInput::Read).await });
        let took = asked.elapsed();
        assert!(!matches!(seen, Seen::Output(_)), "the isolated follower {follower} served a read");
        assert!(took < Duration::from_millis(3500), "the isolated follower took {took:?} to refuse a read");
    }
    std::thread::sleep(Duration::from_secs(4));
    links.heal();

    for t in clients {
        rt.block_on(t).unwrap();
    }
    let mut ops = history.0.lock().unwrap().clone();
    let during = ops.len();
    ops.extend(closing_reads(&rt, &c, started));
    let acked = check(&ops, "arca-partition", "three partitions");
    assert!(acked > 20, "only {acked} writes were acknowledged around the partitions");
    println!("{during} operations, {acked} acknowledged writes through three partitions: linearizable");
}
