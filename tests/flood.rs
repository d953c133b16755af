//! Bounded cost before trust (DESIGN invariant 9, issue 15 item 3), against a real 3-node
//! `arca dev cluster` over TLS on loopback, as an attacker would do it: unauthenticated HTTP GETs
//! with 32 KiB paths, unauthenticated gRPC `Kv.Get` with 1 MiB paths and AppRole logins with a
//! wrong secret id, all from one address, while a legitimate client reads. The flood is refused
//! (429 / RESOURCE_EXHAUSTED) and counted, the legitimate client never notices a refusal, the
//! data directories barely grow, and the audit trail holds aggregated `RateLimited` records whose
//! counts add up to exactly the refusals the attacker saw.
//!
//! Why one file of about 500 lines: one attack and its acceptance run, with the harness both share
//! (the attacker, the legitimate client and the measurements).
//!
//! Also: requests refused by the fronts are audited (and limited) like any other, per-token
//! stream bounds, and idle connections closed after the handshake.
//!
//! `flood_acceptance_full_size` (ignored; run it with `--ignored --nocapture`) is the issue's
//! full-size acceptance run and prints its figures.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arca_client::raw::proto;
use arca_client::{Auth, Client, Which};
use common::{eventually, DevCluster};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Apparent and allocated bytes of every file under `dir`.
fn dir_size(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut len, mut alloc) = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else { return (0, 0) };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            let (l, a) = dir_size(&entry.path());
            len += l;
            alloc += a;
        } else {
            len += meta.len();
            alloc += meta.blocks() * 512;
        }
    }
    (len, alloc)
}

fn data_dirs(c: &DevCluster) -> (u64, u64) {
    (1..=3).map(|n| dir_size(&c.data_dir(n))).fold((0, 0), |(l, a), (l2, a2)| (l + l2, a + a2))
}

async fn grpc_channel(c: &DevCluster, node: u64) -> Channel {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(&c.ca).unwrap()));
    Endpoint::from_shared(c.api(node)).unwrap().tls_config(tls).unwrap().connect().await.unwrap()
}

fn tls_connector(c: &DevCluster) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&c.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(c: &DevCluster, node: u64) -> TlsStream<TcpStream> {
    let port = c.base + 10 * (node as u16 - 1);
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tls_connector(c).connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap()
}

/// One HTTP/1.1 exchange on a kept-alive connection: status, headers and body.
async fn http(
    stream: &mut TlsStream<TcpStream>,
    buf: &mut Vec<u8>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String, String) {
    let head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    stream.write_all(head.as_bytes()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let headers = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = headers.split(' ').nth(1).unwrap().parse().unwrap();
            let len: usize = headers
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                buf.drain(..end + 4 + len);
                return (status, headers, body);
            }
        }
        assert!(Instant::now() < deadline, "no HTTP response within 30 s");
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "the server closed the connection mid-response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A reader with its own policy and AppRole login; returns (role id, secret id).
fn app_role(c: &DevCluster) -> (String, String) {
    let hcl = c.dir.path().join("reader.hcl");
    std::fs::write(&hcl, "path \"secret/data/app/*\" { capabilities = [\"read\"] }\n").unwrap();
    c.ok(1, &["policy", "write", "reader", hcl.to_str().unwrap()]);
    c.ok(1, &["approle", "role", "write", "reader", "--policies", "reader", "--token-ttl", "1h"]);
    let role_id =
        json(&c.ok(1, &["approle", "role-id", "reader", "--format", "json"]))["role_id"].as_str().unwrap().to_string();
    let secret_id = json(&c.ok(1, &["approle", "secret-id", "reader", "--format", "json"]))["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    (role_id, secret_id)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// What the legitimate client saw.
#[derive(Default)]
struct Legit {
    latencies: Vec<Duration>,
    errors: Vec<String>,
}

/// Reads `app/config` through `client` every `every` until `stop`.
async fn read_steadily(client: Client, every: Duration, stop: Arc<AtomicBool>, out: Arc<Mutex<Legit>>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = Instant::now() + Duration::from_secs(600);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        tick.tick().await;
        let started = Instant::now();
        let result = client.read("app/config", Which::Current).await;
        let elapsed = started.elapsed();
        let mut out = out.lock().unwrap();
        match result {
            Ok(_) => out.latencies.push(elapsed),
            Err(e) => out.errors.push(e.to_string()),
        }
    }
}

/// What the attacker saw.
#[derive(Debug, Default)]
struct Seen {
    http_forbidden: usize,
    http_limited: usize,
    http_other: Vec<u16>,
    grpc_too_large: usize,
    grpc_limited: usize,
    grpc_other: Vec<String>,
    login_refused: usize,
    login_limited: usize,
    login_other: Vec<String>,
}

fn is_rate_limited(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::ResourceExhausted && s.message().starts_with("too many ")
}

/// Sends the three floods at once, from this process's one address, to `node`.
async fn flood(c: &DevCluster, node: u64, role_id: &str, http_n: usize, grpc_n: usize, login_n: usize) -> Seen {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut tasks = tokio::task::JoinSet::new();
    // HTTP: 4 kept-alive connections, 32 KiB paths.
    for conn in 0..4 {
        let mut stream = tls_connect(c, node).await;
        let seen = seen.clone();
        let n = http_n / 4 + usize::from(conn < http_n % 4);
        tasks.spawn(async move {
            let path = format!("/v1/secret/data/{}", "x".repeat(32 * 1024));
            let mut buf = Vec::new();
            for _ in 0..n {
                let (status, headers, body) = http(&mut stream, &mut buf, "GET", &path, "").await;
                let mut seen = seen.lock().unwrap();
                match status {
                    403 => seen.http_forbidden += 1,
                    429 => {
                        assert!(headers.to_ascii_lowercase().contains("retry-after:"), "{headers}");
                        assert!(body.contains("too many unauthenticated requests from 127.0.0.1"), "{body}");
                        seen.http_limited += 1;
                    }
                    other => seen.http_other.push(other),
                }
            }
        });
    }
    // gRPC: 1 MiB paths, 4 at a time on one connection.
    let channel = grpc_channel(c, node).await;
    for worker in 0..4 {
        let mut kv = proto::kv_client::KvClient::new(channel.clone());
        let seen = seen.clone();
        let n = grpc_n / 4 + usize::from(worker < grpc_n % 4);
        tasks.spawn(async move {
            let path = "y".repeat(1024 * 1024);
            for _ in 0..n {
                let err = kv.get(proto::GetRequest { path: path.clone(), ..Default::default() }).await.unwrap_err();
                let mut seen = seen.lock().unwrap();
                if is_rate_limited(&err) {
                    seen.grpc_limited += 1;
                } else if err.code() == tonic::Code::ResourceExhausted && err.message().contains("1048576 bytes") {
                    seen.grpc_too_large += 1;
                } else {
                    seen.grpc_other.push(format!("{:?}: {}", err.code(), err.message()));
                }
            }
        });
    }
    // Logins with a wrong secret id, 8 at a time.
    for worker in 0..8 {
        let mut auth = proto::auth_client::AuthClient::new(channel.clone());
        let (seen, role_id) = (seen.clone(), role_id.to_string());
        let n = login_n / 8 + usize::from(worker < login_n % 8);
        tasks.spawn(async move {
            for i in 0..n {
                let req = proto::AppRoleLoginRequest { role_id: role_id.clone(), secret_id: format!("arcas_wrong{i}") };
                let err = auth.login_app_role(req).await.unwrap_err();
                let mut seen = seen.lock().unwrap();
                match err.code() {
                    tonic::Code::Unauthenticated => seen.login_refused += 1,
                    _ if is_rate_limited(&err) => seen.login_limited += 1,
                    _ => seen.login_other.push(format!("{:?}: {}", err.code(), err.message())),
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
}

/// The aggregated records of `node`: dropped counts by class.
fn rate_limit_records(c: &DevCluster, ask: u64) -> Vec<serde_json::Value> {
    let out = c.ok(ask, &["audit", "list", "--outcome", "rate_limited", "--limit", "10000", "--format", "json"]);
    serde_json::from_str(&out).unwrap()
}

fn dropped(records: &[serde_json::Value], class: &str) -> u64 {
    records.iter().filter(|r| r["decision"] == class).map(|r| r["dropped"].as_u64().unwrap()).sum()
}

struct Run {
    seen: Seen,
    unloaded: Vec<Duration>,
    loaded: Vec<Duration>,
    growth: (u64, u64),
    flood_time: Duration,
}

fn run(c: &DevCluster, baseline: Duration, http_n: usize, grpc_n: usize, login_n: usize) -> Run {
    let (role_id, secret_id) = app_role(c);
    c.ok(1, &["kv", "put", "app/config", "password=legit"]);
    // The legitimate client is another application than the attacker: its own runtime (one
    // worker thread), so what it measures is the cluster, not the attacker's tasks in its queue.
    let legit_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let client = legit_runtime
        .block_on(
            Client::builder()
                .addrs((1..=3).map(|n| c.api(n)))
                .ca_cert_file(&c.ca)
                .auth(Auth::app_role(role_id.clone(), secret_id))
                .build(),
        )
        .unwrap();
    let (stop, legit) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Legit::default())));
    let reader = legit_runtime.spawn(read_steadily(client, Duration::from_millis(50), stop.clone(), legit.clone()));
    std::thread::sleep(baseline);
    let unloaded = std::mem::take(&mut legit.lock().unwrap().latencies);
    let before = data_dirs(c);
    let started = Instant::now();
    let seen = runtime().block_on(flood(c, 1, &role_id, http_n, grpc_n, login_n));
    let flood_time = started.elapsed();
    let after = data_dirs(c);
    let loaded = std::mem::take(&mut legit.lock().unwrap().latencies);
    // The unloaded baseline is taken before and after the flood (A/B/A): a cluster that has
    // been running a while (larger memtables, more log) is slower than a fresh one, and a
    // baseline from its first seconds alone would count that against the flood.
    std::thread::sleep(baseline);
    stop.store(true, Ordering::Relaxed);
    legit_runtime.block_on(reader).unwrap();
    let legit = Arc::try_unwrap(legit).ok().unwrap().into_inner().unwrap();
    assert!(
        legit.errors.is_empty(),
        "the legitimate client saw errors: {:?}",
        &legit.errors[..legit.errors.len().min(5)]
    );
    let mut unloaded = [unloaded, legit.latencies].concat();
    let mut loaded = loaded;
    unloaded.sort();
    loaded.sort();
    Run {
        seen,
        unloaded,
        loaded,
        growth: (after.0.saturating_sub(before.0), after.1.saturating_sub(before.1)),
        flood_time,
    }
}

/// Checks what every flood run must show, and returns the aggregated records.
fn check(c: &DevCluster, r: &Run, http_n: usize, grpc_n: usize, login_n: usize) -> Vec<serde_json::Value> {
    let s = &r.seen;
    assert!(s.http_other.is_empty() && s.grpc_other.is_empty() && s.login_other.is_empty(), "{s:?}");
    assert_eq!((s.http_forbidden + s.http_limited, s.grpc_too_large + s.grpc_limited), (http_n, grpc_n), "{s:?}");
    assert_eq!(s.login_refused + s.login_limited, login_n, "{s:?}");
    assert!(s.http_limited > 0 && s.grpc_limited > 0 && s.login_limited > 0, "the flood was refused: {s:?}");
    assert!(r.growth.0 < 10 << 20, "data dirs grew by {} bytes (apparent) under the flood", r.growth.0);
    // Every refusal the attacker saw is in exactly one aggregated record's count.
    let unauthenticated = (s.http_limited + s.grpc_limited) as u64;
    let records = eventually(Duration::from_secs(30), || {
        let records = rate_limit_records(c, 2);
        (dropped(&records, "unauthenticated") == unauthenticated
            && dropped(&records, "failed_login") == s.login_limited as u64)
            .then_some(records)
    })
    .unwrap_or_else(|| {
        let records = rate_limit_records(c, 2);
        panic!(
            "aggregated records do not add up to the refusals ({unauthenticated} unauthenticated, {} logins): {records:#?}",
            s.login_limited
        )
    });
    for r in &records {
        assert_eq!(
            (r["operation"].as_str(), r["remote"].as_str(), r["node"].as_u64()),
            (Some("RateLimited"), Some("127.0.0.1"), Some(1))
        );
    }
    records
}

#[test]
fn floods_from_one_address_are_refused_counted_and_cost_the_cluster_almost_nothing() {
    let c = DevCluster::start_with(3, "[limits]\nreport_interval_s = 1\n");
    // An oversized gRPC message is refused with the limit named, before anything else.
    runtime().block_on(async {
        let mut kv = proto::kv_client::KvClient::new(grpc_channel(&c, 1).await);
        let err = kv.get(proto::GetRequest { path: "z".repeat(2 << 20), ..Default::default() }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        assert!(err.message().contains("over the client API's limit of 1048576 bytes"), "{}", err.message());
    });
    let (http_n, grpc_n, login_n) = (500, 200, 2000);
    let r = run(&c, Duration::from_secs(2), http_n, grpc_n, login_n);
    let records = check(&c, &r, http_n, grpc_n, login_n);
    println!(
        "flood: {:?} in {:?}; data dirs +{} KiB apparent, +{} KiB allocated; legit p99 unloaded {:?} loaded {:?} \
         ({} reads); {} aggregated records",
        r.seen,
        r.flood_time,
        r.growth.0 >> 10,
        r.growth.1 >> 10,
        percentile(&r.unloaded, 0.99),
        percentile(&r.loaded, 0.99),
        r.loaded.len(),
        records.len()
    );
    // The requests that were let through are on record one by one, with their paths cut.
    let all: Vec<serde_json::Value> = serde_json::from_str(
        &c.ok(2, &["audit", "list", "--outcome", "unauthenticated", "--limit", "10000", "--format", "json"]),
    )
    .unwrap();
    let kv_gets: Vec<_> = all
        .iter()
        .filter(|r| r["operation"] == "KvGet" && r["remote"].as_str().is_some_and(|a| a.starts_with("127.0.0.1")))
        .collect();
    assert!(!kv_gets.is_empty());
    for r in &kv_gets {
        let path = r["path"].as_str().unwrap();
        assert!(path.len() < 700 && path.contains("[cut: 32780 bytes]"), "{path}");
        assert!(r["error"].as_str().unwrap().len() < 700);
    }
}

#[test]
fn front_refusals_are_audited_streams_are_bounded_per_token_and_idle_connections_closed() {
    let c = DevCluster::start_with(
        3,
        "[limits]\nwatch_streams_per_token = 2\naudit_tails_per_token = 1\nidle_timeout_s = 3\n",
    );
    runtime().block_on(async {
        // HTTP: a malformed body and an unknown route, unauthenticated and with a token.
        let mut stream = tls_connect(&c, 1).await;
        let mut buf = Vec::new();
        let (status, _, _) = http(&mut stream, &mut buf, "PUT", "/v1/secret/data/app/x", "{not json").await;
        assert_eq!(status, 400);
        let (status, _, _) = http(&mut stream, &mut buf, "GET", "/v1/nowhere/at/all", "").await;
        assert_eq!(status, 404);

        // gRPC: too many watch prefixes; more watch streams or tails than one token may hold.
        let channel = grpc_channel(&c, 2).await;
        let token: tonic::metadata::MetadataValue<_> = format!("Bearer {}", c.token).parse().unwrap();
        let with_token = move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", token.clone());
            Ok(req)
        };
        let mut watch = proto::watch_client::WatchClient::with_interceptor(channel.clone(), with_token.clone());
        let many = proto::WatchRequest { prefixes: (0..65).map(|i| format!("p{i}/")).collect(), after_seq: None };
        let err = watch.watch(many).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let one = || proto::WatchRequest { prefixes: vec!["app/".into()], after_seq: None };
        let first = watch.watch(one()).await.unwrap().into_inner();
        let mut second = watch.watch(one()).await.unwrap().into_inner();
        let err = watch.watch(one()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("limits.watch_streams_per_token"), "{}", err.message());
        drop(first);
        // The slot comes back when the stream ends.
        let mut third = None;
        for _ in 0..100 {
            if let Ok(r) = watch.watch(one()).await {
                third = Some(r.into_inner());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(third.is_some(), "a closed stream gives its slot back");
        let mut audit = proto::audit_client::AuditClient::with_interceptor(channel.clone(), with_token.clone());
        let _tail = audit.tail(proto::TailAuditRequest { last: 1, follow: true }).await.unwrap().into_inner();
        let err = audit.tail(proto::TailAuditRequest { last: 1, follow: true }).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

        // A watch outlives the idle timeout: HTTP/2 pings keep a live client's quiet
        // connection from being idle (progress events come every 5 s).
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            let event = tokio::time::timeout(Duration::from_secs(7), second.message()).await;
            assert!(matches!(event, Ok(Ok(Some(_)))), "the watch stream ended: {event:?}");
        }

        // A connection that completes the handshake and stays silent is closed.
        let mut silent = tls_connect(&c, 3).await;
        let started = Instant::now();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "a silent connection must be closed: {read:?}");
        assert!(started.elapsed() < Duration::from_secs(15));
        // So is an HTTP/1.1 keep-alive connection after its request.
        let mut kept = tls_connect(&c, 3).await;
        let mut buf = Vec::new();
        http(&mut kept, &mut buf, "GET", "/v1/sys/health", "").await;
        let read = tokio::time::timeout(Duration::from_secs(40), kept.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "an idle keep-alive connection must be closed: {read:?}");
    });

    // Every refusal above is on record, with who sent it.
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&c.ok(1, &["audit", "list", "--limit", "10000", "--format", "json"])).unwrap();
    let rejected = |op: &str, path: &str, outcome: &str| {
        records.iter().any(|r| r["operation"] == op && r["path"] == path && r["outcome"] == outcome)
    };
    assert!(rejected("Rejected.PUT", "/v1/secret/data/app/x", "invalid_argument"), "{records:#?}");
    assert!(rejected("Rejected.GET", "/v1/nowhere/at/all", "not_found"));
    assert!(rejected("Rejected.grpc", "/arca.v1.Watch/Watch", "invalid_argument"));
    assert!(rejected("Rejected.grpc", "/arca.v1.Watch/Watch", "resource_exhausted"));
    assert!(rejected("Rejected.grpc", "/arca.v1.Audit/Tail", "resource_exhausted"));
    let watch_refusal = records.iter().find(|r| r["operation"] == "Rejected.grpc").unwrap();
    assert_eq!(watch_refusal["identity"], "root", "a refusal names a caller with a valid token: {watch_refusal}");
    let http_refusal = records.iter().find(|r| r["operation"] == "Rejected.PUT").unwrap();
    assert_eq!(http_refusal["decision"], "unauthenticated");
}

/// The acceptance run: 5,000 unauthenticated HTTP GETs with 32 KiB paths, 5,000
/// unauthenticated gRPC `Kv.Get` with 1 MiB paths and 20,000 AppRole logins with a wrong secret
/// id from one address, while a legitimate client reads 20 times a second. Default limits.
/// Prints the legitimate client's p99 unloaded (before and after the flood) and loaded, and the
/// data directories' growth during the flood.
#[test]
#[ignore = "full-size acceptance run (minutes of CPU); run with --ignored --nocapture"]
fn flood_acceptance_full_size() {
    let c = DevCluster::start_with(3, "[limits]\nreport_interval_s = 2\n");
    let (http_n, grpc_n, login_n) = (5000, 5000, 20_000);
    let r = run(&c, Duration::from_secs(15), http_n, grpc_n, login_n);
    let (p99u, p99l) = (percentile(&r.unloaded, 0.99), percentile(&r.loaded, 0.99));
    println!(
        "ACCEPTANCE: flood took {:?}: {:?}\n  data dirs of all nodes: +{:.2} MiB apparent, +{:.2} MiB allocated\n  legit \
         client: unloaded p50 {:?} p99 {:?} ({} reads); loaded p50 {:?} p99 {:?} ({} reads); ratio {:.2}",
        r.flood_time,
        r.seen,
        r.growth.0 as f64 / (1 << 20) as f64,
        r.growth.1 as f64 / (1 << 20) as f64,
        percentile(&r.unloaded, 0.5),
        p99u,
        r.unloaded.len(),
        percentile(&r.loaded, 0.5),
        p99l,
        r.loaded.len(),
        p99l.as_secs_f64() / p99u.as_secs_f64(),
    );
    let records = check(&c, &r, http_n, grpc_n, login_n);
    println!(
        "  aggregated records: {} (unauthenticated dropped {}, failed_login dropped {})",
        records.len(),
        dropped(&records, "unauthenticated"),
        dropped(&records, "failed_login"),
    );
}
