//! Cluster load generator: audited reads against the same reads with the audit pipeline
//! compiled out, on a real 3-node cluster (in process: RocksDB with synced log appends, Raft over
//! mutual TLS on loopback), at 1, 16 and 64 concurrent clients spread over the three nodes.
//!
//!   cargo bench --bench audit --features bench-unaudited
//!
//! The `bench-unaudited` feature adds `Core::unaudited`, which only this benchmark uses; the
//! shipped binary is never built with it. Each run is bounded: `ROUND` per configuration, at most
//! `MAX_READS` reads per client. Reported: reads/s, p50 and p99 latency, and the audited/unaudited
//! throughput ratio measured in the same run.
//!
//! For profiling one side: `ARCA_BENCH_CLIENTS=64` runs only that client count, and
//! `ARCA_BENCH_SIDE=audited` (or `unaudited`) only that side (no ratio is printed then).

use std::time::{Duration, Instant};

use arca_core::{Core, Operation, Reply, Request, SecretData};
use arca_raft::testing::TestCluster;
use arca_raft::Timing;
use zeroize::Zeroizing;

const ROUND: Duration = Duration::from_secs(4);
const MAX_READS: usize = 20_000;
const CLIENTS: [usize; 3] = [1, 16, 64];

struct Figures {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

async fn load(cores: &[Core], token: &str, clients: usize) -> Figures {
    let started = Instant::now();
    let tasks = (0..clients).map(|i| {
        let core = cores[i % cores.len()].clone();
        let token = token.to_string();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < ROUND && latencies.len() < MAX_READS {
                let t = Instant::now();
                let op = Operation::KvGet { path: "bench/db".into(), version: None };
                match core.handle(Request::new(Some(Zeroizing::new(token.clone())), op)).await {
                    Ok(Reply::KvSecret { .. }) => latencies.push(t.elapsed()),
                    other => panic!("read failed: {other:?}"),
                }
            }
            latencies
        })
    });
    let mut all: Vec<Duration> = Vec::new();
    for t in futures::future::join_all(tasks).await {
        all.extend(t.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    Figures {
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50: all[all.len() / 2],
        p99: all[(all.len() * 99 / 100).min(all.len() - 1)],
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let cluster = TestCluster::start(3, Timing::default()).await;
        cluster.wait_for_leader(Duration::from_secs(10)).await;
        let audited: Vec<Core> = cluster.running().map(|n| Core::new(n.clone())).collect();
        let Reply::Init(init) =
            audited[0].handle(Request::new(None, Operation::Init { shares: 2, threshold: 2 })).await.unwrap()
        else {
            panic!("init")
        };
        let unaudited: Vec<Core> = cluster.running().map(|n| Core::unaudited(n.clone())).collect();
        for core in audited.iter().chain(&unaudited) {
            for share in &init.shares {
                let share = Zeroizing::new(share.to_string());
                core.handle(Request::new(None, Operation::Unseal { share, reset: false })).await.unwrap();
            }
        }
        let token = init.root_token.to_string();
        let data = SecretData([("password".to_string(), "x".repeat(32))].into());
        let put = Operation::KvPut { path: "bench/db".into(), data, cas: None };
        audited[0].handle(Request::new(Some(Zeroizing::new(token.clone())), put)).await.unwrap();

        println!(
            "{:>8} {:>12} {:>10} {:>10} {:>12} {:>10} {:>10} {:>8}",
            "clients", "audited/s", "p50", "p99", "unaudited/s", "p50", "p99", "ratio"
        );
        let only_clients: Option<usize> = std::env::var("ARCA_BENCH_CLIENTS").ok().and_then(|v| v.parse().ok());
        let side = std::env::var("ARCA_BENCH_SIDE").unwrap_or_default();
        for clients in CLIENTS.into_iter().filter(|c| only_clients.is_none_or(|o| o == *c)) {
            if !side.is_empty() {
                let cores = if side == "audited" { &audited } else { &unaudited };
                let f = load(cores, &token, clients).await;
                println!("{clients:>8} {side} {:>12.0}/s {:>10.2?} {:>10.2?}", f.per_sec, f.p50, f.p99);
                continue;
            }
            let base = load(&unaudited, &token, clients).await;
            let with = load(&audited, &token, clients).await;
            println!(
                "{clients:>8} {:>12.0} {:>10.2?} {:>10.2?} {:>12.0} {:>10.2?} {:>10.2?} {:>7.0}%",
                with.per_sec,
                with.p50,
                with.p99,
                base.per_sec,
                base.p50,
                base.p99,
                100.0 * with.per_sec / base.per_sec
            );
        }
        cluster.shutdown().await;
    });
}
