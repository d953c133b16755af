//! The audit trail of a fixed script of requests, compared with `fixtures/audit-golden.txt`:
//! what each request is recorded as (operation, logical path, decision, capability, outcome,
//! error, caller's policies, which request and reply values are kept as HMACs). Refactoring the
//! request pipeline must not change a line of it; a deliberate change regenerates the file with
//! `ARCA_UPDATE_GOLDEN=1` and shows up in review as a diff of the trail.
//!
//! Fields that differ from run to run (times, ids, node, HMAC values, accessors) are left out.

mod common;

use std::time::{Duration, Instant};

use arca_core::{AuditFilter, AuditRecord, Operation, Reply, TokenCreate, TokenRef};
use common::{call, data, Vault};
use zeroize::Zeroizing;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/audit-golden.txt");

fn line(r: &AuditRecord) -> String {
    let keys = |m: &std::collections::BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>().join(",");
    format!(
        "{} {} decision={} capability={} outcome={} error={:?} policies={} request_hmacs=[{}] response_hmacs=[{}]",
        r.operation,
        r.path,
        r.decision,
        r.capability,
        r.outcome,
        r.error,
        r.caller.policies.join(","),
        keys(&r.request_hmacs),
        keys(&r.response_hmacs),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_requests_leave_the_same_audit_trail() {
    let v = Vault::start().await;
    let core = &v.cores[0];
    let root = Some(v.root.as_str());
    let put = |path: &str, value: &str, cas: Option<u64>| Operation::KvPut {
        path: path.into(),
        data: data(&[("password", value)]),
        cas,
    };
    let reader_policy = r#"path "secret/data/app/*" { capabilities = ["read"] }"#;
    let mut script: Vec<(Option<String>, Operation)> = vec![
        (None, Operation::SealStatus),
        (None, Operation::Health),
        (v.root.clone().into(), put("app/db", "s3cret", None)),
        (v.root.clone().into(), put("app/db", "second", Some(1))),
        (v.root.clone().into(), put("app/db", "stale", Some(1))),
        (v.root.clone().into(), Operation::KvGet { path: "app/db".into(), version: None }),
        (v.root.clone().into(), Operation::KvGet { path: "app/none".into(), version: None }),
        (v.root.clone().into(), Operation::KvList { prefix: "app/".into() }),
        (v.root.clone().into(), Operation::KvMetadata { path: "app/db".into() }),
        (
            v.root.clone().into(),
            Operation::KvPatch { path: "app/db".into(), set: data(&[("user", "app")]), remove: vec![], cas: None },
        ),
        (v.root.clone().into(), Operation::KvDelete { path: "app/db".into(), versions: vec![] }),
        (v.root.clone().into(), Operation::KvUndelete { path: "app/db".into(), versions: vec![3] }),
        (v.root.clone().into(), Operation::KvDestroy { path: "app/db".into(), versions: vec![1] }),
        (v.root.clone().into(), Operation::PolicyWrite { name: "reader".into(), text: reader_policy.into() }),
        (v.root.clone().into(), Operation::PolicyRead { name: "reader".into() }),
        (v.root.clone().into(), Operation::PolicyList),
        (v.root.clone().into(), Operation::PolicyWrite { name: "broken".into(), text: "path {".into() }),
        (v.root.clone().into(), Operation::TokenLookup(TokenRef::SelfToken)),
        (
            v.root.clone().into(),
            Operation::Capabilities { target: TokenRef::SelfToken, paths: vec!["secret/data/app/db".into()] },
        ),
        (v.root.clone().into(), Operation::AuditHash { value: Zeroizing::new("s3cret".into()) }),
        (v.root.clone().into(), Operation::RotationStatus { path: None }),
        (v.root.clone().into(), Operation::KeyringStatus),
        (v.root.clone().into(), Operation::Members),
        (v.root.clone().into(), Operation::Leader),
        (v.root.clone().into(), Operation::Mounts { path: None, table: arca_core::MountTable::Secrets }),
        (v.root.clone().into(), Operation::Mounts { path: None, table: arca_core::MountTable::Audit }),
        (v.root.clone().into(), Operation::TokenListAccessors),
        (None, Operation::KvGet { path: "app/db".into(), version: None }),
        (Some("arca_not-a-real-token".into()), Operation::KvGet { path: "app/db".into(), version: None }),
    ];
    let mut replies = Vec::new();
    for (token, op) in script.drain(..) {
        replies.push(call(core, token.as_deref(), op).await.map(|r| format!("{r:?}")));
    }
    // A token holding only the reader policy: allowed, then denied (path and capability).
    let create = TokenCreate { policies: vec!["reader".into()], display_name: "reader".into(), ..Default::default() };
    let Reply::TokenCreated { token, .. } = call(core, root, Operation::TokenCreate(create)).await.unwrap() else {
        panic!("token create")
    };
    let reader = Some(token.as_str());
    let _ = call(core, reader, Operation::KvGet { path: "app/db".into(), version: None }).await;
    let _ = call(core, reader, put("app/db", "nope", None)).await;
    let _ = call(core, reader, Operation::PolicyList).await;
    let _ = call(core, reader, Operation::TokenRevoke(TokenRef::SelfToken)).await;
    let _ = call(core, reader, Operation::TokenLookup(TokenRef::SelfToken)).await;

    // Every outcome is attached (they ride later batches), then the trail is listed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let trail = loop {
        let list = Operation::AuditList(AuditFilter { limit: 10_000, ..Default::default() });
        let Reply::AuditRecords(listed) = call(core, root, list).await.unwrap() else { panic!("audit list") };
        let listed: Vec<AuditRecord> = listed.into_iter().filter(|r| r.operation != "AuditList").collect();
        if listed.iter().all(|r| r.outcome != "unknown") {
            break listed;
        }
        assert!(Instant::now() < deadline, "outcomes still unknown after 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text: String = trail.iter().map(|r| line(r) + "\n").collect();
    if std::env::var("ARCA_UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(GOLDEN, &text).unwrap();
        return;
    }
    let golden = std::fs::read_to_string(GOLDEN).expect("the golden trail (ARCA_UPDATE_GOLDEN=1 writes it)");
    if text != golden {
        let (got, want): (Vec<&str>, Vec<&str>) = (text.lines().collect(), golden.lines().collect());
        let first = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        panic!(
            "the audit trail changed at record {} of {} (golden has {}):\n  got:    {}\n  golden: {}\n(ARCA_UPDATE_GOLDEN=1 rewrites {GOLDEN} if the change is meant)",
            first + 1,
            got.len(),
            want.len(),
            got.get(first).unwrap_or(&"<none>"),
            want.get(first).unwrap_or(&"<none>")
        );
    }
    drop(replies);
    v.cluster.shutdown().await;
}
