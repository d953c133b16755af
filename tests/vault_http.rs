//! The Vault-compatible HTTP API: the real `hvac` client (tests/vault/hvac_suite.py) against a
//! 3-node cluster and a fresh node, and the same denied request over gRPC and over HTTP leaving
//! two equivalent audit records.
//!
//! Needs a Python with hvac: `scripts/hvac-setup.sh` makes one and `scripts/test.sh` exports it
//! as `ARCA_HVAC_PYTHON`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, fixture, free_base, DevCluster, ExtraNode, Formation};

fn python() -> String {
    std::env::var("ARCA_HVAC_PYTHON").expect(
        "ARCA_HVAC_PYTHON must name a Python with hvac installed: run scripts/hvac-setup.sh (scripts/test.sh does)",
    )
}

/// One more `arca server`, never initialized, built from node 1's configuration.
fn fresh_node(c: &DevCluster) -> ExtraNode {
    let base = free_base(1);
    let node = c.start_extra("fresh", base, Formation::OwnCluster);
    eventually(Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", base)).ok())
        .expect("the fresh node listens");
    node
}

fn run_python(script: &Path, env: &[(&str, String)]) -> std::process::Output {
    let mut cmd = Command::new(python());
    cmd.arg(script).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run python")
}

fn suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vault/hvac_suite.py")
}

#[test]
fn hvac_works_against_arca_unchanged() {
    let c = DevCluster::start(3);
    let fresh = fresh_node(&c);
    let out = run_python(
        &suite(),
        &[
            ("VAULT_ADDR", c.api(1)),
            ("VAULT_CACERT", c.ca.display().to_string()),
            ("ARCA_NODE2_ADDR", c.api(2)),
            ("ARCA_FRESH_ADDR", fresh.api.clone()),
            ("ARCA_ROOT_TOKEN", c.token.clone()),
            ("ARCA_SHARES", c.shares.join(",")),
        ],
    );
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "hvac suite failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
    // Still serving after the malformed requests.
    c.ok(1, &["kv", "get", "app/db"]);
}

#[test]
fn a_denied_request_is_audited_alike_over_grpc_and_http() {
    let c = DevCluster::start(3);
    c.ok(1, &["kv", "put", "other/x", "k=v"]);
    let hcl = c.dir.path().join("app.hcl");
    std::fs::write(&hcl, "path \"secret/data/app/*\" { capabilities = [\"read\"] }\n").unwrap();
    c.ok(1, &["policy", "write", "app-read", hcl.to_str().unwrap()]);
    let created: serde_json::Value =
        serde_json::from_str(&c.ok(1, &["token", "create", "--policy", "app-read", "--format", "json"])).unwrap();
    let token = created["token"].as_str().unwrap().to_string();

    let grpc = c.arca_with_token(2, Some(&token), &["kv", "get", "other/x"]);
    assert!(!grpc.status.success());
    let http = Command::new(python())
        .args([
            "-c",
            "import os, requests; r = requests.get(os.environ['URL'], headers={'X-Vault-Token': os.environ['TOKEN']}, \
             verify=os.environ['CA']); print(r.status_code); print(r.headers.get('x-request-id', ''))",
        ])
        .env("URL", format!("{}/v1/secret/data/other/x", c.api(3)))
        .env("TOKEN", &token)
        .env("CA", &c.ca)
        .output()
        .unwrap();
    let http_out = String::from_utf8_lossy(&http.stdout).to_string();
    let mut lines = http_out.lines();
    assert_eq!(lines.next(), Some("403"), "{http_out}{}", String::from_utf8_lossy(&http.stderr));
    let http_request_id = lines.next().unwrap_or_default().to_string();
    assert_eq!(http_request_id.len(), 32, "the response names its request id: {http_out}");

    let records = eventually(Duration::from_secs(10), || {
        let out = c.ok(1, &["audit", "list", "--path", "secret/data/other/x", "--format", "json"]);
        let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        let denied: Vec<_> = all.into_iter().filter(|r| r["decision"] == "denied").collect();
        (denied.len() == 2 && denied.iter().all(|r| r["outcome"] != "unknown")).then_some(denied)
    })
    .expect("two denied records");
    let same = [
        "operation",
        "path",
        "decision",
        "capability",
        "accessor",
        "policies",
        "auth_method",
        "outcome",
        "error",
        "request_hmacs",
    ];
    for field in same {
        assert_eq!(records[0][field], records[1][field], "{field} differs: {records:?}");
    }
    assert_eq!(records[0]["operation"], "KvGet");
    assert!(records.iter().any(|r| r["request_id"] == http_request_id.as_str()), "{records:?}");
    assert_ne!(records[0]["node"], records[1]["node"], "served by nodes 2 and 3");
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains(&token), "no token in audit records");
}

/// POSTs a JSON body with Python's `requests` (the client side of hvac); returns status and body.
fn post(url: &str, ca: &Path, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let out = Command::new(python())
        .args([
            "-c",
            "import os, sys, json, requests; r = requests.post(os.environ['URL'], data=os.environ['BODY'], verify=os.environ['CA']); \
             print(r.status_code); print(r.text or 'null')",
        ])
        .env("URL", url)
        .env("BODY", body.to_string())
        .env("CA", ca)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (status, body) =
        text.split_once('\n').unwrap_or_else(|| panic!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    (status.trim().parse().unwrap(), serde_json::from_str(body.trim()).unwrap())
}

#[test]
fn jwt_and_kubernetes_logins_over_http() {
    let c = DevCluster::start(3);
    c.ok(1, &["auth", "jwt", "config", "--pem-key", fixture("jwt-rs256-test-pub.pem").to_str().unwrap()]);
    // A Kubernetes service account, as the JWT method sees it: its subject.
    let sa = "system:serviceaccount:shop:checkout";
    c.ok(
        1,
        &[
            "auth",
            "jwt",
            "role",
            "write",
            "checkout",
            "--bound-audience",
            "arca",
            "--bound-subject",
            sa,
            "--policies",
            "default",
        ],
    );
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(fixture("jwt-rs256-test-key.pem")).unwrap()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let sign = |sub: &str| {
        let claims = serde_json::json!({"sub": sub, "aud": "arca", "exp": now + 300, "nbf": now - 5});
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key).unwrap()
    };
    for method in ["jwt", "kubernetes"] {
        let url = format!("{}/v1/auth/{method}/login", c.api(2));
        let (status, body) = post(&url, &c.ca, &serde_json::json!({"role": "checkout", "jwt": sign(sa)}));
        assert_eq!(status, 200, "{method}: {body}");
        let token = body["auth"]["client_token"].as_str().unwrap();
        assert!(body["auth"]["policies"].as_array().unwrap().iter().any(|p| p == "default"), "{body}");
        let lookup = c.arca_with_token(1, Some(token), &["token", "lookup", "--format", "json"]);
        assert!(lookup.status.success(), "{method}: the login's token works over gRPC");

        let (status, body) = post(
            &url,
            &c.ca,
            &serde_json::json!({"role": "checkout", "jwt": sign("system:serviceaccount:shop:other")}),
        );
        assert_eq!(status, 400, "{method}: another service account is refused: {body}");
        assert!(body["errors"][0].as_str().unwrap().contains("sub"), "{body}");
    }
}

/// Issue 15, item 7: an HTTP PATCH is one core operation, so one audit record (before, the
/// front read and wrote: two records, and the patch was not one guarded step).
#[test]
fn a_patch_over_http_is_one_audited_operation() {
    let c = DevCluster::start(1);
    c.ok(1, &["kv", "put", "app/patched", "user=svc", "password=old", "drop=me"]);
    let out = Command::new(python())
        .args([
            "-c",
            "import os, requests; r = requests.patch(os.environ['URL'], \
             headers={'X-Vault-Token': os.environ['TOKEN'], 'Content-Type': 'application/merge-patch+json'}, \
             data='{\"data\": {\"password\": \"new\", \"drop\": null}, \"options\": {\"cas\": 1}}', \
             verify=os.environ['CA']); print(r.status_code)",
        ])
        .env("URL", format!("{}/v1/secret/data/app/patched", c.api(1)))
        .env("TOKEN", &c.token)
        .env("CA", &c.ca)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200", "{}", String::from_utf8_lossy(&out.stderr));
    let got = c.ok(1, &["kv", "get", "app/patched", "--format", "json"]);
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    let data = if got["data"].is_object() { &got["data"] } else { &got };
    assert_eq!(data["password"], "new", "{got}");
    assert_eq!(data["user"], "svc", "{got}");
    assert!(data.get("drop").is_none(), "{got}");
    let ops = eventually(Duration::from_secs(10), || {
        let out = c.ok(1, &["audit", "list", "--path", "secret/data/app/patched", "--format", "json"]);
        let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        let ops: Vec<String> = all.iter().map(|r| r["operation"].as_str().unwrap_or_default().to_string()).collect();
        ops.iter().any(|o| o == "KvPatch").then_some(ops)
    })
    .expect("the patch's record");
    // The put that made it, the patch, and the read above: the patch left exactly one.
    assert_eq!(ops, ["KvPut", "KvPatch", "KvGet"], "{ops:?}");
}

/// One request with curl and a raw body: (status, JSON body or null).
fn curl(c: &DevCluster, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let out = Command::new("curl")
        .args(["-s", "-X", method, "--cacert"])
        .arg(&c.ca)
        .args(["-H", &format!("X-Vault-Token: {}", c.token), "-d", body, "-w", "\n%{http_code}"])
        .arg(format!("{}/v1/{path}", c.api(1)))
        .output()
        .expect("run curl");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

/// Issue 18: bodies as the bao/vault CLI sends them. `bao write -f …/secret-id` sends `null`
/// (Vault's documented AppRole flow); `bao kv undelete -versions=1` and `destroy` send the
/// versions as strings.
#[test]
fn bodies_the_bao_cli_sends_are_read_as_vault_reads_them() {
    let c = DevCluster::start(1);
    c.ok(1, &["approle", "role", "write", "web", "--policies", "default"]);
    let (status, body) = curl(&c, "POST", "auth/approle/role/web/secret-id", "null");
    assert_eq!(status, 200, "{body}");
    assert!(!body["data"]["secret_id"].as_str().unwrap_or_default().is_empty(), "{body}");
    let (status, body) = curl(&c, "POST", "auth/approle/role/web/secret-id", "[1]");
    assert_eq!(status, 400, "a body that is not an object is still refused: {body}");

    c.ok(1, &["kv", "put", "app/v", "n=1"]);
    c.ok(1, &["kv", "put", "app/v", "n=2"]);
    for (verb, body) in [
        ("delete", r#"{"versions": ["1"]}"#),
        ("undelete", r#"{"versions": ["1"]}"#),
        ("destroy", r#"{"versions": "1"}"#),
    ] {
        let (status, reply) = curl(&c, "POST", &format!("secret/{verb}/app/v"), body);
        assert_eq!(status, 204, "{verb} {body}: {reply}");
    }
    let (status, reply) = curl(&c, "POST", "secret/destroy/app/v", r#"{"versions": ["one"]}"#);
    assert_eq!(status, 400, "{reply}");
    assert!(reply["errors"][0].as_str().unwrap().contains("not a whole number"), "{reply}");
    let (_, meta) = curl(&c, "GET", "secret/metadata/app/v", "");
    assert_eq!(meta["data"]["versions"]["1"]["destroyed"], true, "{meta}");
    assert_eq!(meta["data"]["versions"]["2"]["destroyed"], false, "{meta}");
}
