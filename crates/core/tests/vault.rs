//! The vault on a real 3-node cluster (in process): init, unseal, KV v2, tokens, errors.

use std::time::Duration;

mod common;

use arca_core::{Core, Error, Operation, Reply, TokenCreate, TokenRef};
use arca_raft::testing::TestCluster;
use arca_raft::Timing;
use common::{call, data};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn init_unseal_and_versioned_kv_across_nodes() {
    let cluster = TestCluster::start(3, Timing::default()).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await;
    let cores: Vec<Core> = cluster.running().map(|n| Core::new(n.clone())).collect();
    let follower = cores.iter().find(|c| c.node().id() != leader).unwrap().clone();

    // Init from a follower; a second init fails.
    let Reply::Init(init) = call(&follower, None, Operation::Init { shares: 5, threshold: 3 }).await.unwrap() else {
        panic!()
    };
    assert!(matches!(
        call(&cores[0], None, Operation::Init { shares: 5, threshold: 3 }).await,
        Err(Error::AlreadyInitialized)
    ));
    let token = init.root_token.as_str();

    // Sealed nodes refuse everything but the seal calls.
    let err = call(&follower, Some(token), Operation::KvGet { path: "a".into(), version: None }).await.unwrap_err();
    assert!(matches!(err, Error::Sealed), "{err}");

    for core in &cores {
        for (i, share) in init.shares.iter().take(3).enumerate() {
            let Reply::SealStatus(s) =
                call(core, None, Operation::Unseal { share: share.clone(), reset: false }).await.unwrap()
            else {
                panic!()
            };
            assert_eq!(s.sealed, i < 2);
        }
    }

    // Versions, CAS, read on every node.
    let put = |cas| Operation::KvPut { path: "app/db".into(), data: data(&[("password", "s3cret")]), cas };
    assert!(
        matches!(call(&follower, Some(token), put(Some(0))).await.unwrap(), Reply::KvWritten { version: v, .. } if v.version == 1)
    );
    assert!(matches!(
        call(&follower, Some(token), put(Some(0))).await,
        Err(Error::CasMismatch { expected: 0, current: 1 })
    ));
    assert!(
        matches!(call(&cores[0], Some(token), put(Some(1))).await.unwrap(), Reply::KvWritten { version: v, .. } if v.version == 2)
    );
    for core in &cores {
        let Reply::KvSecret { data: d, version, .. } =
            call(core, Some(token), Operation::KvGet { path: "app/db".into(), version: None }).await.unwrap()
        else {
            panic!()
        };
        assert_eq!((d.0["password"].as_str(), version.version), ("s3cret", 2));
    }
    call(&cores[1], Some(token), Operation::KvDelete { path: "app/db".into(), versions: vec![] }).await.unwrap();
    let err =
        call(&cores[2], Some(token), Operation::KvGet { path: "app/db".into(), version: None }).await.unwrap_err();
    assert!(err.to_string().contains("is deleted"), "{err}");
    call(&cores[2], Some(token), Operation::KvUndelete { path: "app/db".into(), versions: vec![2] }).await.unwrap();
    call(&cores[0], Some(token), Operation::KvDestroy { path: "app/db".into(), versions: vec![1] }).await.unwrap();
    let err =
        call(&cores[0], Some(token), Operation::KvGet { path: "app/db".into(), version: Some(1) }).await.unwrap_err();
    assert!(err.to_string().contains("destroyed"), "{err}");
    let Reply::KvKeys(keys) = call(&follower, Some(token), Operation::KvList { prefix: "app/".into() }).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(keys, vec!["db"]);

    // Concurrent writers to one secret: every write gets its own version, none is lost.
    let writes = (0..8).map(|i| {
        let core = cores[i % 3].clone();
        let token = token.to_string();
        tokio::spawn(async move {
            let op = Operation::KvPut { path: "race".into(), data: data(&[("i", &i.to_string())]), cas: None };
            call(&core, Some(&token), op).await.unwrap()
        })
    });
    let mut versions: Vec<u64> = Vec::new();
    for w in writes {
        let Reply::KvWritten { version: v, .. } = w.await.unwrap() else { panic!() };
        versions.push(v.version);
    }
    versions.sort();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());

    // Tokens: bad, missing, and a non-root token is denied by default.
    assert!(matches!(
        call(&cores[0], None, Operation::TokenLookup(TokenRef::SelfToken)).await,
        Err(Error::MissingToken)
    ));
    assert!(matches!(
        call(&cores[0], Some("arca_nope"), Operation::TokenLookup(TokenRef::SelfToken)).await,
        Err(Error::BadToken)
    ));
    let Reply::TokenCreated { token: child, .. } = call(
        &cores[0],
        Some(token),
        Operation::TokenCreate(TokenCreate { policies: vec!["app".into()], ..Default::default() }),
    )
    .await
    .unwrap() else {
        panic!()
    };
    let err =
        call(&cores[1], Some(&child), Operation::KvGet { path: "app/db".into(), version: None }).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err}");
    call(&cores[1], Some(&child), Operation::TokenRevoke(TokenRef::SelfToken)).await.unwrap();
    assert!(matches!(
        call(&cores[2], Some(&child), Operation::TokenLookup(TokenRef::SelfToken)).await,
        Err(Error::BadToken)
    ));

    // Seal one node: it stops serving; the others go on.
    call(&cores[0], Some(token), Operation::Seal).await.unwrap();
    assert!(matches!(
        call(&cores[0], Some(token), Operation::TokenLookup(TokenRef::SelfToken)).await,
        Err(Error::Sealed)
    ));
    call(&cores[1], Some(token), Operation::TokenLookup(TokenRef::SelfToken)).await.unwrap();
    cluster.shutdown().await;
}
