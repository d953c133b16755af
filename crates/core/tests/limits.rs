//! Rate limits of untrusted requests on a real in-process 3-node cluster: a refused request
//! costs no Raft write, trusted requests from the same address are untouched, a login that
//! succeeds gives its charge back, and the refusals come back as one aggregated record per
//! source and class whose counts are exact. Oversized paths are cut before they are recorded.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use arca_core::auth::{AppRole, Credentials, RoleConfig, TokenParams};
use arca_core::limits::Rate;
use arca_core::{AuditFilter, AuditRecord, Core, Error, LimitsConfig, Operation, Reply, Request};
use common::Vault;
use zeroize::Zeroizing;

fn from(
    core: &Core,
    addr: &str,
    token: Option<&str>,
    op: Operation,
) -> impl std::future::Future<Output = Result<Reply, Error>> {
    let mut req = Request::new(token.map(|t| Zeroizing::new(t.to_string())), op);
    req.remote = Some(addr.parse::<SocketAddr>().unwrap());
    let core = core.clone();
    async move { core.handle(req).await }
}

fn get(path: &str) -> Operation {
    Operation::KvGet { path: path.into(), version: None }
}

async fn records(v: &Vault) -> Vec<AuditRecord> {
    let list = Operation::AuditList(AuditFilter { limit: 10_000, ..Default::default() });
    match common::call(&v.cores[0], Some(&v.root), list).await.unwrap() {
        Reply::AuditRecords(r) => r,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn untrusted_requests_over_the_limit_are_refused_before_any_write_and_reported_in_aggregate() {
    let v = Vault::start().await;
    let limits = LimitsConfig {
        unauthenticated: Rate { per_second: 0.001, burst: 3 },
        failed_logins: Rate { per_second: 0.001, burst: 2 },
        denied: Rate { per_second: 0.001, burst: 2 },
        report_interval: Duration::from_secs(3600),
        max_sources: 1000,
        refusals_per_second: 0.0,
    };
    let core = v.cores[1].clone().with_limits(limits);
    let attacker = "10.9.9.9:4000";

    // The burst is let through and recorded, with the path cut.
    let huge = "p".repeat(1 << 20);
    for _ in 0..3 {
        assert!(matches!(from(&core, attacker, None, get(&huge)).await, Err(Error::MissingToken)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let head = core.audit_head();
    // Then refused, without a single write: the chain does not move.
    for port in 0..20 {
        let err = from(&core, &format!("10.9.9.9:{port}"), Some("arca_bogus"), get("app/x")).await.unwrap_err();
        assert!(matches!(err, Error::RateLimited { .. }), "{err}");
        assert!(err.to_string().contains("too many unauthenticated requests from 10.9.9.9"), "{err}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(core.audit_head(), head, "a refused request must cost no Raft write");

    // A trusted caller at the same address, and an untrusted one elsewhere, are not affected.
    from(
        &core,
        attacker,
        Some(&v.root),
        Operation::KvPut { path: "app/x".into(), data: common::data(&[("k", "v")]), cas: None },
    )
    .await
    .unwrap();
    assert!(matches!(from(&core, "10.9.9.10:1", None, get("app/x")).await, Err(Error::MissingToken)));

    // Denied requests have their own budget. (The token is made on this node: the up-front
    // decision uses local state, where a token made elsewhere a moment ago may not be yet.)
    let Reply::TokenCreated { token: weak, .. } = v
        .root(
            1,
            Operation::TokenCreate(arca_core::TokenCreate { policies: vec!["default".into()], ..Default::default() }),
        )
        .await
    else {
        panic!()
    };
    for _ in 0..2 {
        let r = from(&core, attacker, Some(&weak), get("app/x")).await;
        assert!(matches!(r, Err(Error::PermissionDenied(_))), "{r:?}");
    }
    assert!(matches!(from(&core, attacker, Some(&weak), get("app/x")).await, Err(Error::RateLimited { .. })));

    // Logins: a success gives its charge back; failures use the budget up.
    v.root(
        0,
        Operation::RoleWrite(RoleConfig::AppRole(AppRole {
            name: "web".into(),
            token: TokenParams { policies: vec!["default".into()], ..Default::default() },
            ..Default::default()
        })),
    )
    .await;
    let Reply::RoleId(role_id) = v.root(0, Operation::AppRoleRoleId { name: "web".into() }).await else { panic!() };
    let Reply::SecretId { secret_id, .. } = v.root(0, Operation::AppRoleSecretId { name: "web".into() }).await else {
        panic!()
    };
    let login = |secret: &str| {
        Operation::Login(Credentials::AppRole { role_id: role_id.clone(), secret_id: Zeroizing::new(secret.into()) })
    };
    assert!(matches!(from(&core, attacker, None, login("arcas_wrong")).await, Err(Error::LoginFailed(_))));
    from(&core, attacker, None, login(&secret_id)).await.unwrap();
    assert!(matches!(from(&core, attacker, None, login("arcas_wrong")).await, Err(Error::LoginFailed(_))));
    for _ in 0..5 {
        assert!(matches!(from(&core, attacker, None, login("arcas_wrong")).await, Err(Error::RateLimited { .. })));
    }

    // One record per source and class, counting exactly what was refused.
    assert_eq!(core.report_rate_limited().await.unwrap(), 3);
    assert_eq!(core.report_rate_limited().await.unwrap(), 0, "counts restart after a report");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = records(&v).await;
    let limited: Vec<_> = all.iter().filter(|r| r.operation == "RateLimited").collect();
    let count = |class: &str| limited.iter().filter(|r| r.decision == class).map(|r| r.dropped).sum::<u64>();
    assert_eq!((count("unauthenticated"), count("denied"), count("failed_login")), (20, 1, 5), "{limited:#?}");
    assert!(limited.iter().all(|r| r.remote == "10.9.9.9" && r.outcome == "rate_limited"));
    let cut: Vec<_> = all
        .iter()
        .filter(|r| r.operation == "KvGet" && r.remote == attacker && r.decision == "unauthenticated")
        .collect();
    assert_eq!(cut.len(), 3);
    assert!(cut.iter().all(|r| r.path.len() < 200 && r.path.ends_with(&format!("[cut: {} bytes]", huge.len() + 12))));
}
