//! End-to-end identity through the real binary: policies restricting tokens, AppRole, TLS
//! certificate and JWT logins over the CLI, no credential in clear in any data file or log, and
//! tokens issued while the leader is killed.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client_pki, count_in_files, eventually, fixture, stderr, DevCluster};

const APP_READ: &str = r#"path "secret/data/app/*" {
  capabilities = ["read"]
}
"#;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn policies_logins_and_no_credential_in_clear() {
    let c = DevCluster::start(3);
    let dir = c.dir.path();
    c.ok(1, &["kv", "put", "app/db", "password=s3cret"]);
    c.ok(1, &["kv", "put", "other/x", "k=v"]);
    std::fs::write(dir.join("app-read.hcl"), APP_READ).unwrap();
    c.ok(2, &["policy", "write", "app-read", dir.join("app-read.hcl").to_str().unwrap()]);
    assert_eq!(c.ok(3, &["policy", "read", "app-read"]), APP_READ);
    assert!(c.ok(1, &["policy", "list"]).lines().any(|l| l == "app-read"));
    let bad = c.arca(1, &["policy", "write", "broken", "-"]);
    assert!(stderr(&bad).contains("no path rules"), "{}", stderr(&bad));

    // A token that may read app/* and nothing else.
    let created = json(&c.ok(1, &["token", "create", "--policy", "app-read", "--ttl", "1h", "--format", "json"]));
    let token = created["token"].as_str().unwrap().to_string();
    let mut secrets = vec![token.clone()];
    assert_eq!(c.arca_with_token(2, Some(&token), &["kv", "get", "--field", "password", "app/db"]).stdout, b"s3cret\n");
    for (args, path, cap) in [
        (vec!["kv", "put", "app/db", "password=x"], "secret/data/app/db", "'update'"),
        (vec!["kv", "get", "other/x"], "secret/data/other/x", "'read'"),
    ] {
        let out = c.arca_with_token(3, Some(&token), &args);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(err.contains("permission denied") && err.contains(path) && err.contains(cap), "{args:?}: {err}");
    }
    let caps = c.arca_with_token(1, Some(&token), &["token", "capabilities", "secret/data/app/db", "sys/seal"]);
    let caps = String::from_utf8(caps.stdout).unwrap();
    assert!(caps.contains("secret/data/app/db  read") && caps.contains("sys/seal") && caps.contains("deny"), "{caps}");

    // AppRole: the login stores the token in ~/.arca-token (0600), used when ARCA_TOKEN is unset.
    c.ok(
        1,
        &["approle", "role", "write", "web", "--policies", "app-read", "--token-ttl", "10m", "--secret-id-uses", "1"],
    );
    let role_id =
        json(&c.ok(2, &["approle", "role-id", "web", "--format", "json"]))["role_id"].as_str().unwrap().to_string();
    let secret_id =
        json(&c.ok(3, &["approle", "secret-id", "web", "--format", "json"]))["secret_id"].as_str().unwrap().to_string();
    secrets.push(secret_id.clone());
    let login = c.arca_with_token(1, None, &["login", "approle", "--role-id", &role_id, "--secret-id", &secret_id]);
    assert!(login.status.success(), "{}", stderr(&login));
    let stored = std::fs::read_to_string(c.home().join(".arca-token")).unwrap();
    secrets.push(stored.clone());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(c.home().join(".arca-token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(c.arca_with_token(2, None, &["kv", "get", "--field", "password", "app/db"]).stdout, b"s3cret\n");
    let again = c.arca_with_token(1, None, &["login", "approle", "--role-id", &role_id, "--secret-id", &secret_id]);
    assert!(stderr(&again).contains("invalid role_id or secret_id"), "{}", stderr(&again));
    std::fs::remove_file(c.home().join(".arca-token")).unwrap();

    // TLS certificate: a role trusts one CA; a certificate from another CA is refused.
    let (ca, cert, key) = client_pki(dir, "trusted", "billing-svc");
    let (_, other_cert, other_key) = client_pki(dir, "untrusted", "billing-svc");
    c.ok(
        1,
        &[
            "auth",
            "cert",
            "role",
            "write",
            "billing",
            "--ca",
            ca.to_str().unwrap(),
            "--allowed-common-name",
            "billing-*",
            "--policies",
            "app-read",
        ],
    );
    let cert_login = |cert: &Path, key: &Path| {
        c.arca_with_token(
            2,
            None,
            &[
                "login",
                "cert",
                "--no-store",
                "--format",
                "json",
                "--client-cert",
                cert.to_str().unwrap(),
                "--client-key",
                key.to_str().unwrap(),
            ],
        )
    };
    let ok = cert_login(&cert, &key);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let ok = json(&String::from_utf8(ok.stdout).unwrap());
    assert_eq!((ok["auth_method"].as_str(), ok["identity"].as_str()), (Some("cert"), Some("billing-svc")));
    secrets.push(ok["token"].as_str().unwrap().to_string());
    let refused = cert_login(&other_cert, &other_key);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("not trusted by this role"), "{}", stderr(&refused));
    let no_cert = c.arca_with_token(2, None, &["login", "cert"]);
    assert_eq!(no_cert.status.code(), Some(2), "{}", stderr(&no_cert));

    // JWT, with the key from a PEM file.
    c.ok(3, &["auth", "jwt", "config", "--pem-key", fixture("jwt-rs256-test-pub.pem").to_str().unwrap()]);
    c.ok(3, &["auth", "jwt", "role", "write", "ci", "--bound-audience", "arca", "--policies", "app-read"]);
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(fixture("jwt-rs256-test-key.pem")).unwrap()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({"sub": "ci-runner-7", "aud": "arca", "exp": now + 300, "nbf": now - 5});
    let jwt = jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key).unwrap();
    std::fs::write(dir.join("ci.jwt"), &jwt).unwrap();
    secrets.push(jwt.clone());
    let out = c.arca_with_token(
        1,
        None,
        &[
            "login",
            "jwt",
            "--role",
            "ci",
            "--jwt",
            dir.join("ci.jwt").to_str().unwrap(),
            "--no-store",
            "--format",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let logged = json(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(logged["identity"], "ci-runner-7");
    secrets.push(logged["token"].as_str().unwrap().to_string());

    // No token, secret id or JWT in clear in any data file or in the nodes' logs. The role id
    // is not secret: finding it proves the scan reads the files the data lives in.
    for node in 1..=3 {
        c.ok(node, &["kv", "list"]);
    }
    std::thread::sleep(Duration::from_millis(500));
    let log = c.log();
    for node in 1..=3 {
        let data = c.data_dir(node);
        for s in &secrets {
            assert_eq!(count_in_files(&data, s.as_bytes()), 0, "a credential in clear in node {node}'s data");
            assert!(!log.contains(s.as_str()), "a credential in the logs");
        }
    }
    assert!(count_in_files(&c.data_dir(1), b"auth/approle/role/web") > 0, "the scan reads the data files");
}

#[test]
fn every_token_returned_while_the_leader_is_killed_works_on_the_new_leader() {
    let c = DevCluster::start(3);
    let leader = c.leader(1);
    let followers: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
    let issued = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut killed_at = None;
    std::thread::scope(|s| {
        for (i, node) in followers.iter().cycle().take(4).enumerate() {
            let (c, issued) = (&c, issued.clone());
            s.spawn(move || {
                for _ in 0..25 {
                    if Instant::now() > deadline {
                        break;
                    }
                    let out = c.arca(
                        *node,
                        &[
                            "token",
                            "create",
                            "--ttl",
                            "1h",
                            "--format",
                            "json",
                            "--display-name",
                            &format!("burst-{i}"),
                        ],
                    );
                    if out.status.success() {
                        let v = json(&String::from_utf8(out.stdout).unwrap());
                        let token = v["token"].as_str().unwrap().to_string();
                        issued.lock().unwrap().push((Instant::now(), token));
                    }
                }
            });
        }
        // Kill the leader while the creations are in flight.
        // Once some tokens came back (bounded), so the kill lands among the creations.
        eventually(Duration::from_secs(10), || (issued.lock().unwrap().len() >= 5).then_some(()))
            .expect("no token issued before the kill");
        unsafe { libc::kill(c.pid(leader), libc::SIGKILL) };
        killed_at = Some(Instant::now());
    });
    let killed_at = killed_at.unwrap();
    let issued: Vec<String> = {
        let issued = issued.lock().unwrap();
        // The failover happened under the workload: creations succeeded on both sides of it.
        let after = issued.iter().filter(|(at, _)| *at > killed_at).count();
        assert!(after > 0, "no token was issued after the leader was killed");
        issued.iter().map(|(_, t)| t.clone()).collect()
    };
    assert!(issued.len() >= 20, "only {} tokens issued", issued.len());
    let new_leader = eventually(Duration::from_secs(10), || {
        let out = c.arca(followers[0], &["operator", "members", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?.iter().find(|m| m["leader"] == true).and_then(|m| m["id"].as_u64()).filter(|&id| id != leader)
    })
    .expect("a new leader");
    for t in &issued {
        let out = c.arca_with_token(new_leader, Some(t), &["token", "lookup"]);
        assert!(out.status.success(), "an issued token does not work on the new leader: {}", stderr(&out));
    }
    println!("{} tokens issued around the leader kill, all valid on node {new_leader}", issued.len());
}
