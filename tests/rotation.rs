//! Rotation through the real binary: a command rotator function registered by hash in the
//! dev cluster's `DIR/rotators`, `rotation now/status/disable`, `kv get --stage previous`, a
//! schedule that rotates on its own, and a function named by a path refused.

mod common;

use std::time::Duration;

use common::{eventually, stderr, DevCluster};
use sha2::{Digest, Sha256};

fn status(c: &DevCluster, path: &str) -> serde_json::Value {
    let text = c.ok(1, &["rotation", "status", path, "--format", "json"]);
    serde_json::from_str::<Vec<serde_json::Value>>(&text).unwrap().remove(0)
}

#[test]
fn operators_rotate_with_their_own_function_and_on_a_schedule() {
    let c = DevCluster::start(3);
    let script = "#!/bin/sh\ninput=$(cat)\ncase \"$input\" in *'\"step\":\"create\"'*) echo '{\"value\":{\"password\":\"from-function\"}}';; *) echo '{}';; esac\n";
    let file = c.dir.path().join("rotators/rotate.sh");
    std::fs::write(&file, script).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sha = hex::encode(Sha256::digest(script.as_bytes()));
    c.ok(2, &["rotation", "function", "register", "rotate.sh", "--sha256", &sha]);
    assert!(c.ok(1, &["rotation", "function", "list"]).contains(&sha));

    c.ok(1, &["kv", "put", "app/cmd", "password=original"]);
    c.ok(1, &["rotation", "set", "app/cmd", "--rotator", "command", "--param", "function=rotate.sh", "--every", "1h"]);
    c.ok(3, &["rotation", "now", "app/cmd"]);
    eventually(Duration::from_secs(15), || (status(&c, "app/cmd")["rotations"] == 1).then_some(()))
        .unwrap_or_else(|| panic!("no rotation: {}", status(&c, "app/cmd")));
    assert_eq!(c.ok(2, &["kv", "get", "app/cmd", "--field", "password"]).trim(), "from-function");
    assert_eq!(c.ok(3, &["kv", "get", "--stage", "previous", "app/cmd", "--field", "password"]).trim(), "original");

    // A function named by a path is refused, naming why.
    let out =
        c.arca(1, &["rotation", "set", "app/x", "--rotator", "command", "--param", "function=../x", "--every", "1h"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a plain file name"), "{}", stderr(&out));

    // A 2 s schedule rotates on its own, then stops once disabled.
    c.ok(1, &["kv", "put", "app/key", "user=svc", "password=initial"]);
    c.ok(1, &["rotation", "set", "app/key", "--rotator", "random", "--every", "2s", "--param", "length=20"]);
    eventually(Duration::from_secs(20), || (status(&c, "app/key")["rotations"].as_u64() >= Some(2)).then_some(()))
        .unwrap_or_else(|| panic!("the schedule did not run: {}", status(&c, "app/key")));
    c.ok(2, &["rotation", "disable", "app/key"]);
    let s = status(&c, "app/key");
    assert_eq!(s["enabled"], false);
    let password = c.ok(3, &["kv", "get", "app/key", "--field", "password"]);
    assert_eq!(password.trim().len(), 20);
    assert_eq!(c.ok(3, &["kv", "get", "app/key", "--field", "user"]).trim(), "svc");
    let table = c.ok(1, &["rotation", "status"]);
    assert!(table.contains("app/cmd") && table.contains("app/key"), "{table}");
}

#[test]
fn a_new_leader_finishes_a_rotation_whose_leader_was_killed_between_set_and_finish() {
    let mut c = DevCluster::start(3);
    // The "target system" is a directory: `set` appends the step's input to a log there and
    // `test` takes 3 s, which is when the leader is killed.
    let target = c.dir.path().join("target");
    std::fs::create_dir_all(&target).unwrap();
    let script = format!(
        "#!/bin/sh\ninput=$(cat)\ncase \"$input\" in\n  *'\"step\":\"set\"'*) echo \"$input\" >> {t}/sets ;;\n  *'\"step\":\"test\"'*) sleep 3 ;;\nesac\necho '{{}}'\n",
        t = target.display()
    );
    let file = c.dir.path().join("rotators/slow-test.sh");
    std::fs::write(&file, &script).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sha = hex::encode(Sha256::digest(script.as_bytes()));
    c.ok(1, &["rotation", "function", "register", "slow-test.sh", "--sha256", &sha]);
    c.ok(1, &["kv", "put", "app/db", "password=original"]);
    let args = ["--rotator", "command", "--param", "function=slow-test.sh", "--param", "timeout=20s", "--every", "1h"];
    c.ok(1, &[&["rotation", "set", "app/db"][..], &args[..]].concat());
    c.ok(1, &["rotation", "now", "app/db"]);
    eventually(Duration::from_secs(15), || (status(&c, "app/db")["step"] == "set").then_some(()))
        .unwrap_or_else(|| panic!("the rotation did not reach 'set': {}", status(&c, "app/db")));

    let leader = c.leader(1);
    c.kill9(leader);
    let survivor = if leader == 1 { 2 } else { 1 };
    let finished = eventually(Duration::from_secs(30), || {
        let out = c.arca(survivor, &["rotation", "status", "app/db", "--format", "json"]);
        let s: serde_json::Value = serde_json::from_slice::<Vec<_>>(&out.stdout).ok()?.remove(0);
        (s["rotations"] == 1).then_some(s)
    })
    .expect("the new leader finishes the rotation");
    assert_eq!(finished["step"], "idle");

    // Exactly one new version, and the target holds what `current` says.
    let meta: serde_json::Value =
        serde_json::from_str(&c.ok(survivor, &["kv", "metadata", "get", "app/db", "--format", "json"])).unwrap();
    assert_eq!(meta["current_version"], 2, "{meta}");
    assert_eq!(meta["versions"].as_array().unwrap().len(), 2, "{meta}");
    let current = c.ok(survivor, &["kv", "get", "app/db", "--field", "password"]).trim().to_string();
    let sets = std::fs::read_to_string(target.join("sets")).unwrap();
    assert!(sets.lines().count() >= 1, "set never ran");
    for line in sets.lines() {
        let input: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(input["pending"]["password"], current.as_str(), "every set applied the one pending value");
        assert_eq!(input["current"]["password"], "original");
    }
}

#[test]
fn operator_rotate_rewraps_and_rekey_replaces_the_shares() {
    let c = DevCluster::start(3);
    for i in 0..20 {
        c.ok(1 + i % 3, &["kv", "put", &format!("app/k{i}"), &format!("v={i}")]);
    }
    let rotated: serde_json::Value =
        serde_json::from_str(&c.ok(2, &["operator", "rotate", "--format", "json"])).unwrap();
    assert_eq!(rotated["term"], 2);
    let status = eventually(Duration::from_secs(20), || {
        let s: serde_json::Value =
            serde_json::from_str(&c.ok(3, &["operator", "key-status", "--format", "json"])).unwrap();
        (s["rewrap_done"] == true && s["records_on_old_terms"] == 0).then_some(s)
    })
    .expect("the rewrap finishes");
    assert_eq!(status["active_term"], 2);
    assert_eq!(c.ok(1, &["kv", "get", "app/k5", "--field", "v"]).trim(), "5");

    // Rekey with three current shares (the dev cluster's threshold) into 4 shares, threshold 2,
    // on node 1: the new share set is fixed at --init, each share comes with the nonce.
    let init: serde_json::Value = serde_json::from_str(
        &c.ok(1, &["operator", "rekey", "--init", "--key-shares", "4", "--key-threshold", "2", "--format", "json"]),
    )
    .unwrap();
    let nonce = init["nonce"].as_str().unwrap().to_string();
    let mut new = Vec::new();
    for share in &c.shares[..3] {
        let out: serde_json::Value =
            serde_json::from_str(&c.ok(1, &["operator", "rekey", "--nonce", &nonce, share, "--format", "json"]))
                .unwrap();
        if let Some(shares) = out["shares"].as_array() {
            new = shares.iter().map(|s| s.as_str().unwrap().to_string()).collect();
        }
    }
    assert_eq!(new.len(), 4);
    // Node 3 held the old root key: it sealed itself when the rekey applied.
    eventually(Duration::from_secs(10), || {
        let s: serde_json::Value = serde_json::from_str(&c.ok(3, &["status", "--format", "json"])).ok()?;
        (s["sealed"] == true).then_some(())
    })
    .expect("node 3 seals itself after a rekey elsewhere");
    let refused = c.arca(3, &["operator", "unseal", &c.shares[0]]);
    assert_eq!(refused.status.code(), Some(1), "an old share still unseals");
    for share in &new[..2] {
        c.ok(3, &["operator", "unseal", share]);
    }
    assert_eq!(c.ok(3, &["kv", "get", "app/k7", "--field", "v"]).trim(), "7");
}

fn token_with(c: &DevCluster, name: &str, hcl: &str) -> String {
    let file = c.dir.path().join(format!("{name}.hcl"));
    std::fs::write(&file, hcl).unwrap();
    c.ok(1, &["policy", "write", name, file.to_str().unwrap()]);
    let created = c.ok(1, &["token", "create", "--policy", name, "--ttl", "1h", "--format", "json"]);
    serde_json::from_str::<serde_json::Value>(&created).unwrap()["token"].as_str().unwrap().to_string()
}

/// Issue 15, item 1, as an attacker tried it: a token that may only manage rotations used one
/// to overwrite a secret it cannot read, and to make the vault read a production admin
/// credential and connect to a host of its choosing. Each is refused, naming the missing
/// grant; a rotation whose configuring token later loses its grant stops with a clear status.
#[test]
fn rotation_is_no_way_around_path_policies() {
    let c = DevCluster::start(3);
    c.ok(1, &["kv", "put", "app/x", "password=original"]);
    c.ok(1, &["kv", "put", "prod/admin", "username=postgres", "password=prod-admin-secret"]);
    let rotation_only = token_with(
        &c,
        "rotation-only",
        "path \"sys/rotation/*\" { capabilities = [\"create\", \"update\", \"read\", \"list\"] }\n",
    );
    let refused = |token: &str, args: &[&str], needle: &str| {
        let out = c.arca_with_token(1, Some(token), args);
        assert_eq!(out.status.code(), Some(1), "{args:?} was accepted");
        let err = stderr(&out);
        assert!(err.contains("permission denied") && err.contains(needle), "{args:?}: {err}");
    };
    refused(
        &rotation_only,
        &["rotation", "set", "app/x", "--rotator", "random", "--every", "24h"],
        "'read' on secret/data/app/x",
    );
    refused(&rotation_only, &["rotation", "now", "app/x"], "secret/data/app/x");

    // May rotate app/*, but not read prod/admin: the postgres rotator cannot borrow it.
    let app_rotator = token_with(
        &c,
        "app-rotator",
        "path \"sys/rotation/*\" { capabilities = [\"create\", \"update\", \"read\", \"list\"] }\n\
         path \"secret/data/app/*\" { capabilities = [\"read\", \"update\", \"create\"] }\n",
    );
    let pg = ["rotation", "set", "app/db", "--rotator", "postgres", "--every", "24h", "--param", "username=app"];
    refused(&app_rotator, &[&pg[..], &["--param", "admin=prod/admin"]].concat(), "'read' on secret/data/prod/admin");
    // A host outside the node's rotation.postgres_allow is refused even with every grant.
    c.ok(1, &["kv", "put", "app/admin", "username=a", "password=b"]);
    let out = c.arca_with_token(
        1,
        Some(&app_rotator),
        &[&pg[..], &["--param", "admin=app/admin", "--param", "host=10.9.8.7"]].concat(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("postgres_allow"), "{}", stderr(&out));
    assert_eq!(c.ok(2, &["kv", "get", "app/x", "--field", "password"]).trim(), "original");
    assert!(c.arca(1, &["rotation", "status", "app/x"]).status.code() == Some(1), "no rotation was stored");

    // Allowed: it holds everything the rotation touches. Then its grant goes: runs fail with a
    // status that says so, and the secret is left alone.
    c.ok(1, &["kv", "put", "app/key", "password=before"]);
    let ok = c.arca_with_token(
        1,
        Some(&app_rotator),
        &["rotation", "set", "app/key", "--rotator", "random", "--every", "1h"],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let narrower = c.dir.path().join("narrower.hcl");
    std::fs::write(
        &narrower,
        "path \"sys/rotation/*\" { capabilities = [\"create\", \"update\", \"read\", \"list\"] }\n",
    )
    .unwrap();
    c.ok(1, &["policy", "write", "app-rotator", narrower.to_str().unwrap()]);
    c.ok(1, &["rotation", "now", "app/key"]);
    let s = eventually(Duration::from_secs(20), || {
        let s = status(&c, "app/key");
        s["last_error"].as_str().is_some_and(|e| e.contains("no longer has")).then_some(s)
    })
    .unwrap_or_else(|| panic!("the run did not fail on the lost grant: {}", status(&c, "app/key")));
    assert!(s["last_error"].as_str().unwrap().contains("secret/data/app/key"), "{s}");
    assert_eq!(s["rotations"], 0);
    assert_eq!(c.ok(2, &["kv", "get", "app/key", "--field", "password"]).trim(), "before");
}

/// Issue 15, item 1: a rotator's own words (a function's stderr) never reach the rotation's
/// status or the audit trail; the exit status does.
#[test]
fn a_failing_function_leaks_nothing_it_printed() {
    let c = DevCluster::start(1);
    let script = "#!/bin/sh\ncat >/dev/null\necho 'LEAKED-BY-STDERR' >&2\necho 'LEAKED-BY-STDOUT'\nexit 3\n";
    let file = c.dir.path().join("rotators/leaky.sh");
    std::fs::write(&file, script).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sha = hex::encode(Sha256::digest(script.as_bytes()));
    c.ok(1, &["rotation", "function", "register", "leaky.sh", "--sha256", &sha]);
    c.ok(1, &["kv", "put", "app/leaky", "password=x"]);
    let args = ["--rotator", "command", "--param", "function=leaky.sh", "--every", "1h", "--max-attempts", "1"];
    c.ok(1, &[&["rotation", "set", "app/leaky"][..], &args[..]].concat());
    c.ok(1, &["rotation", "now", "app/leaky"]);
    let s = eventually(Duration::from_secs(20), || {
        let s = status(&c, "app/leaky");
        (s["failed"] == true).then_some(s)
    })
    .unwrap_or_else(|| panic!("the rotation did not fail: {}", status(&c, "app/leaky")));
    let error = s["last_error"].as_str().unwrap();
    assert!(error.contains("exit status: 3"), "{error}");
    let audit = c.ok(1, &["audit", "list", "--path", "sys/rotation/", "--limit", "1000", "--format", "json"]);
    assert!(audit.contains("RotationStep.create"), "{audit}");
    for text in [error, audit.as_str(), c.log().as_str()] {
        assert!(!text.contains("LEAKED"), "a rotator's output leaked: {text}");
    }
}

const PG_ADMIN: (&str, &str) = ("arca_test_admin", "arca-test-admin");

/// Runs SQL as the test admin, or logs in as `user`: `Err` carries the SQLSTATE.
fn pg(user: &str, password: &str, sql: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(5432).dbname("postgres").user(user).password(password);
        config.connect_timeout(Duration::from_secs(5));
        let (client, conn) = config.connect(tokio_postgres::NoTls).await.map_err(|e| sqlstate(&e))?;
        tokio::spawn(conn);
        client.batch_execute(sql).await.map_err(|e| sqlstate(&e))
    })
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map_or_else(|| e.to_string(), |c| c.code().to_string())
}

/// Issue 16, scenario 9: the PostgreSQL single-user rotation with its leader killed (-9)
/// between `set` (the database has the new password) and `finish` (the vault calls it
/// current). The role is held at zero connections so that `test` cannot pass until the test
/// lets it: the kill provably falls between the two. A new leader completes the rotation once,
/// and the database's password is the vault's `current`.
#[test]
fn postgres_rotation_completes_once_when_its_leader_is_killed_between_set_and_finish() {
    let mut c = DevCluster::start(3);
    let admin = |sql: &str| pg(PG_ADMIN.0, PG_ADMIN.1, sql).expect("PostgreSQL as arca_test_admin");
    admin("DROP ROLE IF EXISTS arca_killed_leader");
    admin("CREATE ROLE arca_killed_leader LOGIN PASSWORD 'first-password' CONNECTION LIMIT 0");
    c.ok(1, &["kv", "put", "db/admin", &format!("username={}", PG_ADMIN.0), &format!("password={}", PG_ADMIN.1)]);
    c.ok(1, &["kv", "put", "db/app", "username=arca_killed_leader", "password=first-password"]);
    let params = ["--param", "admin=db/admin", "--param", "strategy=single", "--param", "username=arca_killed_leader"];
    let set = ["rotation", "set", "db/app", "--rotator", "postgres", "--every", "1h", "--max-attempts", "30"];
    c.ok(1, &[&set[..], &params[..]].concat());
    c.ok(1, &["rotation", "now", "db/app"]);

    // `set` ran: the old password is refused (28P01); the pending one is right, and only the
    // connection limit (53300) keeps `test` from passing.
    let pending = eventually(Duration::from_secs(20), || {
        let s = status(&c, "db/app");
        if s["step"] != "set" {
            return None;
        }
        let pending = c.ok(1, &["kv", "get", "db/app", "--stage", "pending", "--field", "password"]).trim().to_string();
        let old = pg("arca_killed_leader", "first-password", "SELECT 1");
        let new = pg("arca_killed_leader", &pending, "SELECT 1");
        (old == Err("28P01".into()) && new == Err("53300".into())).then_some(pending)
    })
    .unwrap_or_else(|| panic!("the rotation did not stop between set and finish: {}", status(&c, "db/app")));
    assert_eq!(status(&c, "db/app")["rotations"], 0, "finished before the kill");

    let leader = c.leader(1);
    c.kill9(leader);
    admin("ALTER ROLE arca_killed_leader CONNECTION LIMIT -1");
    let survivor = if leader == 1 { 2 } else { 1 };
    let finished = eventually(Duration::from_secs(60), || {
        let out = c.arca(survivor, &["rotation", "status", "db/app", "--format", "json"]);
        let s: serde_json::Value = serde_json::from_slice::<Vec<_>>(&out.stdout).ok()?.remove(0);
        (s["rotations"] == 1 && s["step"] == "idle").then_some(s)
    })
    .expect("the new leader finishes the rotation");
    assert_eq!(finished["failed"], false, "{finished}");

    // Once: one new version, holding the password `set` gave the database.
    let meta: serde_json::Value =
        serde_json::from_str(&c.ok(survivor, &["kv", "metadata", "get", "db/app", "--format", "json"])).unwrap();
    assert_eq!(meta["current_version"], 2, "{meta}");
    let current = c.ok(survivor, &["kv", "get", "db/app", "--field", "password"]).trim().to_string();
    assert_eq!(current, pending, "current is not the password set before the kill");
    pg("arca_killed_leader", &current, "SELECT 1").expect("the database takes the vault's current password");
    assert_eq!(pg("arca_killed_leader", "first-password", "SELECT 1"), Err("28P01".into()));
    c.restart_unsealed(leader);
}
