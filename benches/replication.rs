//! Replicated commit throughput of a real 3-node cluster (RocksDB with synced log appends, gRPC
//! over mutual TLS on loopback): one writer waiting for each commit, against 64 concurrent
//! writers whose entries the leader batches. The one-writer figure is the baseline; the ratio
//! shows what batching buys.

use std::time::Duration;

use arca_crypto::Keyring;
use arca_raft::testing::TestCluster;
use arca_raft::{Command, RaftNode, Timing};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn put(keyring: &Keyring, i: u64) -> Command {
    let path = format!("bench/{}", i % 1024);
    Command::Put { ciphertext: keyring.encrypt(path.as_bytes(), &[0x42; 256]).unwrap(), path }
}

async fn write_concurrently(leader: &RaftNode, keyring: &Keyring, n: u64) {
    let writes = (0..n).map(|i| leader.write(put(keyring, i)));
    for r in futures::future::join_all(writes).await {
        r.expect("write");
    }
}

fn replication(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cluster = rt.block_on(TestCluster::start(3, Timing::default()));
    let leader = cluster.node(rt.block_on(cluster.wait_for_leader(Duration::from_secs(10))));
    let keyring = Keyring::generate().unwrap();

    let mut group = c.benchmark_group("replicated_commit_3_nodes");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_writer_baseline", |b| {
        let mut i = 0;
        b.to_async(&rt).iter(|| {
            i += 1;
            leader.write(put(&keyring, i))
        })
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("64_concurrent_writers", |b| {
        b.to_async(&rt).iter(|| write_concurrently(&leader, &keyring, 64))
    });
    group.finish();
    rt.block_on(cluster.shutdown());
}

criterion_group!(benches, replication);
criterion_main!(benches);
