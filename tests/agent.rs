//! `arca agent` against a real 3-node cluster: templates rendered from several secrets and
//! rendered again within a second of a write (the after-change command once per change),
//! failover when the agent's member is killed, `on_missing`, the token sink, exec mode, the
//! local cache endpoint, and what the rendered files and logs never contain. And applications
//! reading a rendered file while the `postgres` rotator changes their credentials every 2 s.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pg::{pg_connect, pg_error, pg_role, PG_ADMIN};
use common::{eventually, DevCluster};

/// An `arca agent` process; killed when dropped.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(c: &DevCluster, dir: &Path, toml: &str) -> Agent {
        let config = dir.join("agent.toml");
        std::fs::write(&config, toml).unwrap();
        let log = dir.join("agent.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(common::ARCA)
            .args(["agent", "--config", config.to_str().unwrap()])
            .env("HOME", c.home())
            .env_remove("RUST_LOG")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> Option<i32> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls `path` every 10 ms until it holds `needle`; returns how long that took.
fn until_contains(path: &Path, needle: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if read(path).contains(needle) {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// `[cluster]` and `[auth]` for an AppRole that reads `prefixes`; the ids go to files in `dir`.
fn approle_config(c: &DevCluster, dir: &Path, name: &str, prefixes: &[&str], first: u64) -> String {
    let (role_id, secret_id) = c.read_role(name, prefixes, "1h", "2h");
    std::fs::write(dir.join("role-id"), role_id).unwrap();
    std::fs::write(dir.join("secret-id"), secret_id).unwrap();
    let addrs: Vec<String> =
        [first, first % 3 + 1, (first + 1) % 3 + 1].iter().map(|n| format!("\"{}\"", c.api(*n))).collect();
    format!(
        "[cluster]\naddrs = [{}]\nca_cert = \"{}\"\n\n[auth]\nmethod = \"approle\"\nrole_id_file = \"{}\"\nsecret_id_file = \"{}\"\n\n",
        addrs.join(", "),
        c.ca.display(),
        dir.join("role-id").display(),
        dir.join("secret-id").display()
    )
}

#[test]
fn templates_render_again_within_a_second_and_survive_the_death_of_the_agents_member() {
    let mut c = DevCluster::start(3);
    let dir = tempfile::TempDir::new().unwrap();
    let d = dir.path();
    c.ok(1, &["kv", "put", "db/app", "username=app", "password=pw-one-7f3a", "unasked=never-rendered-91c2"]);
    c.ok(1, &["kv", "put", "api/key", "token=tok-2b8e"]);
    c.ok(1, &["kv", "put", "app/flags", "mode=blue"]);
    c.ok(1, &["kv", "put", "app/optional", "x=present"]);
    let auth = approle_config(&c, d, "agent", &["db/", "api/", "app/"], 1);
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();
    let (env_file, optional, ran, sink) =
        (out.join("app.env"), out.join("optional"), d.join("ran.log"), d.join("token"));
    let toml = format!(
        r#"{auth}[sink]
path = "{sink}"

[freshness]
fallback_ttl = "2s"

[[template]]
contents = """
DB_USER={{{{ secret("db/app").username }}}}
DB_PASSWORD={{{{ secret("db/app").password }}}}
API_TOKEN={{{{ secret("api/key").token }}}}
MODE={{{{ secret("app/flags").mode | default("green") }}}}
"""
destination = "{env_file}"
mode = "0640"
command = "echo ran >> {ran}"

[[template]]
contents = "{{{{ secret('app/optional').x }}}}"
destination = "{optional}"
on_missing = "remove"
"#,
        sink = sink.display(),
        env_file = env_file.display(),
        ran = ran.display(),
        optional = optional.display(),
    );
    let agent = Agent::start(&c, d, &toml);

    assert!(until_contains(&env_file, "DB_PASSWORD=pw-one-7f3a", Duration::from_secs(30)).is_some(), "{}", agent.log());
    assert_eq!(read(&env_file), "DB_USER=app\nDB_PASSWORD=pw-one-7f3a\nAPI_TOKEN=tok-2b8e\nMODE=blue\n");
    assert_eq!(std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777, 0o640);
    assert!(until_contains(&optional, "present", Duration::from_secs(5)).is_some());
    assert!(eventually(Duration::from_secs(5), || (read(&ran).lines().count() == 1).then_some(())).is_some());
    // The secret id was used once and is gone from disk; the token sink is the owner's only.
    assert!(!d.join("secret-id").exists(), "the secret id file is removed after use");
    assert_eq!(std::fs::metadata(&sink).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(read(&sink).starts_with("arca_"), "the sink holds a token");
    // Watching before the next write, so the timing below is the watch's, not the startup's.
    assert!(
        eventually(Duration::from_secs(10), || agent.log().contains("watching the rendered secrets").then_some(()))
            .is_some(),
        "{}",
        agent.log()
    );

    // A new version reaches the file within a second; the command runs once for it.
    c.ok(1, &["kv", "put", "db/app", "username=app", "password=pw-two-c41d", "unasked=never-rendered-91c2"]);
    let took = until_contains(&env_file, "DB_PASSWORD=pw-two-c41d", Duration::from_secs(10));
    eprintln!("write to rendered file: {took:?}");
    assert!(took.is_some_and(|t| t < Duration::from_secs(1)), "rendered after {took:?}: {}", agent.log());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read(&ran).lines().count(), 2, "the after-change command runs once per change");

    // The agent's member dies; the next change still arrives, through another member.
    c.kill9(1);
    c.ok(2, &["kv", "put", "db/app", "username=app", "password=pw-three-9e07", "unasked=never-rendered-91c2"]);
    let took = until_contains(&env_file, "DB_PASSWORD=pw-three-9e07", Duration::from_secs(30));
    eprintln!("after the member's death: {took:?}");
    assert!(took.is_some(), "no render after node 1 died: {}", agent.log());

    // A deleted secret: its file goes (on_missing = "remove"); the other file stays.
    c.ok(2, &["kv", "delete", "app/optional"]);
    assert!(eventually(Duration::from_secs(10), || (!optional.exists()).then_some(())).is_some(), "{}", agent.log());
    assert!(read(&env_file).contains("pw-three-9e07"));

    // The whole cluster down: the files stay as they are (never emptied), the log says the
    // watch is broken; back up, the next change renders again.
    let before = read(&env_file);
    c.kill9(2);
    c.kill9(3);
    let said = eventually(Duration::from_secs(60), || agent.log().contains("the watch is broken").then_some(()));
    assert!(said.is_some(), "{}", agent.log());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(read(&env_file), before, "an unreachable cluster must not touch the rendered file");
    for node in 1..=3 {
        c.restart_unsealed(node);
    }
    let put = ["kv", "put", "db/app", "username=app", "password=pw-four-0b3c", "unasked=never-rendered-91c2"];
    assert!(eventually(Duration::from_secs(30), || c.arca(2, &put).status.success().then_some(())).is_some());
    let took = until_contains(&env_file, "DB_PASSWORD=pw-four-0b3c", Duration::from_secs(30));
    eprintln!("after the cluster came back: {took:?}");
    assert!(took.is_some(), "no render after the cluster came back: {}", agent.log());

    // Nothing the template did not ask for, and no value at all in the log.
    let log = agent.log();
    for value in ["never-rendered-91c2", "pw-one-7f3a", "pw-two-c41d", "pw-three-9e07", "pw-four-0b3c", "tok-2b8e"] {
        assert!(!log.contains(value), "the agent's log holds {value}:\n{log}");
    }
    assert!(!read(&env_file).contains("never-rendered-91c2"));
    assert!(!log.contains(read(&sink).trim()), "the agent's log holds its token");
    assert_eq!(agent.stop(), Some(0));
}

#[test]
fn exec_mode_restarts_the_application_with_new_secrets_and_the_local_endpoint_serves_hvac() {
    let c = DevCluster::start(3);
    let dir = tempfile::TempDir::new().unwrap();
    let d = dir.path();
    c.ok(1, &["kv", "put", "app/db", "password=first-5d1e"]);
    let auth = approle_config(&c, d, "exec", &["app/"], 2);
    let seen = d.join("seen");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let toml = format!(
        r#"{auth}[exec]
command = ["sh", "-c", "echo \"$DB_PASSWORD\" >> {seen}; exec sleep 60"]
grace = "2s"
env = {{ DB_PASSWORD = "{{{{ secret('app/db').password }}}}" }}

[listener]
address = "127.0.0.1:{port}"
paths = ["app/"]
"#,
        seen = seen.display(),
    );
    let agent = Agent::start(&c, d, &toml);
    assert!(until_contains(&seen, "first-5d1e", Duration::from_secs(30)).is_some(), "{}", agent.log());
    assert!(eventually(Duration::from_secs(10), || agent
        .log()
        .contains("watching the rendered secrets")
        .then_some(()))
    .is_some());

    // The local endpoint answers the Vault KV v2 read, without a token, for its paths only.
    let send = |path: &str, headers: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let request = format!("GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n");
        std::io::Write::write_all(&mut s, request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let get = |path: &str| send(path, &format!("Host: 127.0.0.1:{port}\r\nX-Vault-Request: true\r\n"));
    // What a forged request from the application's URL fetcher, or a DNS-rebinding page, sends.
    assert!(send("/v1/secret/data/app/db", &format!("Host: 127.0.0.1:{port}\r\n")).starts_with("HTTP/1.1 412"));
    let rebound = send("/v1/secret/data/app/db", "Host: attacker.example\r\nX-Vault-Request: true\r\n");
    assert!(rebound.starts_with("HTTP/1.1 403") && !rebound.contains("first-5d1e"), "{rebound}");
    let body = get("/v1/secret/data/app/db");
    assert!(body.starts_with("HTTP/1.1 200") && body.contains("\"password\":\"first-5d1e\""), "{body}");
    assert!(get("/v1/secret/data/other/x").starts_with("HTTP/1.1 403"));
    // hvac, as an application would use it, with no token.
    let python = std::env::var("ARCA_HVAC_PYTHON")
        .expect("ARCA_HVAC_PYTHON must name a Python with hvac installed: run scripts/hvac-setup.sh");
    let script = "import hvac, sys\nc = hvac.Client(url=sys.argv[1])\nr = c.secrets.kv.v2.read_secret_version(path='app/db', raise_on_deleted_version=True)\nprint(r['data']['data']['password'])";
    let hvac = Command::new(python).args(["-c", script, &format!("http://127.0.0.1:{port}")]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&hvac.stdout).trim(), "first-5d1e", "{}", common::stderr(&hvac));

    c.ok(1, &["kv", "put", "app/db", "password=second-a2b9"]);
    assert!(until_contains(&seen, "second-a2b9", Duration::from_secs(10)).is_some(), "not restarted: {}", agent.log());
    assert_eq!(read(&seen), "first-5d1e\nsecond-a2b9\n", "one restart for one change");
    // The endpoint's cache dropped the old value when the watch reported the change.
    let fresh =
        eventually(Duration::from_secs(5), || get("/v1/secret/data/app/db").contains("second-a2b9").then_some(()));
    assert!(fresh.is_some());

    // The agent passes SIGTERM on and exits with the application's status (sleep killed by it).
    assert_eq!(agent.stop(), Some(128 + libc::SIGTERM));
}

/// What an application reading the rendered file saw.
struct Run {
    queries: u32,
    /// Seconds since the start of each failed query, and why.
    failures: Vec<(f64, String)>,
    /// How many different file contents it read.
    changes: u32,
}

impl Run {
    /// The longest stretch of consecutive failures, first to last (0 with none).
    fn longest_window(&self) -> f64 {
        let mut longest: f64 = 0.0;
        let mut start = None;
        let mut prev = f64::NEG_INFINITY;
        for (t, _) in &self.failures {
            // Queries run every 20 ms: a gap of more than 100 ms between failures is a new window.
            if *t - prev > 0.1 {
                start = Some(*t);
            }
            longest = longest.max(t - start.unwrap_or(*t));
            prev = *t;
        }
        longest
    }
}

/// A `postgres` rotation of `users` every 2 s, an agent rendering "user password" into a file,
/// and an application that, 50 times a second for `secs`, opens a new connection with what the
/// file says at that moment.
fn application_on_a_rendered_file(strategy: &str, users: &[&str], secs: u64) -> Run {
    let c = DevCluster::start(3);
    let dir = tempfile::TempDir::new().unwrap();
    let d = dir.path();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for u in users {
        rt.block_on(pg_role(u, "initial-password"));
    }
    let path = format!("db/agent-{strategy}");
    c.ok(1, &["kv", "put", "db/admin", &format!("username={}", PG_ADMIN.0), &format!("password={}", PG_ADMIN.1)]);
    c.ok(1, &["kv", "put", &path, &format!("username={}", users[0]), "password=initial-password"]);
    let user_param = match users {
        [one] => format!("username={one}"),
        many => format!("usernames={}", many.join(",")),
    };
    let params = ["--param", "admin=db/admin", "--param", &format!("strategy={strategy}"), "--param", &user_param];
    c.ok(1, &[&["rotation", "set", &path, "--rotator", "postgres", "--every", "2s"][..], &params[..]].concat());
    let auth = approle_config(&c, d, "pgapp", &[&path], 1);
    let file = d.join("db.conf");
    let toml = format!(
        "{auth}[[template]]\ncontents = \"{{{{ secret('{path}').username }}}} {{{{ secret('{path}').password }}}}\"\ndestination = \"{}\"\n",
        file.display()
    );
    let agent = Agent::start(&c, d, &toml);
    assert!(eventually(Duration::from_secs(30), || file.exists().then_some(())).is_some(), "{}", agent.log());

    let run = rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let started = Instant::now();
        let mut run = Run { queries: 0, failures: Vec::new(), changes: 0 };
        let mut last = String::new();
        // Bounded in time and in count (50 a second).
        while started.elapsed() < Duration::from_secs(secs) && u64::from(run.queries) < secs * 50 {
            tick.tick().await;
            let text = read(&file);
            if text != last {
                run.changes += 1;
                last = text.clone();
            }
            let (user, password) = text.split_once(' ').unwrap_or(("", ""));
            run.queries += 1;
            let result = match pg_connect(user, password).await {
                Ok(db) => db.simple_query("SELECT 1").await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                run.failures.push((started.elapsed().as_secs_f64(), pg_error(&e)));
            }
        }
        run
    });
    let status = c.ok(1, &["rotation", "status", &path, "--format", "json"]);
    eprintln!(
        "{strategy}: {} queries, {} failed, longest failure window {:.3} s, {} file versions seen; rotation {status}",
        run.queries,
        run.failures.len(),
        run.longest_window(),
        run.changes
    );
    assert!(u64::from(run.queries) >= secs * 25, "only {} queries", run.queries);
    assert!(
        u64::from(run.changes) >= secs / 6,
        "the file changed only {} times with a rotation every 2 s",
        run.changes
    );
    drop(agent);
    run
}

#[test]
fn postgres_alternating_users_every_2s_never_fail_an_application_reading_the_rendered_file() {
    let run = application_on_a_rendered_file("alternating", &["arca_agent_alt_a", "arca_agent_alt_b"], 60);
    assert!(run.failures.is_empty(), "{} of {} queries failed: {:?}", run.failures.len(), run.queries, run.failures);
}

/// With one user, the database has the new password from the rotation's `set` step and the
/// file from the render after `finish`: the README documents that window (under a second).
#[test]
fn postgres_single_user_failure_window_stays_under_a_second() {
    let run = application_on_a_rendered_file("single", &["arca_agent_single"], 20);
    assert!(run.longest_window() < 1.0, "failures for {:.3} s in a row: {:?}", run.longest_window(), run.failures);
}
