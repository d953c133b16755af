//! Attacks on the operator ceremonies and on a sealed or crashed node, through the real binary:
//! the Vault HTTP API and the gRPC API (through the CLI) of a dev cluster.
//!
//! * A second person cannot join, reset, cancel or re-parameterize a generate-root or rekey
//!   ceremony without its nonce, and whoever submits the last share gets only the root token
//!   encrypted under the starter's one-time pad. Sealing a node ends its ceremonies.
//! * Rekey's new shares and a generated root token go out encrypted to their holders' OpenPGP
//!   keys (made and opened with the real `gpg`), each readable by its holder only.
//! * Sealing stops a rotation in flight (no further step runs).
//! * A crash dumps no core, and the server's memory is locked.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, stderr, DevCluster, ARCA};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// One HTTP request with curl, as a client that holds no token: (status, JSON body).
fn http(c: &DevCluster, method: &str, path: &str, body: Option<Value>, token: Option<&str>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-X", method, "--cacert"]).arg(&c.ca).args(["-w", "\n%{http_code}"]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", &b.to_string()]);
    }
    if let Some(t) = token {
        cmd.args(["-H", &format!("X-Vault-Token: {t}")]);
    }
    let out = cmd.arg(format!("{}/v1/{path}", c.api(1))).stdin(Stdio::null()).output().expect("run curl");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null))
}

fn json_ok(c: &DevCluster, args: &[&str]) -> Value {
    serde_json::from_str(&c.ok(1, &[args, &["--format", "json"][..]].concat())).unwrap()
}

fn refused(c: &DevCluster, args: &[&str], says: &str) {
    let out = c.arca_with_token(1, None, args);
    assert_eq!(out.status.code(), Some(1), "{args:?} was not refused");
    assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
}

#[test]
fn a_second_person_cannot_hijack_a_ceremony_and_sealing_ends_it() {
    let c = DevCluster::start(1);
    let shares = &c.shares;

    // --- generate-root over the Vault HTTP API ---
    let otp = arca_core::ceremony::generate_otp().unwrap();
    let (code, started) = http(&c, "PUT", "sys/generate-root/attempt", Some(json!({ "otp": otp.as_str() })), None);
    assert_eq!(code, 200, "{started}");
    let nonce = started["nonce"].as_str().unwrap().to_string();
    assert!(!nonce.is_empty() && started["started"] == true, "{started}");

    // Mallory, who was not given the nonce: the status does not reveal it…
    let (_, status) = http(&c, "GET", "sys/generate-root/attempt", None, None);
    assert_eq!((status["started"].clone(), status["nonce"].clone()), (json!(true), json!("")), "{status}");
    // …she cannot restart the ceremony with her own pad…
    let mallory_otp = arca_core::ceremony::generate_otp().unwrap();
    let (code, body) = http(&c, "PUT", "sys/generate-root/attempt", Some(json!({ "otp": mallory_otp.as_str() })), None);
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("already in progress"), "{body}");
    // …nor submit a share, nor cancel, without the right nonce.
    let (code, _) =
        http(&c, "PUT", "sys/generate-root/update", Some(json!({ "key": shares[0], "nonce": "0".repeat(32) })), None);
    assert_eq!(code, 403);
    let (code, _) = http(&c, "PUT", "sys/generate-root/update", Some(json!({ "key": shares[0] })), None);
    assert_eq!(code, 400);
    let (code, _) = http(&c, "DELETE", "sys/generate-root/attempt", None, None);
    assert_eq!(code, 400);
    let (code, _) = http(&c, "DELETE", "sys/generate-root/attempt", Some(json!({ "nonce": "0".repeat(32) })), None);
    assert_eq!(code, 403);
    let (_, status) = http(&c, "GET", "sys/generate-root/attempt", None, None);
    assert_eq!((status["started"].clone(), status["progress"].clone()), (json!(true), json!(0)), "{status}");

    // The holders submit; the last one (say Mallory got the nonce from a holder) gets only the
    // token under Alice's pad.
    let mut last = Value::Null;
    for share in &shares[..3] {
        let (code, body) =
            http(&c, "PUT", "sys/generate-root/update", Some(json!({ "key": share, "nonce": nonce })), None);
        assert_eq!(code, 200, "{body}");
        last = body;
    }
    assert_eq!(last["complete"], true, "{last}");
    let encoded = last["encoded_token"].as_str().unwrap();
    assert!(!encoded.is_empty() && !last.to_string().contains("arca_"), "{last}");
    let (code, _) = http(&c, "GET", "secret/data/anything", None, Some(encoded));
    assert_eq!(code, 403, "the encoded token is not a token");
    let root = arca_core::ceremony::decode_token(encoded, &otp).unwrap();
    assert!(arca_core::ceremony::decode_token(encoded, &mallory_otp).is_err());
    let out = c.arca_with_token(1, Some(&root), &["kv", "put", "app/by-new-root", "v=1"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // --- rekey over gRPC (the CLI) ---
    let started = json_ok(&c, &["operator", "rekey", "--init", "--key-shares", "4", "--key-threshold", "2"]);
    let nonce = started["nonce"].as_str().unwrap().to_string();
    refused(&c, &["operator", "rekey", "--init", "--key-shares", "2", "--key-threshold", "2"], "already in progress");
    refused(&c, &["operator", "rekey", "--nonce", &"0".repeat(32), &shares[0]], "nonce does not match");
    refused(&c, &["operator", "rekey", "--cancel", "--nonce", &"0".repeat(32)], "nonce does not match");
    let status = json_ok(&c, &["operator", "rekey", "--status"]);
    assert_eq!(
        (status["progress"].clone(), status["new_shares"].clone(), status["new_threshold"].clone()),
        (json!(0), json!(4), json!(2)),
        "{status}"
    );
    assert!(status.get("nonce").is_none(), "{status}");
    let one = json_ok(&c, &["operator", "rekey", "--nonce", &nonce, &shares[1]]);
    assert_eq!(one["progress"], 1, "{one}");

    // Sealing the node ends both kinds of ceremony.
    let (code, _) = http(&c, "PUT", "sys/generate-root/attempt", Some(json!({ "otp": otp.as_str() })), None);
    assert_eq!(code, 200);
    c.ok(1, &["operator", "seal"]);
    for share in &shares[..3] {
        c.ok(1, &["operator", "unseal", share]);
    }
    let status = json_ok(&c, &["operator", "rekey", "--status"]);
    assert_eq!((status["started"].clone(), status["progress"].clone()), (json!(false), json!(0)), "{status}");
    refused(&c, &["operator", "rekey", "--nonce", &nonce, &shares[2]], "no rekey ceremony is in progress");
    let (_, status) = http(&c, "GET", "sys/generate-root/attempt", None, None);
    assert_eq!(status["started"], false, "{status}");

    // --- generate-root end to end with the CLI: pad made, kept and used by the starter ---
    let started = json_ok(&c, &["operator", "generate-root", "--init"]);
    let (nonce, pad) = (started["nonce"].as_str().unwrap(), started["otp"].as_str().unwrap());
    let mut encoded = String::new();
    for share in &shares[..3] {
        let step = json_ok(&c, &["operator", "generate-root", "--nonce", nonce, share]);
        assert!(step.get("otp").is_none(), "{step}");
        encoded = step["encoded_token"].as_str().unwrap_or_default().to_string();
    }
    let decoded = json_ok(&c, &["operator", "generate-root", "--decode", &encoded, "--otp", pad]);
    let token = decoded["root_token"].as_str().unwrap();
    let out = c.arca_with_token(1, Some(token), &["kv", "get", "app/by-new-root", "--field", "v"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn rotation_status(c: &DevCluster, node: u64, path: &str) -> Option<Value> {
    let out = c.arca(node, &["rotation", "status", path, "--format", "json"]);
    serde_json::from_slice::<Vec<Value>>(&out.stdout).ok()?.into_iter().next()
}

#[test]
fn sealing_the_leader_stops_a_rotation_in_flight() {
    let c = DevCluster::start(3);
    // `test` takes 4 s and then leaves a mark on the "target system": sealing the leader while
    // it runs must stop it (and every later step).
    let target = c.dir.path().join("target");
    std::fs::create_dir_all(&target).unwrap();
    let script = format!(
        "#!/bin/sh\ninput=$(cat)\ncase \"$input\" in\n  *'\"step\":\"set\"'*) echo set >> {t}/sets ;;\n  *'\"step\":\"test\"'*) sleep 4; echo tested >> {t}/tested ;;\nesac\necho '{{}}'\n",
        t = target.display()
    );
    let file = c.dir.path().join("rotators/slow.sh");
    std::fs::write(&file, &script).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sha = hex::encode(Sha256::digest(script.as_bytes()));
    c.ok(1, &["rotation", "function", "register", "slow.sh", "--sha256", &sha]);
    c.ok(1, &["kv", "put", "app/db", "password=original"]);
    let args = ["--rotator", "command", "--param", "function=slow.sh", "--param", "timeout=30s", "--every", "1h"];
    c.ok(1, &[&["rotation", "set", "app/db"][..], &args[..]].concat());
    c.ok(1, &["rotation", "now", "app/db"]);
    eventually(Duration::from_secs(20), || target.join("sets").exists().then_some(()))
        .unwrap_or_else(|| panic!("the rotation never ran 'set': {:?}", rotation_status(&c, 1, "app/db")));

    let leader = c.leader(1);
    c.ok(leader, &["operator", "seal"]);
    let other = if leader == 1 { 2 } else { 1 };
    std::thread::sleep(Duration::from_secs(7));
    assert!(!target.join("tested").exists(), "the 'test' step ran on after the leader sealed");
    let s = rotation_status(&c, other, "app/db").unwrap();
    assert_eq!(s["rotations"], 0, "the rotation advanced after the seal: {s}");

    // Unsealed again, the leader resumes and finishes it.
    for share in &c.shares[..3] {
        c.ok(leader, &["operator", "unseal", share]);
    }
    eventually(Duration::from_secs(30), || (rotation_status(&c, other, "app/db")?["rotations"] == 1).then_some(()))
        .unwrap_or_else(|| panic!("the rotation did not resume: {:?}", rotation_status(&c, other, "app/db")));
}

fn vm_locked_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmLck:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn cores_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("core"))
        .collect()
}

#[test]
fn a_crashing_server_dumps_no_core_and_keeps_its_memory_out_of_swap() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::TempDir::new().unwrap();
    // `free_base` checks both ports the dev server takes (API and API + 1); an ephemeral port's
    // neighbour may belong to another test's connection.
    let port = common::free_base(1);
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut cmd = Command::new(ARCA);
    cmd.args(["server", "--dev"])
        .env("ARCA_ADDR", format!("https://127.0.0.1:{port}"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // The attacker's setting: core dumps allowed, written to the working directory (this
    // machine's core_pattern is "core").
    unsafe {
        cmd.pre_exec(|| {
            let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
            libc::setrlimit(libc::RLIMIT_CORE, &unlimited);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let cleanup = std::env::temp_dir().join(format!("arca-dev-{pid}"));
    let log_text = || std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    eventually(Duration::from_secs(60), || log_text().contains("Arca dev server").then_some(()))
        .unwrap_or_else(|| panic!("the dev server did not come up: {}", log_text()));
    // Unsealed: its keys are in memory now. Running as root here, the lock is permitted.
    if unsafe { libc::geteuid() } == 0 {
        assert!(vm_locked_kb(pid).unwrap_or(0) > 0, "no memory locked: {}", log_text());
    }
    // SIGABRT: its default action dumps core (Rust's runtime keeps SIGSEGV for its stack
    // overflow check, so a SIGSEGV sent from outside is not a crash).
    unsafe { libc::kill(pid as i32, libc::SIGABRT) };
    let status = child.wait().unwrap();
    assert!(!status.success());
    std::thread::sleep(Duration::from_millis(500));
    let _ = std::fs::remove_dir_all(cleanup);
    let cores = cores_in(dir.path());
    for core in &cores {
        let _ = std::fs::remove_file(dir.path().join(core));
    }
    assert!(cores.is_empty(), "the crash dumped core: {cores:?}");
}

/// A share holder's GnuPG home with one key pair (no passphrase): (home, fingerprint).
fn gpg_holder(root: &Path, name: &str, algo: &str) -> (std::path::PathBuf, String) {
    let home = root.join(format!("gnupg-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg").arg("--homedir").arg(&home).args(["--batch", "--quiet"]).args(args).output();
        let out = out.expect("run gpg (Debian package gnupg)");
        assert!(out.status.success(), "gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let uid = format!("{name} <{name}@arca.test>");
    gpg(&["--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", &uid, algo, "default", "never"]);
    let listing = String::from_utf8(gpg(&["--with-colons", "--fingerprint", &uid])).unwrap();
    let fpr = listing.lines().find(|l| l.starts_with("fpr:")).unwrap().split(':').nth(9).unwrap().to_lowercase();
    (home, fpr)
}

fn gpg_export(home: &Path, armor: bool) -> Vec<u8> {
    let mut cmd = Command::new("gpg");
    cmd.arg("--homedir").arg(home).args(["--batch", "--export"]);
    if armor {
        cmd.arg("--armor");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success() && !out.stdout.is_empty());
    out.stdout
}

/// `base64 -d | gpg --decrypt` with `home`'s key: the plaintext, or None if it cannot.
fn gpg_decrypt(home: &Path, base64_message: &str) -> Option<String> {
    use base64::Engine as _;
    use std::io::Write as _;
    let message = base64::engine::general_purpose::STANDARD.decode(base64_message).expect("base64 message");
    let mut child = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--quiet", "--decrypt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&message).unwrap();
    let out = child.wait_with_output().unwrap();
    out.status.success().then(|| String::from_utf8(out.stdout).unwrap())
}

#[test]
fn rekey_shares_and_a_generated_root_token_go_out_encrypted_to_their_holders_pgp_keys() {
    use base64::Engine as _;
    let c = DevCluster::start(1);
    let dir = c.dir.path();
    // Three holders: RSA keys and a Curve25519 one, handed over as gpg exports in each form
    // the CLI takes (binary, armored, base64 text).
    let holders = [
        gpg_holder(dir, "alice", "rsa2048"),
        gpg_holder(dir, "bob", "future-default"),
        gpg_holder(dir, "carol", "rsa2048"),
    ];
    let files: Vec<String> = holders
        .iter()
        .enumerate()
        .map(|(i, (home, _))| {
            let file = dir.join(format!("holder{i}.key"));
            let bytes = match i {
                0 => gpg_export(home, false),
                1 => gpg_export(home, true),
                _ => base64::engine::general_purpose::STANDARD.encode(gpg_export(home, false)).into_bytes(),
            };
            std::fs::write(&file, bytes).unwrap();
            file.to_str().unwrap().to_string()
        })
        .collect();
    let junk = dir.join("junk.key");
    std::fs::write(&junk, "bm90IGEga2V5").unwrap();

    // Keys that cannot be used are refused at the start, naming which and why.
    let init = |keys: &str| {
        ["operator", "rekey", "--init", "--key-shares", "3", "--key-threshold", "2", "--pgp-keys", keys]
            .map(String::from)
    };
    let with_junk = format!("{},{},{}", files[0], junk.display(), files[2]);
    refused(
        &c,
        &init(&with_junk).iter().map(String::as_str).collect::<Vec<_>>(),
        "pgp_keys[1] is not a usable PGP public key",
    );
    let two = format!("{},{}", files[0], files[1]);
    refused(&c, &init(&two).iter().map(String::as_str).collect::<Vec<_>>(), "names 2 keys for 3 new shares");

    let all = files.join(",");
    let started = json_ok(&c, &init(&all).iter().map(String::as_str).collect::<Vec<_>>());
    let fingerprints: Vec<&str> = holders.iter().map(|(_, f)| f.as_str()).collect();
    assert_eq!(started["pgp_fingerprints"], json!(fingerprints), "{started}");
    let nonce = started["nonce"].as_str().unwrap().to_string();
    let mut done = Value::Null;
    for share in &c.shares[..3] {
        done = json_ok(&c, &["operator", "rekey", "--nonce", &nonce, share]);
    }
    let sealed_shares: Vec<&str> = done["shares"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(sealed_shares.len(), 3, "{done}");
    // Each share opens with its holder's key only.
    let mut new_shares = vec![];
    for (i, (home, _)) in holders.iter().enumerate() {
        let share =
            gpg_decrypt(home, sealed_shares[i]).unwrap_or_else(|| panic!("holder {i} cannot decrypt share {i}"));
        assert!(!sealed_shares.iter().any(|s| s.contains(share.trim())));
        let other = &holders[(i + 1) % 3].0;
        assert!(gpg_decrypt(other, sealed_shares[i]).is_none(), "share {i} opens with another holder's key");
        new_shares.push(share.trim().to_string());
    }
    // The decrypted shares are the new share set: two of them unseal the node.
    c.ok(1, &["kv", "put", "app/after-rekey", "v=2"]);
    c.ok(1, &["operator", "seal"]);
    for share in &new_shares[1..] {
        c.ok(1, &["operator", "unseal", share]);
    }

    // Generate-root over the Vault HTTP API with a PGP key: the token opens only with it.
    let bob_key = base64::engine::general_purpose::STANDARD.encode(gpg_export(&holders[1].0, false));
    let (code, started) = http(&c, "PUT", "sys/generate-root/attempt", Some(json!({ "pgp_key": bob_key })), None);
    assert_eq!(code, 200, "{started}");
    assert_eq!(started["pgp_fingerprint"], holders[1].1.as_str(), "{started}");
    let nonce = started["nonce"].as_str().unwrap().to_string();
    let mut encoded = String::new();
    for share in &new_shares[..2] {
        let (code, step) =
            http(&c, "PUT", "sys/generate-root/update", Some(json!({ "key": share, "nonce": nonce })), None);
        assert_eq!(code, 200, "{step}");
        encoded = step["encoded_root_token"].as_str().unwrap_or_default().to_string();
    }
    assert!(!encoded.is_empty());
    assert!(gpg_decrypt(&holders[0].0, &encoded).is_none(), "the root token opens with another key");
    let token = gpg_decrypt(&holders[1].0, &encoded).expect("bob decrypts the root token");
    let out = c.arca_with_token(1, Some(token.trim()), &["kv", "get", "app/after-rekey", "--field", "v"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
