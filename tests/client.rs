//! The client SDK (`arca-client`) against a real 3-node `arca dev cluster` over TLS: watch
//! delivery across nodes and across the death of the watcher's node, token renewal and new
//! logins, and applications that keep querying a real PostgreSQL through `with_secret` while
//! the `postgres` rotator changes their credentials every 2 s.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arca_client::{Auth, CacheConfig, Client, UseError, WatchKind};
use common::pg::{pg_connect, pg_error, pg_role, PG_ADMIN};
use common::{eventually, DevCluster};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A client whose first member is `first`, then the others in order.
async fn client(c: &DevCluster, first: u64, auth: Auth) -> Client {
    let order = (0..3).map(|i| (first - 1 + i) % 3 + 1);
    Client::builder().addrs(order.map(|n| c.api(n))).ca_cert_file(&c.ca).auth(auth).build().await.unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[test]
fn watch_reaches_a_watcher_on_another_node_and_resumes_after_its_node_is_killed() {
    let c = DevCluster::start(3);
    let (role_id, secret_id) = c.read_role("watcher", &["app/"], "1h", "2h");
    c.ok(1, &["kv", "put", "other/x", "k=v"]);
    runtime().block_on(async {
        let writer = client(&c, 1, Auth::token(c.token.clone())).await;
        let app = client(&c, 2, Auth::app_role(role_id, secret_id)).await;
        let mut watcher = app.watch(["app/"]).await.unwrap();
        let first = watcher.next().await.unwrap();
        assert_eq!(first.kind, WatchKind::Progress, "a stream opens with its position");

        // A change committed through node 1 reaches the watcher on node 2.
        let mut latencies = Vec::new();
        for i in 0..50 {
            let path = format!("app/lat/{i}");
            // A path the watcher does not watch is never reported.
            writer.write("other/x", [("k".to_string(), i.to_string())]).await.unwrap();
            let version = writer.write(&path, [("v".to_string(), i.to_string())]).await.unwrap();
            let committed = Instant::now();
            let event = loop {
                let e = tokio::time::timeout(Duration::from_secs(5), watcher.next()).await.unwrap().unwrap();
                if e.kind != WatchKind::Progress {
                    break e;
                }
            };
            latencies.push(committed.elapsed());
            assert_eq!((event.kind, event.path.as_str(), event.version), (WatchKind::Written, path.as_str(), version));
        }
        latencies.sort();
        eprintln!(
            "watch delivery, committed through node 1 to event on node 2: p50 {:?}, p99 {:?}",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );

        // The watcher's node dies while writes go on: the watcher resumes on another member
        // from the last position it saw, and no change is missed.
        unsafe { libc::kill(c.pid(2), libc::SIGKILL) };
        let mut written = BTreeSet::new();
        for i in 0..30 {
            let path = format!("app/after/{i}");
            writer.write(&path, [("v".to_string(), i.to_string())]).await.unwrap();
            written.insert(path);
        }
        let mut seen = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.len() < written.len() && Instant::now() < deadline {
            let e = tokio::time::timeout(Duration::from_secs(30), watcher.next()).await.unwrap().unwrap();
            assert_ne!(e.kind, WatchKind::Reset, "the surviving members still hold the changes");
            if e.kind == WatchKind::Written {
                assert!(!e.path.starts_with("other/"));
                seen.insert(e.path);
            }
        }
        assert_eq!(seen, written, "every change after the watcher's last position");
        assert!(watcher.reconnects() >= 1);
        assert_ne!(app.current_member(), c.api(2));
    });
}

#[test]
fn tokens_are_renewed_and_replaced_by_a_new_login_at_their_max_ttl() {
    let c = DevCluster::start(3);
    c.ok(1, &["kv", "put", "app/db", "password=p"]);
    let (role_id, secret_id) = c.read_role("short", &["app/"], "3s", "7s");
    runtime().block_on(async {
        let app = client(&c, 3, Auth::app_role(role_id, secret_id)).await;
        let first = app.lookup_self().await.unwrap();
        let started = Instant::now();
        let mut accessors = BTreeSet::from([first.accessor.clone()]);
        // Well past the max TTL: every read works, the token was renewed and then replaced.
        while started.elapsed() < Duration::from_secs(12) {
            assert_eq!(app.read("app/db", arca_client::Which::Current).await.unwrap().get("password"), Some("p"));
            accessors.insert(app.lookup_self().await.unwrap().accessor);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(accessors.len() >= 2, "a new login replaced the token at its max TTL: {accessors:?}");
        let now = app.lookup_self().await.unwrap();
        assert!(now.expires > first.expires, "renewed or replaced");
    });
}

// ---- PostgreSQL rotation under load ----

/// What the application loop saw.
#[derive(Debug, Default)]
struct Run {
    queries: u32,
    /// Authentication failures the closure reported (each answered by one refresh and retry).
    auth_errors: u32,
    /// Queries that failed even after the retry.
    failed: Vec<String>,
}

/// One query on a new connection made with the credentials `with_secret` hands out; `28P01`
/// (invalid password) asks for a refresh and one retry.
async fn query(cache: &arca_client::SecretCache, path: &str, auth_errors: &AtomicU32) -> Result<(), String> {
    let result = cache
        .with_secret(path, |s| async move {
            let (user, password) = (s.get("username").unwrap_or(""), s.get("password").unwrap_or(""));
            match pg_connect(user, password).await {
                Ok(db) => db.simple_query("SELECT 1").await.map(|_| ()).map_err(|e| UseError::Fail(pg_error(&e))),
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD) => {
                    auth_errors.fetch_add(1, Ordering::Relaxed);
                    Err(UseError::RetryWithRefresh(pg_error(&e)))
                }
                Err(e) => Err(UseError::Fail(pg_error(&e))),
            }
        })
        .await;
    result.map_err(|e| match e {
        arca_client::WithSecretError::Secret(e) => format!("reading the secret: {e}"),
        arca_client::WithSecretError::Use(e) => e,
    })
}

/// The application: 50 queries started a second for `for_how_long`, each on its own task.
async fn app_loop(cache: &arca_client::SecretCache, path: &str, for_how_long: Duration) -> Run {
    let auth_errors = Arc::new(AtomicU32::new(0));
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut queries = tokio::task::JoinSet::new();
    // Bounded in count (50/s for the duration) and in time.
    let max_queries = for_how_long.as_secs() * 50;
    while started.elapsed() < for_how_long && (queries.len() as u64) < max_queries {
        tick.tick().await;
        let (cache, path, auth_errors) = (cache.clone(), path.to_string(), auth_errors.clone());
        queries.spawn(async move { query(&cache, &path, &auth_errors).await });
    }
    let mut run = Run::default();
    while let Some(done) = queries.join_next().await {
        run.queries += 1;
        if let Err(e) = done.unwrap() {
            run.failed.push(e);
        }
    }
    run.auth_errors = auth_errors.load(Ordering::Relaxed);
    run
}

fn rotation_under_load(strategy: &str, users: &[&str]) -> (Run, u64) {
    let c = DevCluster::start(3);
    let rt = runtime();
    for u in users {
        rt.block_on(pg_role(u, "initial-password"));
    }
    c.ok(1, &["kv", "put", "db/admin", &format!("username={}", PG_ADMIN.0), &format!("password={}", PG_ADMIN.1)]);
    let path = format!("db/{strategy}");
    c.ok(1, &["kv", "put", &path, &format!("username={}", users[0]), "password=initial-password"]);
    let (role_id, secret_id) = c.read_role("app", &[&path], "1h", "2h");
    let user_param = match users {
        [one] => format!("username={one}"),
        many => format!("usernames={}", many.join(",")),
    };
    let params = ["--param", "admin=db/admin", "--param", &format!("strategy={strategy}"), "--param", &user_param];
    c.ok(1, &[&["rotation", "set", &path, "--rotator", "postgres", "--every", "2s"][..], &params[..]].concat());
    let run = rt.block_on(async {
        let app = client(&c, 2, Auth::app_role(role_id, secret_id)).await;
        let cache = app.secret_cache(CacheConfig { watch: vec![path.clone()], ..Default::default() }).unwrap();
        app_loop(&cache, &path, Duration::from_secs(60)).await
    });
    let status = json(&c.ok(1, &["rotation", "status", &path, "--format", "json"]))[0].clone();
    eprintln!("{strategy}: {run:?}, status {status}");
    let rotations = status["rotations"].as_u64().unwrap();
    assert!(!status["failed"].as_bool().unwrap_or(false), "{status}");
    (run, rotations)
}

#[test]
fn single_user_rotation_every_2s_loses_no_query_after_one_retry_with_refresh() {
    let (run, rotations) = rotation_under_load("single", &["arca_sdk_single"]);
    eprintln!("single user: {rotations} rotations, {run:?}");
    assert!(rotations >= 15, "rotation every 2 s for 60 s ran only {rotations} times");
    assert!(run.queries >= 1500, "the app ran only {} queries", run.queries);
    assert!(run.failed.is_empty(), "{} of {} queries failed: {:?}", run.failed.len(), run.queries, run.failed);
}

#[test]
fn alternating_user_rotation_every_2s_never_refuses_a_credential() {
    let (run, rotations) = rotation_under_load("alternating", &["arca_sdk_alt_a", "arca_sdk_alt_b"]);
    eprintln!("alternating users: {rotations} rotations, {run:?}");
    assert!(rotations >= 15, "rotation every 2 s for 60 s ran only {rotations} times");
    assert!(run.queries >= 1500, "the app ran only {} queries", run.queries);
    assert_eq!(run.auth_errors, 0, "the database refused a credential the cache handed out");
    assert!(run.failed.is_empty(), "{:?}", run.failed);
}

#[test]
fn a_watch_needs_read_on_what_it_watches() {
    let c = DevCluster::start(3);
    let (role_id, secret_id) = c.read_role("narrow", &["app/"], "1h", "2h");
    runtime().block_on(async {
        let app = client(&c, 1, Auth::app_role(role_id, secret_id)).await;
        let err = app.watch(["other/"]).await.err().expect("watching what the token cannot read is refused");
        assert_eq!(err.code(), Some(arca_client::Code::PermissionDenied), "{err}");
        let err = app.watch(Vec::<String>::new()).await.err().unwrap();
        assert_eq!(err.code(), Some(arca_client::Code::InvalidArgument), "{err}");

        // Losing the policy ends an open watch with an event naming the prefix.
        let mut watcher = app.watch(["app/"]).await.unwrap();
        assert_eq!(watcher.next().await.unwrap().kind, WatchKind::Progress);
        let hcl = c.dir.path().join("narrow.hcl");
        std::fs::write(&hcl, "path \"secret/data/else/*\" { capabilities = [\"read\"] }\n").unwrap();
        c.ok(2, &["policy", "write", "narrow", hcl.to_str().unwrap()]);
        let ended = tokio::time::timeout(Duration::from_secs(10), watcher.next()).await.unwrap().unwrap();
        assert_eq!((ended.kind, ended.path.as_str()), (WatchKind::AccessRevoked, "app/"));
        let err = tokio::time::timeout(Duration::from_secs(10), watcher.next()).await.unwrap().unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{err}");
    });
    // Both refusals are in the audit trail like any other request.
    let denied = eventually(Duration::from_secs(10), || {
        let out = c.ok(1, &["audit", "list", "--format", "json"]);
        out.contains("\"Watch\"").then_some(out)
    });
    assert!(denied.is_some_and(|out| out.contains("secret/data/other/")));
}

/// The CLI is built on the SDK: with several members in ARCA_ADDR, `arca watch` resumes on
/// another one when its member dies (missing no change), cluster commands fail over, and
/// commands about one node (status, unseal) never land on another.
#[test]
fn arca_watch_resumes_on_another_member_and_commands_fail_over() {
    use std::io::BufRead;
    let mut c = DevCluster::start(3);
    let both = format!("{},{}", c.api(3), c.api(2));
    let mut child = std::process::Command::new(common::ARCA)
        .args(["watch", "app/", "--format", "jsonl"])
        .env("ARCA_ADDR", &both)
        .env("ARCA_CACERT", &c.ca)
        .env("ARCA_TOKEN", &c.token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next_written = || {
        (0..20)
            .filter_map(|_| rx.recv_timeout(Duration::from_secs(10)).ok())
            .map(|l| serde_json::from_str::<serde_json::Value>(&l).unwrap())
            .find(|e| e["kind"] == "WRITTEN")
    };
    let first: serde_json::Value = serde_json::from_str(&rx.recv_timeout(Duration::from_secs(10)).unwrap()).unwrap();
    assert_eq!(first["kind"], "PROGRESS");
    c.ok(1, &["kv", "put", "app/cli", "k=v"]);
    let written = next_written().expect("a WRITTEN event");
    assert_eq!((written["path"].as_str(), written["version"].as_u64()), (Some("app/cli"), Some(1)));
    assert!(!written.to_string().contains("\"v\""), "events carry no values");

    // The watch's member dies; the next change arrives through the other one.
    c.kill9(3);
    c.ok(1, &["kv", "put", "app/cli", "k=w"]);
    let resumed = next_written().expect("the watch resumed on node 2");
    assert_eq!((resumed["path"].as_str(), resumed["version"].as_u64()), (Some("app/cli"), Some(2)));
    assert!(resumed["seq"].as_u64() > written["seq"].as_u64());
    let _ = child.kill();
    let _ = child.wait();

    // A cluster command goes past the dead first member...
    let cli = |addr: &str, args: &[&str]| {
        std::process::Command::new(common::ARCA)
            .args(args)
            .env("ARCA_ADDR", addr)
            .env("ARCA_CACERT", &c.ca)
            .env("ARCA_TOKEN", &c.token)
            .env("HOME", c.home())
            .output()
            .unwrap()
    };
    let dead_first = format!("{},{}", c.api(3), c.api(1));
    let got = cli(&dead_first, &["kv", "get", "app/cli", "--field", "k"]);
    assert!(got.status.success(), "{}", common::stderr(&got));
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "w");
    // ...a command about one node does not: the status asked for is node 3's.
    let status = cli(&dead_first, &["status"]);
    let err = common::stderr(&status);
    assert_eq!(status.status.code(), Some(1), "{err}");
    assert!(err.starts_with(&format!("error: cannot reach {}", c.api(3))), "{err}");
    assert!(err.contains("is the node running") && err.trim().lines().count() == 1, "{err}");
}
