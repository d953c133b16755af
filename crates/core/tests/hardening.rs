//! Issue 15, item 7: the smaller holes, each tried as an attacker would on a real in-process
//! 3-node cluster (RocksDB, mutual TLS): use-limited tokens making tokens, a create-only token
//! overwriting a secret by racing its creation, durations that overflow into the past, and an
//! audit outcome moved onto another request's record.

mod common;

use std::time::Duration;

use arca_core::{AuditFilter, AuditRecord, Error, Operation, Reply, TokenCreate, TokenRef};
use arca_raft::Command;
use common::{call, data, Vault};

async fn token(v: &Vault, spec: TokenCreate) -> String {
    match v.root(0, Operation::TokenCreate(spec)).await {
        Reply::TokenCreated { token, .. } => token.to_string(),
        other => panic!("{other:?}"),
    }
}

async fn policy(v: &Vault, name: &str, text: &str) {
    v.root(0, Operation::PolicyWrite { name: name.into(), text: text.into() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_use_limited_token_makes_no_tokens() {
    let v = Vault::start().await;
    policy(&v, "maker", r#"path "auth/token/*" { capabilities = ["update"] }"#).await;
    let limited = token(&v, TokenCreate { policies: vec!["maker".into()], num_uses: 5, ..Default::default() }).await;
    for orphan in [false, true] {
        let spec = TokenCreate { policies: vec!["maker".into()], orphan, ..Default::default() };
        match call(&v.cores[1], Some(&limited), Operation::TokenCreate(spec)).await {
            Err(Error::PermissionDenied(m)) => assert!(m.contains("use limit"), "{m}"),
            other => panic!("a use-limited token made a token (orphan: {orphan}): {other:?}"),
        }
    }
    v.cluster.shutdown().await;
}

/// Two writers with only `create` race to write the same new secret: exactly one creates it,
/// and the other must not overwrite it (that needs `update`). Before the fix, both were judged
/// on a read taken before the write, and both wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_only_token_never_overwrites_even_when_racing_the_creation() {
    let v = Vault::start().await;
    policy(&v, "create-only", r#"path "secret/data/drop/*" { capabilities = ["create"] }"#).await;
    let t = token(&v, TokenCreate { policies: vec!["create-only".into()], ..Default::default() }).await;
    for round in 0..10 {
        let path = format!("drop/box{round}");
        let put = |core: usize, value: &'static str| {
            let (core, t, path) = (v.cores[core].clone(), t.clone(), path.clone());
            tokio::spawn(async move {
                call(&core, Some(&t), Operation::KvPut { path, data: data(&[("v", value)]), cas: None }).await
            })
        };
        let (a, b) = (put(1, "a"), put(2, "b"));
        let results = [a.await.unwrap(), b.await.unwrap()];
        let written = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(written, 1, "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, Error::PermissionDenied(m) if m.contains("'update'")), "{e:?}");
            }
        }
        let Reply::KvMetadata(m) = v.root(0, Operation::KvMetadata { path }).await else { panic!() };
        assert_eq!(m.current_version, 1, "round {round}: the secret was overwritten");
    }
    // Each refused writer is on record as denied, not allowed: the decision taken inside the
    // write is the one audited (outcomes commit shortly after the reply).
    let list = || Operation::AuditList(AuditFilter { limit: 10_000, ..Default::default() });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let all = records(v.root(0, list()).await);
        let refused: Vec<AuditRecord> = all
            .into_iter()
            .filter(|r| r.operation == "KvPut" && r.path.contains("drop/box") && r.outcome == "permission_denied")
            .collect();
        if refused.len() == 10 || std::time::Instant::now() > deadline {
            break refused;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refused.len(), 10, "{refused:#?}");
    for r in &refused {
        assert_eq!(r.decision, "denied", "{r:#?}");
    }
    v.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn durations_past_a_century_are_refused_not_wrapped() {
    let v = Vault::start().await;
    let huge = Duration::from_secs(u64::MAX / 2);
    let spec = TokenCreate { ttl: Some(huge), ..Default::default() };
    let e = call(&v.cores[0], Some(&v.root), Operation::TokenCreate(spec)).await.unwrap_err();
    assert!(e.to_string().contains("at most 100 years"), "{e}");
    let t = token(&v, TokenCreate { renewable: true, ..Default::default() }).await;
    let renew = Operation::TokenRenew { target: TokenRef::Token(t.clone().into()), increment: Some(huge) };
    let e = call(&v.cores[0], Some(&v.root), renew).await.unwrap_err();
    assert!(e.to_string().contains("at most 100 years"), "{e}");
    // The token is still valid: nothing wrapped its expiry into the past.
    assert!(call(&v.cores[1], Some(&t), Operation::TokenLookup(TokenRef::SelfToken)).await.is_ok());

    v.root(0, Operation::KvPut { path: "app/x".into(), data: data(&[("p", "x")]), cas: None }).await;
    let set = arca_core::rotation::RotationConfig {
        path: "app/x".into(),
        rotator: arca_core::rotation::RotatorKind::Random,
        params: Default::default(),
        schedule: arca_core::rotation::Schedule::Every { ms: u64::MAX },
        window: None,
        max_attempts: 3,
        backoff_ms: 1000,
        enabled: true,
        configured_by: String::new(),
    };
    let e = call(&v.cores[0], Some(&v.root), Operation::RotationSet(set)).await.unwrap_err();
    assert!(e.to_string().contains("at most 100 years"), "{e}");
    v.cluster.shutdown().await;
}

fn records(reply: Reply) -> Vec<AuditRecord> {
    match reply {
        Reply::AuditRecords(r) => r,
        other => panic!("{other:?}"),
    }
}

/// Someone who can propose Raft commands (a compromised member) copies the outcome of an
/// allowed request onto a denied one, to make the denial read "ok". The copy does not open
/// under the other request's id: the record says its outcome is invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_audit_outcome_moved_onto_another_record_is_refused() {
    let v = Vault::start().await;
    v.root(0, Operation::KvPut { path: "app/ok".into(), data: data(&[("p", "x")]), cas: None }).await;
    let denied = call(&v.cores[0], Some("not-a-token"), Operation::KvGet { path: "app/ok".into(), version: None });
    assert!(denied.await.is_err());
    // Outcomes trail their records by a batch: wait (bounded) until both have theirs.
    let filter = AuditFilter { path_prefix: "secret/data/app/ok".into(), ..Default::default() };
    let mut listed = Vec::new();
    for _ in 0..50 {
        listed = records(v.root(0, Operation::AuditList(filter.clone())).await);
        if listed.len() == 2 && listed.iter().all(|r| r.outcome != "unknown") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ok = listed.iter().find(|r| r.operation == "KvPut").expect("the put's record");
    let bad = listed.iter().find(|r| r.operation == "KvGet").expect("the denied read's record");
    assert_eq!(ok.outcome, "ok");
    assert_ne!(bad.outcome, "ok");

    let leader = v.leader_core().await;
    let moved = arca_raft::audit_log::outcome(leader.node().reader(), &ok.request_id).unwrap().expect("stored");
    let forged =
        Command::Audit { batch_id: "forged".into(), records: vec![], outcomes: vec![(bad.request_id.clone(), moved)] };
    leader.node().write(forged).await.unwrap();

    let after = records(v.root(0, Operation::AuditList(filter)).await);
    let bad_now = after.iter().find(|r| r.request_id == bad.request_id).unwrap();
    assert_eq!(bad_now.outcome, "invalid", "{bad_now:?}");
    assert!(after.iter().any(|r| r.request_id == ok.request_id && r.outcome == "ok"));
    v.cluster.shutdown().await;
}
