//! Rotation on a real 3-node cluster (in process), with the engine running on every node:
//! schedules on the leader only, the `command` rotator's refusals and failures, and the
//! `postgres` rotator against a real PostgreSQL (`scripts/postgres-setup.sh` starts it and
//! creates the admin role these tests use to create their own roles).
//!
//! Why one file of about 550 lines: the rotation scenarios share one cluster harness and
//! PostgreSQL set-up.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arca_core::rotation::{RotationConfig, RotationStatus, RotatorKind, Schedule, Step};
use arca_core::{AuditFilter, Core, Error, Operation, Reply, SecretMetadata, Stage};
use common::{call, data, Vault};
use sha2::{Digest, Sha256};

const PG_ADMIN: (&str, &str) = ("arca_test_admin", "arca-test-admin");

fn config(path: &str, rotator: RotatorKind, params: &[(&str, &str)], every_ms: u64) -> RotationConfig {
    RotationConfig {
        path: path.into(),
        rotator,
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        schedule: Schedule::Every { ms: every_ms },
        window: None,
        max_attempts: 3,
        backoff_ms: 100,
        enabled: true,
        configured_by: String::new(),
    }
}

/// Starts the leader duties (rotation runs among them) on every node, as the server does.
fn engines(v: &Vault) -> Vec<tokio::task::JoinHandle<()>> {
    v.cores.iter().map(|c| tokio::spawn(c.clone().run_leader_duties())).collect()
}

async fn status(v: &Vault, path: &str) -> RotationStatus {
    let Reply::Rotations(mut list) = v.root(0, Operation::RotationStatus { path: Some(path.into()) }).await else {
        panic!()
    };
    list.remove(0)
}

async fn meta(v: &Vault, path: &str) -> SecretMetadata {
    let Reply::KvMetadata(m) = v.root(0, Operation::KvMetadata { path: path.into() }).await else { panic!() };
    m
}

async fn stage(v: &Vault, i: usize, path: &str, stage: Stage) -> BTreeMap<String, String> {
    match v.root(i, Operation::KvGetStage { path: path.into(), stage }).await {
        Reply::KvSecret { data, .. } => data.0.clone(),
        other => panic!("{other:?}"),
    }
}

/// Waits (bounded) until `check` holds for the path's status.
async fn wait_for(v: &Vault, path: &str, limit: Duration, check: impl Fn(&RotationStatus) -> bool) -> RotationStatus {
    let deadline = Instant::now() + limit;
    loop {
        let s = status(v, path).await;
        if check(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "rotation of {path} did not reach the expected state: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_rotates_repeatedly_on_the_leader_only_even_across_a_leader_change() {
    let mut v = Vault::start().await;
    let _engines = engines(&v);
    v.root(
        0,
        Operation::KvPut { path: "app/key".into(), data: data(&[("user", "app"), ("password", "initial")]), cas: None },
    )
    .await;
    let set = config("app/key", RotatorKind::Random, &[("length", "24")], 1_000);
    v.root(1, Operation::RotationSet(set)).await;
    let s = wait_for(&v, "app/key", Duration::from_secs(15), |s| s.state.rotations >= 3).await;
    assert!(!s.state.failed, "{s:?}");

    // Every rotation made exactly one version: no double rotation, no stray pending.
    let check = |m: &SecretMetadata, rotations: u64| {
        assert_eq!(m.current_version, 1 + rotations, "{m:?}");
        assert_eq!(m.previous_version, Some(m.current_version - 1));
    };
    let s = wait_for(&v, "app/key", Duration::from_secs(5), |s| s.state.step == Step::Idle).await;
    check(&meta(&v, "app/key").await, s.state.rotations);
    let current = stage(&v, 2, "app/key", Stage::Current).await;
    assert_eq!(current["user"], "app", "other fields are carried over");
    assert_eq!(current["password"].len(), 24);
    assert_ne!(stage(&v, 1, "app/key", Stage::Previous).await["password"], current["password"]);

    // The leader dies: the new leader goes on with the same schedule.
    let leader = v.cluster.wait_for_leader(Duration::from_secs(5)).await;
    let before = status(&v, "app/key").await.state.rotations;
    v.cluster.stop(leader).await;
    let survivors: Vec<Core> = v.cores.iter().filter(|c| c.node().id() != leader).cloned().collect();
    v.cores = survivors;
    let s = wait_for(&v, "app/key", Duration::from_secs(20), |s| s.state.rotations >= before + 2).await;
    let s = wait_for(&v, "app/key", Duration::from_secs(5), |x| {
        x.state.step == Step::Idle && x.state.rotations >= s.state.rotations
    })
    .await;
    check(&meta(&v, "app/key").await, s.state.rotations);

    // Each step is on the audit trail, by the node that ran it.
    let filter = AuditFilter { path_prefix: "sys/rotation/rotate/app/key".into(), limit: 10_000, ..Default::default() };
    let Reply::AuditRecords(records) = v.root(0, Operation::AuditList(filter)).await else { panic!() };
    let finishes = records.iter().filter(|r| r.operation == "RotationStep.finish" && r.outcome == "ok").count();
    assert_eq!(finishes as u64, s.state.rotations, "one audited finish per rotation");
    v.cluster.shutdown().await;
}

/// A functions directory with scripts, each registered under its SHA-256.
struct Functions {
    dir: tempfile::TempDir,
}

impl Functions {
    fn new() -> Functions {
        Functions { dir: tempfile::tempdir().unwrap() }
    }

    fn write(&self, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        let text = format!("#!/bin/sh\n{body}\n");
        std::fs::write(&path, &text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_rotators_are_pinned_by_hash_and_failures_leave_current_alone() {
    let f = Functions::new();
    let mut v = Vault::start().await;
    let settings =
        arca_core::rotation::RotationSettings { functions_dir: Some(f.dir.path().into()), ..Default::default() };
    v.cores = v.cores.iter().map(|c| c.clone().with_rotation(settings.clone())).collect();
    let _engines = engines(&v);

    // Names that are paths are refused, at registration and in a config.
    for name in ["../x", "/bin/sh"] {
        let op = Operation::RotationFunctionRegister { name: name.into(), sha256: "ab".repeat(32) };
        let e = call(&v.cores[0], Some(&v.root), op).await.unwrap_err();
        assert!(e.to_string().contains("not a plain file name"), "{e}");
        let set = config("app/cmd", RotatorKind::Command, &[("function", name)], 3_600_000);
        assert!(call(&v.cores[0], Some(&v.root), Operation::RotationSet(set)).await.is_err());
    }

    // A good function rotates: create's answer becomes the value.
    let sha = f.write(
        "good.sh",
        r#"input=$(cat); case "$input" in *'"step":"create"'*) echo '{"value":{"password":"from-function"}}';; *) echo '{}';; esac"#,
    );
    v.root(0, Operation::RotationFunctionRegister { name: "good.sh".into(), sha256: sha }).await;
    v.root(0, Operation::KvPut { path: "app/cmd".into(), data: data(&[("password", "original")]), cas: None }).await;
    v.root(1, Operation::RotationSet(config("app/cmd", RotatorKind::Command, &[("function", "good.sh")], 3_600_000)))
        .await;
    v.root(2, Operation::RotationNow { path: "app/cmd".into() }).await;
    wait_for(&v, "app/cmd", Duration::from_secs(10), |s| s.state.rotations == 1).await;
    assert_eq!(stage(&v, 0, "app/cmd", Stage::Current).await["password"], "from-function");

    // Changed after registration: refused to run.
    f.write("good.sh", "echo '{\"value\":{\"password\":\"tampered\"}}'");
    v.root(2, Operation::RotationNow { path: "app/cmd".into() }).await;
    let s = wait_for(&v, "app/cmd", Duration::from_secs(10), |s| s.state.failed).await;
    assert!(s.state.last_error.contains("changed since it was registered"), "{}", s.state.last_error);
    assert_eq!(stage(&v, 0, "app/cmd", Stage::Current).await["password"], "from-function");

    // Exit 1, a timeout, garbage: each fails with its reason after retries with backoff;
    // current stays, and the pending version is gone.
    for (name, body, reason) in [
        // The exit status, never what the function printed (it may hold secrets).
        ("exit1.sh", "echo 'db refused the change' >&2; exit 1", "failed (exit status: 1)"),
        ("slow.sh", "sleep 30", "timed out"),
        ("garbage.sh", "echo 'not json'", "malformed output"),
    ] {
        let sha = f.write(name, body);
        v.root(0, Operation::RotationFunctionRegister { name: name.into(), sha256: sha }).await;
        let path = format!("app/{}", name.trim_end_matches(".sh"));
        v.root(0, Operation::KvPut { path: path.clone(), data: data(&[("password", "kept")]), cas: None }).await;
        let set = config(&path, RotatorKind::Command, &[("function", name), ("timeout", "1s")], 3_600_000);
        v.root(0, Operation::RotationSet(set)).await;
        v.root(0, Operation::RotationNow { path: path.clone() }).await;
        // Retries are visible while they happen.
        let retrying = wait_for(&v, &path, Duration::from_secs(10), |s| s.state.attempts >= 1 || s.state.failed).await;
        assert!(retrying.state.retry_at_ms.is_some() || retrying.state.failed, "{retrying:?}");
        let s = wait_for(&v, &path, Duration::from_secs(20), |s| s.state.failed).await;
        assert_eq!(s.state.attempts, 3, "{s:?}");
        assert!(s.state.last_error.contains(reason), "{name}: {}", s.state.last_error);
        assert!(!s.state.last_error.contains("db refused") && !s.state.last_error.contains("not json"));
        assert_eq!(stage(&v, 1, &path, Stage::Current).await["password"], "kept");
        let m = meta(&v, &path).await;
        assert_eq!((m.current_version, m.pending_version), (1, None), "{m:?}");
        let pending =
            call(&v.cores[0], Some(&v.root), Operation::KvGetStage { path: path.clone(), stage: Stage::Pending }).await;
        assert!(matches!(pending, Err(Error::NotFound(_))), "{pending:?}");
        // Asked again, the next rotation gets its own attempts, not what is left of the last.
        let first = s.state.last_finished_ms;
        v.root(0, Operation::RotationNow { path: path.clone() }).await;
        let again =
            wait_for(&v, &path, Duration::from_secs(20), |s| s.state.failed && s.state.last_finished_ms > first).await;
        assert_eq!(again.state.attempts, 3, "{again:?}");
    }
    v.cluster.shutdown().await;
}

// ---- PostgreSQL ----

fn pg_config(user: &str, password: &str) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1").port(5432).dbname("postgres").user(user).password(password);
    c.connect_timeout(Duration::from_secs(5));
    c
}

async fn pg_login(user: &str, password: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = pg_config(user, password).connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client.simple_query("SELECT 1").await.map(|_| ())
}

/// Creates (or resets) a login role for one test, as the test admin.
async fn pg_role(name: &str, password: &str) {
    let (client, conn) = pg_config(PG_ADMIN.0, PG_ADMIN.1)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 with role arca_test_admin: run scripts/postgres-setup.sh");
    tokio::spawn(conn);
    client.batch_execute(&format!("DROP ROLE IF EXISTS {name}")).await.unwrap();
    client.batch_execute(&format!("CREATE ROLE {name} LOGIN PASSWORD '{password}'")).await.unwrap();
}

/// A vault whose nodes may reach PostgreSQL at `allow` (`rotation.postgres_allow`).
async fn pg_vault_allowing(allow: &[String]) -> Vault {
    let mut v = Vault::start().await;
    let settings = arca_core::rotation::RotationSettings { postgres_allow: allow.to_vec(), ..Default::default() };
    v.cores = v.cores.iter().map(|c| c.clone().with_rotation(settings.clone())).collect();
    v.root(
        0,
        Operation::KvPut {
            path: "db/admin".into(),
            data: data(&[("username", PG_ADMIN.0), ("password", PG_ADMIN.1)]),
            cas: None,
        },
    )
    .await;
    v
}

async fn pg_vault() -> Vault {
    pg_vault_allowing(&["127.0.0.1:5432".to_string()]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_single_user_rotation_changes_the_password_in_place() {
    pg_role("arca_single", "first-password").await;
    let v = pg_vault().await;
    let _engines = engines(&v);
    v.root(
        0,
        Operation::KvPut {
            path: "db/single".into(),
            data: data(&[("username", "arca_single"), ("password", "first-password")]),
            cas: None,
        },
    )
    .await;
    let params = [("admin", "db/admin"), ("strategy", "single"), ("username", "arca_single")];
    v.root(0, Operation::RotationSet(config("db/single", RotatorKind::Postgres, &params, 3_600_000))).await;
    v.root(1, Operation::RotationNow { path: "db/single".into() }).await;
    let s = wait_for(&v, "db/single", Duration::from_secs(15), |s| s.state.rotations == 1 || s.state.failed).await;
    assert!(!s.state.failed, "{}", s.state.last_error);

    let current = stage(&v, 2, "db/single", Stage::Current).await;
    assert_ne!(current["password"], "first-password");
    pg_login("arca_single", &current["password"]).await.expect("the stored current password is the database's");
    assert!(pg_login("arca_single", "first-password").await.is_err(), "the old password still works");
    assert_eq!(stage(&v, 0, "db/single", Stage::Previous).await["password"], "first-password");
    v.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_alternating_users_keep_one_working_credential_at_every_moment() {
    pg_role("arca_alt_a", "a-initial").await;
    pg_role("arca_alt_b", "b-initial").await;
    let v = pg_vault().await;
    let _engines = engines(&v);
    v.root(
        0,
        Operation::KvPut {
            path: "db/alt".into(),
            data: data(&[("username", "arca_alt_a"), ("password", "a-initial")]),
            cas: None,
        },
    )
    .await;
    let params = [("admin", "db/admin"), ("strategy", "alternating"), ("usernames", "arca_alt_a,arca_alt_b")];
    v.root(0, Operation::RotationSet(config("db/alt", RotatorKind::Postgres, &params, 3_600_000))).await;

    // A client that, all along, reads current and previous and needs one of them to log in.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checker = {
        let (core, root, stop) = (v.cores[2].clone(), v.root.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut checks, mut failures) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && checks < 5_000 {
                let mut ok = false;
                for s in [Stage::Current, Stage::Previous] {
                    let read =
                        call(&core, Some(&root), Operation::KvGetStage { path: "db/alt".into(), stage: s }).await;
                    if let Ok(Reply::KvSecret { data, .. }) = read {
                        if pg_login(&data.0["username"], &data.0["password"]).await.is_ok() {
                            ok = true;
                            break;
                        }
                    }
                }
                checks += 1;
                if !ok {
                    failures.push(checks);
                }
            }
            (checks, failures)
        })
    };
    for round in 1..=10u64 {
        v.root(round as usize % 3, Operation::RotationNow { path: "db/alt".into() }).await;
        let s = wait_for(&v, "db/alt", Duration::from_secs(15), |s| s.state.rotations == round || s.state.failed).await;
        assert!(!s.state.failed, "{}", s.state.last_error);
        let current = stage(&v, 0, "db/alt", Stage::Current).await;
        let expected = if round % 2 == 1 { "arca_alt_b" } else { "arca_alt_a" };
        assert_eq!(current["username"], expected, "round {round}");
        pg_login(&current["username"], &current["password"]).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (checks, failures) = checker.await.unwrap();
    assert!(checks > 10, "the checker ran only {checks} times");
    assert!(failures.is_empty(), "no credential worked at checks {failures:?} of {checks}");
    v.cluster.shutdown().await;
}

// ---- Webhook ----

/// One HTTP/1.1 request read off a TLS stream: its headers (lower-cased names) and body.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<(BTreeMap<String, String>, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: BTreeMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.get("content-length")?.parse().ok()?;
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((headers, buf[head_end..head_end + len].to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_rotator_calls_only_allowed_urls_with_signed_steps() {
    use hmac::{Hmac, Mac};
    use rustls::pki_types::pem::PemObject;
    use tokio::io::AsyncWriteExt;

    // An HTTPS endpoint on loopback with a certificate from a test CA.
    let tls = arca_raft::testing::TestCa::new("hooks").node_tls("localhost");
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&tls.cert_pem).map(|c| c.unwrap()).collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&tls.key_pem).unwrap();
    let server =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, bool)>::new()));
    let recorded = seen.clone();
    let endpoint = tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let Ok(mut stream) = acceptor.accept(tcp).await else { continue };
            let Some((headers, body)) = read_request(&mut stream).await else { continue };
            let mut mac = Hmac::<Sha256>::new_from_slice(b"hook-signing-key").unwrap();
            mac.update(headers["x-arca-timestamp"].as_bytes());
            mac.update(b".");
            mac.update(&body);
            let valid = headers["x-arca-signature"] == format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            let input: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let step = input["step"].as_str().unwrap().to_string();
            recorded.lock().unwrap().push((step.clone(), valid));
            let (status, answer) = match (input["path"].as_str(), step.as_str()) {
                // An endpoint that echoes what it was sent into its error body.
                (Some("app/leaky"), _) => ("500 Internal Server Error", format!("LEAKED-BY-WEBHOOK {input}")),
                (_, "create") => ("200 OK", r#"{"value":{"password":"from-webhook"}}"#.to_string()),
                _ => ("200 OK", "{}".to_string()),
            };
            let response = format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}", answer.len());
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("hooks-ca.pem");
    std::fs::write(&ca_file, &tls.ca_pem).unwrap();
    let mut v = Vault::start().await;
    let settings = arca_core::rotation::RotationSettings {
        webhook_allow: vec![format!("https://localhost:{port}/rotate/*")],
        webhook_ca_file: Some(ca_file),
        ..Default::default()
    };
    v.cores = v.cores.iter().map(|c| c.clone().with_rotation(settings.clone())).collect();
    let _engines = engines(&v);
    v.root(0, Operation::KvPut { path: "hooks/key".into(), data: data(&[("key", "hook-signing-key")]), cas: None })
        .await;
    v.root(0, Operation::KvPut { path: "app/hooked".into(), data: data(&[("password", "original")]), cas: None }).await;

    // URLs outside the node's allow-list are refused when configured (no SSRF from the API).
    for url in ["https://169.254.169.254/latest/meta-data", &format!("http://localhost:{port}/rotate/app")] {
        let set = config("app/hooked", RotatorKind::Webhook, &[("url", url), ("signing_key", "hooks/key")], 3_600_000);
        let e = call(&v.cores[0], Some(&v.root), Operation::RotationSet(set)).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{url}: {e}");
    }
    let url = format!("https://localhost:{port}/rotate/app");
    let params = [("url", url.as_str()), ("signing_key", "hooks/key"), ("timeout", "5s")];
    v.root(0, Operation::RotationSet(config("app/hooked", RotatorKind::Webhook, &params, 3_600_000))).await;
    v.root(1, Operation::RotationNow { path: "app/hooked".into() }).await;
    let s = wait_for(&v, "app/hooked", Duration::from_secs(15), |s| s.state.rotations == 1 || s.state.failed).await;
    assert!(!s.state.failed, "{}", s.state.last_error);
    assert_eq!(stage(&v, 2, "app/hooked", Stage::Current).await["password"], "from-webhook");
    let calls = seen.lock().unwrap().clone();
    let steps: Vec<&str> = calls.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(steps, ["create", "set", "test", "finish"]);
    assert!(calls.iter().all(|(_, valid)| *valid), "every call is signed with the key: {calls:?}");

    // What the endpoint answers with an error status goes nowhere: status keeps the code.
    v.root(0, Operation::KvPut { path: "app/leaky".into(), data: data(&[("password", "p")]), cas: None }).await;
    let leaky_url = format!("https://localhost:{port}/rotate/leaky");
    let mut set = config(
        "app/leaky",
        RotatorKind::Webhook,
        &[("url", leaky_url.as_str()), ("signing_key", "hooks/key")],
        3_600_000,
    );
    set.max_attempts = 1;
    v.root(0, Operation::RotationSet(set)).await;
    v.root(1, Operation::RotationNow { path: "app/leaky".into() }).await;
    let s = wait_for(&v, "app/leaky", Duration::from_secs(15), |s| s.state.failed).await;
    assert!(s.state.last_error.contains("HTTP 500"), "{}", s.state.last_error);
    assert!(!s.state.last_error.contains("LEAKED"), "{}", s.state.last_error);
    endpoint.abort();
    v.cluster.shutdown().await;
}

// ---- A hostile database ----

/// What a fake PostgreSQL server does after reading a client's startup message.
#[derive(Clone, Copy)]
enum FakePg {
    /// Asks for the password in cleartext (as a downgrading man in the middle would).
    Cleartext,
    /// Asks for an MD5 password.
    Md5,
    /// Refuses with an error whose text the server chose.
    ErrorText,
}

/// Serves `mode` on a loopback port; the flag says whether a password message ever arrived.
async fn fake_pg(mode: FakePg) -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got_password = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = got_password.clone();
    let task = tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let mut len = [0u8; 4];
            if s.read_exact(&mut len).await.is_err() {
                continue;
            }
            let mut startup = vec![0u8; u32::from_be_bytes(len) as usize - 4];
            if s.read_exact(&mut startup).await.is_err() {
                continue;
            }
            let message = |tag: u8, body: &[u8]| [&[tag][..], &(body.len() as u32 + 4).to_be_bytes(), body].concat();
            let reply = match mode {
                FakePg::Cleartext => message(b'R', &3u32.to_be_bytes()),
                FakePg::Md5 => message(b'R', &[&5u32.to_be_bytes()[..], b"salt"].concat()),
                FakePg::ErrorText => message(
                    b'E',
                    b"SFATAL\0C28P01\0MLEAKED-BY-DATABASE: password authentication failed for prod-admin-secret\0\0",
                ),
            };
            let _ = s.write_all(&reply).await;
            // A password message ('p') arriving now is the leak this guards against.
            let mut tag = [0u8; 1];
            if let Ok(Ok(1)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut tag)).await {
                if tag[0] == b'p' {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    });
    (port, got_password, task)
}

/// Issue 15, item 1: a server that asks for a cleartext or MD5 password never gets one, and
/// what a server says in its errors never reaches the rotation's status or the audit trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_database_gets_no_password_and_its_words_go_nowhere() {
    let fakes = [fake_pg(FakePg::Cleartext).await, fake_pg(FakePg::Md5).await, fake_pg(FakePg::ErrorText).await];
    let allow: Vec<String> = fakes.iter().map(|(port, _, _)| format!("127.0.0.1:{port}")).collect();
    let v = pg_vault_allowing(&allow).await;
    let _engines = engines(&v);
    for (i, (port, got_password, _)) in fakes.iter().enumerate() {
        let path = format!("db/hostile{i}");
        v.root(0, Operation::KvPut { path: path.clone(), data: data(&[("username", "app")]), cas: None }).await;
        let port = port.to_string();
        let params = [("admin", "db/admin"), ("username", "app"), ("host", "127.0.0.1"), ("port", port.as_str())];
        let mut set = config(&path, RotatorKind::Postgres, &params, 3_600_000);
        set.max_attempts = 1;
        v.root(0, Operation::RotationSet(set)).await;
        v.root(1, Operation::RotationNow { path: path.clone() }).await;
        let s = wait_for(&v, &path, Duration::from_secs(15), |s| s.state.failed).await;
        let error = &s.state.last_error;
        if i < 2 {
            assert!(error.contains("cleartext or MD5"), "{error}");
        } else {
            assert!(error.contains("SQLSTATE 28P01"), "{error}");
        }
        assert!(!got_password.load(std::sync::atomic::Ordering::SeqCst), "the server received a password");
        let Reply::AuditRecords(records) = v
            .root(0, Operation::AuditList(AuditFilter { path_prefix: "sys/rotation/".into(), ..Default::default() }))
            .await
        else {
            panic!()
        };
        let trail = format!("{records:?}");
        for text in [error.as_str(), trail.as_str()] {
            assert!(!text.contains("LEAKED") && !text.contains("prod-admin-secret"), "leaked: {text}");
        }
    }
    v.cluster.shutdown().await;
}
