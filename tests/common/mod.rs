//! Drives the real `arca` binary: a `arca dev cluster` in a temporary directory on free
//! loopback ports, and the CLI against it.

#![allow(dead_code)]

pub mod history;
pub mod pg;
pub mod proxy;
pub mod webdriver;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ARCA: &str = env!("CARGO_BIN_EXE_arca");

/// A running `arca dev cluster`. Dropping it stops every process it or the test started.
pub struct DevCluster {
    pub dir: tempfile::TempDir,
    pub base: u16,
    pub ca: PathBuf,
    pub token: String,
    pub shares: Vec<String>,
    child: Child,
    extra: Vec<Child>,
    /// The `extra` index of each node's current process, once a test restarted it.
    restarted: std::collections::BTreeMap<u64, usize>,
}

fn ports_free(base: u16, nodes: u16) -> bool {
    (0..nodes).all(|i| (0..3).all(|off| TcpListener::bind(("127.0.0.1", base + 10 * i + off)).is_ok()))
}

/// A base port whose node ports (base + 10i, base + 10i + 1, and + 2 for a node behind a
/// proxy) are all free right now. The range (20000–31990) stays below Linux's ephemeral ports
/// (32768 and up), so a client's outgoing connection cannot take a port a node is about to
/// bind.
pub fn free_base(nodes: u16) -> u16 {
    let seed = std::process::id() as u16;
    (0..200u16)
        .map(|i| 20_000 + ((seed.wrapping_mul(7919).wrapping_add(i * 97)) % 1200) * 10)
        .find(|&b| ports_free(b, nodes))
        .expect("no free port range on loopback")
}

impl DevCluster {
    pub fn start(nodes: u16) -> DevCluster {
        DevCluster::start_with(nodes, "")
    }

    /// A cluster whose every node config ends with `extra` (TOML, e.g. a `[limits]` section).
    pub fn start_with(nodes: u16, extra: &str) -> DevCluster {
        let dir = tempfile::TempDir::new().unwrap();
        let base = free_base(nodes);
        let log = std::fs::File::create(dir.path().join("cluster.log")).unwrap();
        let extra_path = dir.path().join("extra.toml");
        std::fs::write(&extra_path, extra).unwrap();
        let child = Command::new(ARCA)
            .args(["dev", "cluster", "--nodes", &nodes.to_string(), "--base-port", &base.to_string(), "--dir"])
            .arg(dir.path())
            .arg("--extra-config")
            .arg(&extra_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start arca dev cluster");
        let mut cluster = DevCluster {
            dir,
            base,
            ca: PathBuf::new(),
            token: String::new(),
            shares: vec![],
            child,
            extra: vec![],
            restarted: Default::default(),
        };
        let env = cluster.dir.path().join("env");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !env.exists() {
            if let Ok(Some(status)) = cluster.child.try_wait() {
                panic!("arca dev cluster exited with {status}:\n{}", cluster.log());
            }
            assert!(Instant::now() < deadline, "dev cluster not up within 120 s:\n{}", cluster.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        let init: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(cluster.dir.path().join("init.json")).unwrap()).unwrap();
        cluster.token = init["root_token"].as_str().unwrap().to_string();
        cluster.shares = init["shares"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
        cluster.ca = cluster.dir.path().join("certs/ca.pem");
        cluster
    }

    pub fn restart_log(&self, node: u64) -> PathBuf {
        self.dir.path().join(format!("node{node}-restart.log"))
    }

    /// The CLI's home directory in tests (where `arca login` stores its token).
    pub fn home(&self) -> PathBuf {
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        home
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cluster.log")).unwrap_or_default()
    }

    pub fn api(&self, node: u64) -> String {
        format!("https://127.0.0.1:{}", self.base + 10 * (node as u16 - 1))
    }

    pub fn config(&self, node: u64) -> PathBuf {
        self.dir.path().join(format!("node{node}/node.toml"))
    }

    pub fn data_dir(&self, node: u64) -> PathBuf {
        self.dir.path().join(format!("node{node}/data"))
    }

    /// The pid `arca dev cluster` recorded for a node.
    pub fn pid(&self, node: u64) -> i32 {
        let c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(self.dir.path().join("cluster.json")).unwrap()).unwrap();
        c["nodes"][node as usize - 1]["pid"].as_i64().unwrap() as i32
    }

    /// Runs the CLI against `node` with the root token.
    pub fn arca(&self, node: u64, args: &[&str]) -> Output {
        self.arca_with_token(node, Some(&self.token), args)
    }

    pub fn arca_with_token(&self, node: u64, token: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(ARCA);
        cmd.args(args)
            .env("ARCA_ADDR", self.api(node))
            .env("ARCA_CACERT", &self.ca)
            .env("HOME", self.home())
            .env_remove("ARCA_TOKEN")
            .env_remove("ARCA_CLIENT_CERT")
            .env_remove("ARCA_CLIENT_KEY");
        if let Some(t) = token {
            cmd.env("ARCA_TOKEN", t);
        }
        cmd.stdin(Stdio::null()).output().expect("run arca")
    }

    /// Like [`DevCluster::arca`], asserting success and returning stdout.
    pub fn ok(&self, node: u64, args: &[&str]) -> String {
        let out = self.arca(node, args);
        assert!(out.status.success(), "arca {args:?} on node {node} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// A policy reading everything under each prefix, and an AppRole role with it; returns
    /// the role's (role id, secret id).
    pub fn read_role(&self, name: &str, prefixes: &[&str], token_ttl: &str, token_max_ttl: &str) -> (String, String) {
        let hcl = self.dir.path().join(format!("{name}.hcl"));
        let rules: String =
            prefixes.iter().map(|p| format!("path \"secret/data/{p}*\" {{ capabilities = [\"read\"] }}\n")).collect();
        std::fs::write(&hcl, rules).unwrap();
        self.ok(1, &["policy", "write", name, hcl.to_str().unwrap()]);
        let role = ["approle", "role", "write", name, "--policies", name, "--token-ttl", token_ttl];
        self.ok(1, &[&role[..], &["--token-max-ttl", token_max_ttl]].concat());
        let field = |out: String, f: &str| -> String {
            serde_json::from_str::<serde_json::Value>(&out).unwrap()[f].as_str().unwrap().to_string()
        };
        let role_id = field(self.ok(1, &["approle", "role-id", name, "--format", "json"]), "role_id");
        let secret_id = field(self.ok(1, &["approle", "secret-id", name, "--format", "json"]), "secret_id");
        (role_id, secret_id)
    }

    /// The id of the node the cluster reports as leader.
    pub fn leader(&self, ask: u64) -> u64 {
        let members: serde_json::Value =
            serde_json::from_str(&self.ok(ask, &["operator", "members", "--format", "json"])).unwrap();
        members.as_array().unwrap().iter().find(|m| m["leader"] == true).expect("a leader")["id"].as_u64().unwrap()
    }

    /// Starts a node again from its config, as an operator would after a crash.
    pub fn restart(&mut self, node: u64) {
        self.restart_with(node, &[]);
    }

    /// [`DevCluster::restart`] with more `arca server` arguments; its log is
    /// [`DevCluster::restart_log`].
    pub fn restart_with(&mut self, node: u64, args: &[&str]) {
        let child = spawn_server(&self.config(node), args, &self.restart_log(node));
        self.extra.push(child);
        self.restarted.insert(node, self.extra.len() - 1);
    }

    /// `kill -9` of the node's current process (the first one, or the one a restart started),
    /// returning once it is gone.
    pub fn kill9(&mut self, node: u64) {
        match self.restarted.get(&node) {
            Some(&i) => {
                let _ = self.extra[i].kill();
                let _ = self.extra[i].wait();
            }
            None => {
                let pid = self.pid(node);
                unsafe { libc::kill(pid, libc::SIGKILL) };
                // Gone once `arca dev cluster` reaped it, or it is a zombie (dead, not yet reaped).
                let alive = || {
                    std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
                };
                let deadline = Instant::now() + Duration::from_secs(10);
                while alive() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        // A zombie leader thread is not a gone process: its other threads may still be
        // exiting (an mlocked address space takes a while to tear down) and hold the data
        // directory's lock, and a restart then fails on it. Gone means the lock is free.
        let lock = self.data_dir(node).join("db/LOCK");
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock_held(&lock) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Restarts a stopped node and unseals it with the threshold of shares; returns once it
    /// reports unsealed.
    pub fn restart_unsealed(&mut self, node: u64) {
        self.restart(node);
        eventually(Duration::from_secs(60), || {
            self.arca_with_token(node, None, &["status"]).status.success().then_some(())
        })
        .unwrap_or_else(|| {
            let log = std::fs::read_to_string(self.restart_log(node)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "node {node} did not answer after its restart; its log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        });
        for share in &self.shares[..3] {
            self.ok(node, &["operator", "unseal", share]);
        }
    }

    /// Puts a TCP proxy in front of every node's cluster port ([`proxy`]), so the test can cut
    /// links between the processes: every node is killed, its config changed to listen on
    /// its cluster port + 1 and dial peers from its own loopback address, the proxies start on
    /// the old ports (the addresses the membership holds), and the nodes restart unsealed.
    pub fn route_through_proxies(&mut self, rt: &tokio::runtime::Runtime) -> proxy::Links {
        let links = proxy::Links::default();
        let nodes: Vec<u64> = (1..=3).collect();
        for &node in &nodes {
            self.kill9(node);
        }
        for &node in &nodes {
            let port = self.base + 10 * (node as u16 - 1) + 1;
            let text = std::fs::read_to_string(self.config(node)).unwrap();
            let listen = format!("[cluster]\nlisten = \"127.0.0.1:{port}\"");
            assert!(text.contains(&listen), "unexpected config:\n{text}");
            let text = text.replace(
                &listen,
                &format!(
                    "[cluster]\nsource_address = \"{}\"\nlisten = \"127.0.0.1:{}\"",
                    proxy::source_address(node),
                    port + 1
                ),
            );
            std::fs::write(self.config(node), text).unwrap();
            let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
            rt.spawn(proxy::serve(addr(port), addr(port + 1), node, links.clone()));
        }
        for &node in &nodes {
            self.restart_unsealed(node);
        }
        links
    }

    /// Issues development certificates for nodes 1 to `nodes` from this cluster's CAs (for
    /// extra nodes started with [`DevCluster::start_extra`]).
    pub fn issue_certs(&self, nodes: u64) {
        let names: Vec<String> = (1..=nodes).map(|n| format!("node{n}")).collect();
        let out = Command::new(ARCA)
            .args(["dev", "certs", "--dir"])
            .arg(self.dir.path().join("certs"))
            .args(["--nodes", &names.join(",")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// Starts one more `arca server`, from node 1's config, with its API on `api` (cluster port
    /// `api + 1`) and its data under DIR/`name`; its log is DIR/`name`.log. It stops when the
    /// returned handle is dropped.
    pub fn start_extra(&self, name: &str, api: u16, formation: Formation) -> ExtraNode {
        let dir = self.dir.path();
        let addr = |port: u16| format!("127.0.0.1:{port}");
        let mut text = std::fs::read_to_string(self.config(1))
            .unwrap()
            .replace(&addr(self.base), &addr(api))
            .replace(&addr(self.base + 1), &addr(api + 1))
            .replace(&dir.join("node1/").display().to_string(), &dir.join(format!("{name}/")).display().to_string());
        let (id, formation_line) = match formation {
            Formation::OwnCluster => (1, "bootstrap = true".to_string()),
            Formation::Unjoined { id } => (id, String::new()),
            Formation::Join { id, non_voter } => {
                (id, format!("join = [\"{}\"]\nnon_voter = {non_voter}", addr(self.base + 1)))
            }
        };
        if id != 1 {
            text = text
                .replace("node_id = 1", &format!("node_id = {id}"))
                .replace("bootstrap = true", &formation_line)
                .replace("node1", &format!("node{id}"));
        }
        let node_dir = dir.join(name);
        std::fs::create_dir_all(&node_dir).unwrap();
        let config = node_dir.join("node.toml");
        std::fs::write(&config, text).unwrap();
        let child = spawn_server(&config, &[], &dir.join(format!("{name}.log")));
        ExtraNode { child, api: format!("https://127.0.0.1:{api}") }
    }
}

/// How an extra node starts.
pub enum Formation {
    /// A cluster of its own, never initialized. It keeps node 1's id: its cluster certificate
    /// names `node-1.arca`, and a node refuses a certificate that does not name its id.
    OwnCluster,
    /// Node `id` joining this cluster through node 1 (its certificate from
    /// [`DevCluster::issue_certs`]).
    Join { id: u64, non_voter: bool },
    /// Node `id` in no cluster, waiting to be told to join (`operator join`).
    Unjoined { id: u64 },
}

/// An `arca server` a test started; killed when dropped.
pub struct ExtraNode {
    child: Child,
    pub api: String,
}

impl Drop for ExtraNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `arca server --config CONFIG ARGS…`, logging to `log`.
fn spawn_server(config: &Path, args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(ARCA)
        .arg("server")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start arca server")
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        for c in &mut self.extra {
            let _ = c.kill();
            let _ = c.wait();
        }
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Retries `f` every 100 ms until it returns `Some` or `limit` passes.
pub fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Occurrences of `needle` in every file under `dir`.
pub fn count_in_files(dir: &Path, needle: &[u8]) -> usize {
    let mut hits = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hits += count_in_files(&path, needle);
        } else if let Ok(bytes) = std::fs::read(&path) {
            hits += bytes.windows(needle.len()).filter(|w| *w == needle).count();
        }
    }
    hits
}

/// A CA and one client certificate it issued, written as PEM files under `dir`.
pub fn client_pki(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![format!("{cn}.example.test")]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let files =
        (dir.join(format!("{name}-ca.pem")), dir.join(format!("{name}-cert.pem")), dir.join(format!("{name}-key.pem")));
    std::fs::write(&files.0, ca.pem()).unwrap();
    std::fs::write(&files.1, cert.pem()).unwrap();
    std::fs::write(&files.2, key.serialize_pem()).unwrap();
    files
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/core/tests/fixtures").join(name)
}

/// Whether another process holds the POSIX record lock RocksDB takes on `path` (its `LOCK`
/// file). `F_GETLK` only asks; it takes nothing.
fn lock_held(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(path) else {
        return false;
    };
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) };
    rc == 0 && i32::from(fl.l_type) != libc::F_UNLCK
}
