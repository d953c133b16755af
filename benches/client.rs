//! The client SDK's cache: what a hit costs, what a miss through a real 3-node cluster costs,
//! and how many cluster requests the cache saves under a read load.
//!
//! `cargo bench --bench client`. The hit is measured with criterion against a plain
//! `HashMap` lookup-and-clone in the same run (the floor any cache pays). The cluster part
//! starts `arca dev cluster` (the real binary, TLS on loopback) and reports, from the same run:
//! miss latency (a read through gRPC) and, for a read load over a set of paths, reads/s,
//! cluster requests/s and requests saved per second, with and without the cache.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arca_client::{Auth, CacheConfig, Client, Secret, SecretCache, SecretSource, Which};
use criterion::Criterion;
use futures::future::{BoxFuture, FutureExt};

/// A source that never runs during the hit measurement (every read is a hit).
struct Fixed;

impl SecretSource for Fixed {
    fn fetch(&self, path: &str, _: Which) -> BoxFuture<'static, arca_client::Result<Secret>> {
        let s = Secret::new(path, 1, BTreeMap::from([("password".into(), "x".repeat(24))]));
        async move { Ok(s) }.boxed()
    }
}

fn hits(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cache = SecretCache::new(Fixed, CacheConfig::default()).unwrap();
    let paths: Vec<String> = (0..100).map(|i| format!("app/service-{i}/db")).collect();
    rt.block_on(async {
        for p in &paths {
            cache.get(p).await.unwrap();
        }
    });
    let map: HashMap<String, Secret> = paths
        .iter()
        .map(|p| (p.clone(), Secret::new(p.as_str(), 1, BTreeMap::from([("password".into(), "x".into())]))))
        .collect();
    let mut g = c.benchmark_group("cache");
    let mut i = 0;
    g.bench_function("baseline: HashMap get + clone", |b| {
        b.iter(|| {
            i = (i + 1) % paths.len();
            black_box(map.get(paths[i].as_str()).cloned())
        })
    });
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let _guard = rt.enter();
    g.bench_function("SecretCache hit", |b| {
        b.iter(|| {
            i = (i + 1) % paths.len();
            // A hit completes on first poll: no runtime round trip is measured.
            let mut get = std::pin::pin!(cache.get(&paths[i]));
            match get.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(s) => black_box(s.unwrap()),
                std::task::Poll::Pending => panic!("a warm entry must be a hit"),
            }
        })
    });
    g.finish();
    assert_eq!(cache.stats().misses, paths.len() as u64, "only the warm-up missed");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Reads `paths` round-robin from `tasks` tasks for `secs`; returns reads done.
async fn load(
    read: Arc<dyn Fn(String) -> BoxFuture<'static, ()> + Send + Sync>,
    paths: &[String],
    tasks: usize,
    secs: u64,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (read, paths) = (read.clone(), paths.to_vec());
        set.spawn(async move {
            let mut n = 0u64;
            // Bounded in time and in count.
            while Instant::now() < deadline && n < 10_000_000 {
                read(paths[(t + n as usize * 7) % paths.len()].clone()).await;
                n += 1;
            }
            n
        });
    }
    let mut total = 0;
    while let Some(n) = set.join_next().await {
        total += n.unwrap();
    }
    total
}

fn cluster() {
    let c = common::DevCluster::start(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let paths: Vec<String> = (0..50).map(|i| format!("bench/svc-{i}")).collect();
    for p in &paths {
        c.ok(1, &["kv", "put", p, "password=bench-password-value"]);
    }
    rt.block_on(async {
        let client = Client::builder()
            .addrs((1..=3).map(|n| c.api(n)))
            .ca_cert_file(&c.ca)
            .auth(Auth::token(c.token.clone()))
            .build()
            .await
            .unwrap();
        // Miss latency: one read through gRPC and the cluster (read barrier, audit record).
        let mut misses = Vec::new();
        for i in 0..300 {
            let started = Instant::now();
            client.read(&paths[i % paths.len()], Which::Current).await.unwrap();
            misses.push(started.elapsed());
        }
        misses.sort();
        println!(
            "miss (gRPC read through the cluster): p50 {:?}  p99 {:?}",
            percentile(&misses, 0.5),
            percentile(&misses, 0.99)
        );

        let secs = 10;
        let direct = {
            let client = client.clone();
            Arc::new(move |p: String| {
                let client = client.clone();
                async move {
                    client.read(&p, Which::Current).await.unwrap();
                }
                .boxed()
            })
        };
        let uncached = load(direct, &paths, 16, secs).await;
        let cache = client.secret_cache(CacheConfig { watch: vec!["bench/".into()], ..Default::default() }).unwrap();
        let cached = {
            let cache = cache.clone();
            Arc::new(move |p: String| {
                let cache = cache.clone();
                async move {
                    cache.get(&p).await.unwrap();
                }
                .boxed()
            })
        };
        let reads = load(cached, &paths, 16, secs).await;
        let s = cache.stats();
        let per_s = |n: u64| n as f64 / secs as f64;
        println!("16 readers over {} paths for {secs} s each:", paths.len());
        println!("  without cache: {:.0} reads/s = {:.0} cluster requests/s", per_s(uncached), per_s(uncached));
        println!(
            "  with cache:    {:.0} reads/s, {:.0} cluster requests/s, hit ratio {:.4}, {:.0} requests saved/s ({:.0}x the uncached read rate)",
            per_s(reads),
            per_s(s.fetches),
            s.hits as f64 / (s.hits + s.misses) as f64,
            per_s(reads - s.fetches),
            per_s(reads) / per_s(uncached)
        );
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    hits(&mut c);
    c.final_summary();
    cluster();
}
