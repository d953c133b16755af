//! Process crashes (issue: proven under faults, scenario 4): `kill -9` of random nodes of a
//! real `arca dev cluster` every few seconds while clients on every node read, write,
//! check-and-set and delete hot secrets over gRPC and the Vault HTTP API; then `kill -9` of
//! all three at once and a restart. The recorded history must be linearizable (`arca_check`),
//! which includes every acknowledged write being there after the crashes: final reads on every
//! node close the history.
//!
//! The default suite runs 20 s of crashes; `ARCA_SOAK=1` runs 60 s (`scripts/soak.sh`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::history::{check, closing_reads, spawn_clients, History};
use common::DevCluster;

#[test]
fn kill_9_under_load_loses_no_acknowledged_write() {
    let mut c = DevCluster::start(3);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let started = Instant::now();
    let seconds = if std::env::var("ARCA_SOAK").is_ok_and(|v| v == "1") { 60 } else { 20 };
    let until = Instant::now() + Duration::from_secs(seconds);
    let history = Arc::new(History::default());
    let clients = spawn_clients(&rt, &c, started, until, &history);

    // A random node killed and brought back every few seconds.
    let mut kills = 0;
    let mut seed = started.elapsed().as_nanos() as u64 | 1;
    while Instant::now() + Duration::from_secs(4) < until && kills < 100 {
        std::thread::sleep(Duration::from_secs(1));
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let victim = 1 + (seed >> 33) % 3;
        let t0 = Instant::now();
        c.kill9(victim);
        let t1 = t0.elapsed();
        kills += 1;
        c.restart_unsealed(victim);
        println!("killed node {victim} (gone after {t1:?}), back and unsealed after {:?}", t0.elapsed());
    }
    for t in clients {
        rt.block_on(t).unwrap();
    }
    assert!(kills >= 3, "only {kills} kills happened");

    // All three at once, then back.
    for node in 1..=3 {
        c.kill9(node);
    }
    for node in 1..=3 {
        c.restart_unsealed(node);
    }
    // Closing reads on every node: every acknowledged write must be there.
    let mut ops = history.0.lock().unwrap().clone();
    ops.extend(closing_reads(&rt, &c, started));
    let acked = check(&ops, "arca-crash", &format!("{kills} kills"));
    assert!(acked > 20, "only {acked} writes were acknowledged around the kills");
    println!("{} operations, {acked} acknowledged writes, {kills} kills and one of all three: linearizable", ops.len());
}
