//! The audit trail on a real 3-node cluster (in process): one record per request on every node,
//! in the same order with the same chain head; nothing sensitive in clear; fail closed without
//! quorum, and back without a restart once quorum returns.

mod common;

use std::time::{Duration, Instant};

use arca_core::auth::{AppRole, Credentials, RoleConfig, TokenParams};
use arca_core::{AuditFilter, AuditRecord, Error, Operation, Reply, TokenCreate, TokenRef};
use arca_raft::audit_log;
use common::{call, data, Vault};
use zeroize::Zeroizing;

const SECRET: &str = "s3cret-value-4f1c9a";

async fn records(v: &Vault, core: usize) -> Vec<AuditRecord> {
    let list = Operation::AuditList(AuditFilter { limit: 10_000, ..Default::default() });
    match call(&v.cores[core], Some(&v.root), list).await.unwrap() {
        Reply::AuditRecords(r) => r,
        other => panic!("{other:?}"),
    }
}

/// A KV write is one replicated commit: its record travels in the write's own Raft entry, and
/// its outcome rides the next entry made (or goes alone after a short wait). A write request
/// that ends without writing still leaves one record, with its outcome in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_is_one_entry_with_its_record_and_one_that_fails_still_leaves_its_record() {
    let v = Vault::start().await;
    let leader = v.leader_core().await;
    let entries = || leader.node().metrics().last_log_index.unwrap_or(0);
    let head = || audit_log::head(leader.node().reader()).seq;
    let put = |cas| Operation::KvPut { path: "app/one".into(), data: data(&[("v", SECRET)]), cas };
    // On a follower and on the leader, a lone writer: each write's outcome rides the next
    // write's entry, and its barrier (a read index) makes none.
    let follower = v.cores.iter().find(|c| c.node().id() != leader.node().id()).unwrap().clone();
    for core in [&follower, &leader] {
        // Let outcomes held elsewhere go out first.
        tokio::time::sleep(Duration::from_millis(400)).await;
        for i in 0..3 {
            let (before, seq) = (entries(), head());
            call(core, Some(&v.root), put(None)).await.unwrap();
            let node = core.node().id();
            assert_eq!(entries() - before, 1, "node {node}, write {i}: one entry for the record and the write");
            assert_eq!(head() - seq, 1, "node {node}, write {i}: its record is committed with it");
        }
    }
    // The last outcome goes on its own after its short wait.
    let deadline = Instant::now() + Duration::from_secs(5);
    let last_put = |r: Vec<AuditRecord>| r.into_iter().rev().find(|r| r.operation == "KvPut").unwrap();
    while last_put(records(&v, 0).await).outcome != "ok" {
        assert!(Instant::now() < deadline, "the last write's outcome never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Refused by its check-and-set before anything was written: one entry, the record with
    // its outcome folded in.
    let (before, seq) = (entries(), head());
    assert!(matches!(call(&v.cores[1], Some(&v.root), put(Some(1))).await, Err(Error::CasMismatch { .. })));
    assert_eq!((entries() - before, head() - seq), (1, 1));
    let last = last_put(records(&v, 2).await);
    assert!(last.outcome != "ok" && !last.outcome.is_empty() && !last.error.is_empty(), "{last:?}");
    v.cluster.shutdown().await;
}

/// A read on the leader is decided on its own state and answered only once its record, with
/// its outcome in it, is committed in the leader's term: one entry, and every node has the
/// whole record when the answer arrives. A denied read likewise. On a follower the record is
/// committed first (its commit is the read barrier) and the outcome follows in a later entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_on_the_leader_commits_its_record_with_its_outcome_before_the_answer() {
    let v = Vault::start().await;
    let leader = v.leader_core().await;
    let at = v.cores.iter().position(|c| c.node().id() != leader.node().id()).unwrap();
    let follower = v.cores[at].clone();
    let entries = || leader.node().metrics().last_log_index.unwrap_or(0);
    let head = || audit_log::head(leader.node().reader()).seq;
    let put = Operation::KvPut { path: "app/read".into(), data: data(&[("v", SECRET)]), cas: None };
    call(&leader, Some(&v.root), put).await.unwrap();
    // A token whose policies grant nothing under `secret/`.
    let Reply::TokenCreated { token: outsider, .. } =
        v.root(0, Operation::TokenCreate(TokenCreate { policies: vec!["default".into()], ..Default::default() })).await
    else {
        panic!()
    };
    let get = || Operation::KvGet { path: "app/read".into(), version: None };
    let last_get = |r: Vec<AuditRecord>| r.into_iter().rev().find(|r| r.operation == "KvGet").unwrap();
    // Let outcomes held anywhere go out first.
    tokio::time::sleep(Duration::from_millis(400)).await;

    for (token, decision, outcome) in [(&v.root, "allowed", "ok"), (&outsider, "denied", "permission_denied")] {
        let (before, seq) = (entries(), head());
        let answer = call(&leader, Some(token), get()).await;
        assert_eq!(answer.is_ok(), outcome == "ok", "{answer:?}");
        assert_eq!((entries() - before, head() - seq), (1, 1), "{decision}: one entry, one record");
        // Asked right away on a follower (whose own listing's record is its read barrier): the
        // outcome is already there, not `unknown` waiting for a later entry.
        let last = last_get(records(&v, at).await);
        assert_eq!((last.decision.as_str(), last.outcome.as_str()), (decision, outcome), "{last:?}");
        assert_eq!(last.response_hmacs.is_empty(), outcome != "ok", "{last:?}");
        assert!(!format!("{last:?}").contains(SECRET), "the secret in clear in its record");
    }

    // On a follower: the record first, then the outcome on its own after its short wait.
    let (before, seq) = (entries(), head());
    call(&follower, Some(&v.root), get()).await.unwrap();
    assert_eq!(head() - seq, 1, "the follower's read has one record");
    assert_eq!(entries() - before, 1, "the follower's read committed its record, its outcome waits");
    let deadline = Instant::now() + Duration::from_secs(5);
    while last_get(records(&v, 0).await).outcome != "ok" {
        assert!(Instant::now() < deadline, "the follower's read's outcome never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    v.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_holds_one_record_per_request_in_the_same_chain() {
    let v = Vault::start().await;
    let app = Operation::PolicyWrite {
        name: "app".into(),
        text: r#"path "secret/data/app/*" { capabilities = ["read"] }"#.into(),
    };
    let mut sent = 0u64;
    let mut expect = |n: u64| sent += n;
    v.root(0, app).await;
    expect(1);
    let Reply::TokenCreated { token: reader, .. } =
        v.root(1, Operation::TokenCreate(TokenCreate { policies: vec!["app".into()], ..Default::default() })).await
    else {
        panic!()
    };
    expect(1);
    v.root(
        2,
        Operation::RoleWrite(RoleConfig::AppRole(AppRole {
            name: "web".into(),
            token: TokenParams { policies: vec!["app".into()], ..Default::default() },
            ..Default::default()
        })),
    )
    .await;
    expect(1);
    let Reply::RoleId(role_id) = v.root(0, Operation::AppRoleRoleId { name: "web".into() }).await else { panic!() };
    let Reply::SecretId { secret_id, .. } = v.root(1, Operation::AppRoleSecretId { name: "web".into() }).await else {
        panic!()
    };
    expect(2);
    // A mixed workload on all three nodes: writes, reads, denied reads, bad and missing tokens,
    // malformed input, a login.
    for i in 0..12usize {
        let node = &v.cores[i % 3];
        let path = format!("app/s{}", i % 4);
        call(node, Some(&v.root), Operation::KvPut { path: path.clone(), data: data(&[("v", SECRET)]), cas: None })
            .await
            .unwrap();
        call(node, Some(&reader), Operation::KvGet { path: path.clone(), version: None }).await.unwrap();
        assert!(call(node, Some(&reader), Operation::KvGet { path: "other/x".into(), version: None }).await.is_err());
        assert!(call(
            node,
            Some("arca_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            Operation::KvList { prefix: "".into() }
        )
        .await
        .is_err());
        assert!(call(node, None, Operation::KvList { prefix: "".into() }).await.is_err());
        assert!(call(node, Some(&v.root), Operation::KvGet { path: "a//b".into(), version: None }).await.is_err());
        expect(6);
    }
    let creds = Credentials::AppRole { role_id: role_id.clone(), secret_id: Zeroizing::new(secret_id.to_string()) };
    let Reply::TokenCreated { token: login_token, .. } =
        call(&v.cores[2], None, Operation::Login(creds)).await.unwrap()
    else {
        panic!()
    };
    expect(1);
    // Not audited: seal status and health.
    call(&v.cores[0], None, Operation::SealStatus).await.unwrap();
    call(&v.cores[1], None, Operation::Health).await.unwrap();

    // Every node: the same records in the same order, the same head, an intact chain.
    let leader = v.leader_core().await;
    let last = leader.node().metrics().last_applied.unwrap().index;
    let mut chains = Vec::new();
    for core in &v.cores {
        core.node().wait_applied(last).await.unwrap();
        let reader = core.node().reader();
        let verified = audit_log::verify(reader, None).unwrap();
        assert_eq!(verified.first_bad, None, "node {}", core.node().id());
        chains.push((audit_log::read(reader, 0, 100_000).unwrap(), verified.head));
    }
    assert_eq!(chains[0].0.len() as u64, sent, "one record per audited request");
    assert!(chains.windows(2).all(|w| w[0] == w[1]), "identical chains on every node");

    // Outcomes follow their records off the reply path: wait for them.
    let mut listed = records(&v, 1).await;
    for _ in 0..50 {
        if listed.iter().filter(|r| r.operation != "AuditList").all(|r| r.outcome != "unknown") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        listed = records(&v, 1).await;
    }
    let listed: Vec<AuditRecord> = listed.into_iter().filter(|r| r.operation != "AuditList").collect();
    assert_eq!(listed.len() as u64, sent, "one record per request");
    let outcomes = |o: &str| listed.iter().filter(|r| r.outcome == o).count();
    assert_eq!(outcomes("permission_denied"), 12);
    assert_eq!(outcomes("unauthenticated"), 24);
    assert_eq!(outcomes("invalid_argument"), 12);
    let denied = listed.iter().find(|r| r.outcome == "permission_denied").unwrap();
    assert_eq!((denied.decision.as_str(), denied.capability.as_str()), ("denied", "read"));
    assert_eq!(denied.path, "secret/data/other/x");
    assert!(denied.caller.policies.contains(&"app".to_string()) && !denied.caller.accessor.is_empty());
    let login = listed.iter().find(|r| r.operation == "Login").unwrap();
    assert_eq!((login.caller.auth_method.as_str(), login.caller.identity.as_str()), ("approle", "web"));
    assert!(login.request_hmacs["secret_id"].starts_with("hmac-sha256:"));

    // Searchable by HMAC, never in clear: not in the decrypted records, not in the stored bytes.
    let Reply::Hash(h) = v.root(0, Operation::AuditHash { value: Zeroizing::new(reader.to_string()) }).await else {
        panic!()
    };
    assert!(listed.iter().any(|r| r.request_hmacs.get("token") == Some(&h)));
    let everything = serde_json::to_string(&listed).unwrap();
    for clear in [SECRET, reader.as_str(), secret_id.as_str(), login_token.as_str(), v.root.as_str()] {
        assert!(!everything.contains(clear), "a secret in a decrypted audit record");
    }
    for (_, raw) in &chains[0].0 {
        assert!(!raw.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "a record stored in clear");
    }
    v.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_quorum_requests_fail_closed_and_recover_without_a_restart() {
    let mut v = Vault::start().await;
    v.root(0, Operation::KvPut { path: "app/db".into(), data: data(&[("v", SECRET)]), cas: None }).await;
    let survivor = v.cores[0].clone();
    let others: Vec<u64> = v.cores[1..].iter().map(|c| c.node().id()).collect();
    // Their cores hold the stopped nodes' databases open; the survivor's core is what serves.
    v.cores.truncate(1);
    for id in &others {
        v.cluster.stop(*id).await;
    }
    let started = Instant::now();
    let err = call(&survivor, Some(&v.root), Operation::KvGet { path: "app/db".into(), version: None }).await;
    let took = started.elapsed();
    assert!(matches!(err, Err(Error::AuditUnavailable)), "{err:?}");
    assert!(err.unwrap_err().to_string().contains("audit log unavailable"));
    assert!(took < Duration::from_millis(5_400), "failed closed within the deadline (5 s), took {took:?}");
    println!("without quorum the read failed closed after {took:?}");

    for id in &others {
        v.cluster.restart(*id).await;
    }
    let mut back = None;
    for _ in 0..60 {
        if let Ok(Reply::KvSecret { data, .. }) =
            call(&survivor, Some(&v.root), Operation::KvGet { path: "app/db".into(), version: None }).await
        {
            back = Some(data);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(back.expect("reads work again once quorum returns").0["v"], SECRET);
    call(&survivor, Some(&v.root), Operation::TokenLookup(TokenRef::SelfToken)).await.unwrap();
    v.cluster.shutdown().await;
}

/// A `Write` that appends to a shared buffer, for the mirror.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_trims_to_a_checkpoint_that_still_verifies_and_the_mirror_sees_each_record() {
    let config = arca_core::AuditConfig { retention_max_records: Some(5), ..Default::default() };
    let v = Vault::start_with(config).await;
    let mirrored = Shared::default();
    let mirror = tokio::spawn(v.cores[1].clone().mirror_audit(Box::new(mirrored.clone())));
    let puts = || {
        let text = String::from_utf8(mirrored.0.lock().unwrap().clone()).unwrap();
        text.lines().filter(|l| l.contains("\"KvPut\"")).count()
    };
    // The mirror starts at the head it first sees: requests until it shows one.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while mirrored.0.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the mirror wrote nothing in 10 s");
        let _ = call(&v.cores[1], Some(&v.root), Operation::TokenLookup(TokenRef::SelfToken)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..20 {
        v.root(i % 3, Operation::KvPut { path: format!("r/{i}"), data: data(&[("v", SECRET)]), cas: None }).await;
    }
    // The mirror polls; it must have seen every record before retention removes them.
    while puts() < 20 {
        assert!(std::time::Instant::now() < deadline, "the mirror shows {} of 20 writes", puts());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leader = v.leader_core().await;
    let head_before = leader.audit_head();
    assert!(leader.apply_audit_retention().await.unwrap() >= 15);
    let last = leader.node().metrics().last_applied.unwrap().index;
    for core in &v.cores {
        core.node().wait_applied(last).await.unwrap();
        let verified = audit_log::verify(core.node().reader(), None).unwrap();
        assert_eq!(verified.first_bad, None, "node {}: the trimmed chain verifies", core.node().id());
        assert!(verified.checked <= 6, "node {}: {} records kept", core.node().id(), verified.checked);
        assert!(audit_log::checkpoint(core.node().reader()).seq >= head_before - 5);
    }
    let kept = records(&v, 2).await;
    assert!(kept.first().unwrap().seq > 1 && kept.len() <= 6);

    mirror.abort();
    let text = String::from_utf8(mirrored.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<AuditRecord> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().filter(|r| r.operation == "KvPut").count() == 20, "{} lines", lines.len());
    assert!(!text.contains(SECRET));
    v.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unused_grants_names_rules_nobody_used_and_their_holders() {
    let v = Vault::start().await;
    let text = r#"
path "secret/data/app/*" { capabilities = ["read", "update"] }
path "secret/data/legacy/*" { capabilities = ["read"] }
"#;
    v.root(0, Operation::PolicyWrite { name: "app".into(), text: text.into() }).await;
    v.root(0, Operation::KvPut { path: "app/db".into(), data: data(&[("v", "x")]), cas: None }).await;
    let Reply::TokenCreated { token, info, .. } =
        v.root(1, Operation::TokenCreate(TokenCreate { policies: vec!["app".into()], ..Default::default() })).await
    else {
        panic!()
    };
    call(&v.cores[2], Some(&token), Operation::KvGet { path: "app/db".into(), version: None }).await.unwrap();
    // A request's outcome commits just after its reply: wait (bounded) until the read counts.
    let used = |grants: &[arca_core::GrantUse]| {
        grants.iter().any(|g| g.policy == "app" && g.pattern == "secret/data/app/*" && g.capability == "read" && g.used)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let grants = loop {
        let Reply::Grants(grants) = v.root(0, Operation::AuditUnusedGrants { since_ms: 0 }).await else { panic!() };
        if used(&grants) || Instant::now() > deadline {
            break grants;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let find = |pattern: &str, cap: &str| {
        grants.iter().find(|g| g.policy == "app" && g.pattern == pattern && g.capability == cap).unwrap().clone()
    };
    assert!(find("secret/data/app/*", "read").used);
    assert!(!find("secret/data/app/*", "update").used);
    let legacy = find("secret/data/legacy/*", "read");
    assert!(!legacy.used);
    assert!(legacy.holders.contains(&format!("token/{}", info.accessor)), "{:?}", legacy.holders);
    v.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_following_tail_stops_once_its_token_is_revoked() {
    let v = Vault::start().await;
    let text = r#"path "sys/audit/*" { capabilities = ["read", "list", "sudo"] }"#;
    v.root(0, Operation::PolicyWrite { name: "auditor".into(), text: text.into() }).await;
    let Reply::TokenCreated { token, .. } =
        v.root(1, Operation::TokenCreate(TokenCreate { policies: vec!["auditor".into()], ..Default::default() })).await
    else {
        panic!()
    };
    let token = Zeroizing::new(token.to_string());
    let page = AuditFilter { limit: 10, ..Default::default() };
    // The check each later page of the stream makes, on every node (each first made current
    // by a request of the token's own: that check reads local state, like a stream's pages).
    for core in &v.cores {
        call(core, Some(&token), Operation::TokenLookup(TokenRef::SelfToken)).await.unwrap();
        core.audit_records_after_authorization(Some(&token), &page).unwrap();
        assert!(core.audit_records_after_authorization(None, &page).is_err());
    }
    v.root(2, Operation::TokenRevoke(TokenRef::Token(token.clone()))).await;
    for core in &v.cores {
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            match core.audit_records_after_authorization(Some(&token), &page) {
                Err(e) => break e,
                Ok(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Ok(_) => panic!("a revoked token still reads the audit log on node {}", core.node().id()),
            }
        };
        assert!(matches!(err, Error::PermissionDenied(ref m) if m.contains("no longer valid")), "{err}");
    }
    v.cluster.shutdown().await;
}
