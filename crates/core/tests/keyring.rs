//! The vault's own keys on a real 3-node cluster: `operator rotate` adds a term every node
//! uses at once, the leader's rewrap leaves no record on the old term, every version stays
//! readable (also on a node restarted and unsealed afterwards); `operator rekey` with the
//! current shares makes a new share set and the old shares stop unsealing.

mod common;

use std::time::{Duration, Instant};

use arca_core::{Core, Error, KeyringInfo, Operation, Reply, TokenCreate};
use arca_crypto::Keyring;
use arca_storage::Cf;
use common::{call, data, Vault};
use zeroize::Zeroizing;

async fn key_status(core: &Core, root: &str) -> KeyringInfo {
    match call(core, Some(root), Operation::KeyringStatus).await.unwrap() {
        Reply::Keyring(k) => k,
        other => panic!("{other:?}"),
    }
}

/// Terms of every barrier record in the KV and token families of one node's state.
fn stored_terms(core: &Core) -> Vec<u32> {
    let mut terms = Vec::new();
    for cf in [Cf::Kv, Cf::Tokens] {
        for (_, v) in core.node().reader().scan_prefix(cf, b"", 1_000_000).unwrap() {
            // Cleartext index entries (token accessors → hashes) are not barrier records.
            if v.first() == Some(&arca_crypto::RECORD_VERSION) {
                terms.push(Keyring::term_of(&v).unwrap());
            }
        }
    }
    terms
}

async fn read(core: &Core, root: &str, path: &str, version: Option<u64>) -> String {
    match call(core, Some(root), Operation::KvGet { path: path.into(), version }).await.unwrap() {
        Reply::KvSecret { data, .. } => data.0["v"].clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotate_then_rewrap_leaves_every_version_readable_and_no_record_on_the_old_term() {
    let mut v = Vault::start().await;
    let engines: Vec<_> = v.cores.iter().map(|c| tokio::spawn(c.clone().run_rotations())).collect();
    // More records than one rewrap batch, several versions each, and tokens.
    for i in 0..120 {
        for ver in 1..=3 {
            let put =
                Operation::KvPut { path: format!("app/s{i}"), data: data(&[("v", &format!("{i}-{ver}"))]), cas: None };
            v.root(i % 3, put).await;
        }
    }
    for _ in 0..5 {
        v.root(0, Operation::TokenCreate(TokenCreate::default())).await;
    }
    assert!(stored_terms(&v.cores[0]).iter().all(|t| *t == 1));

    let Reply::Term(term) = v.root(1, Operation::KeyringRotate).await else { panic!() };
    assert_eq!(term, 2);
    // A write through another node uses the new term at once: it loaded the term at apply.
    v.root(2, Operation::KvPut { path: "app/new".into(), data: data(&[("v", "after")]), cas: None }).await;
    let raw = v.cores[2]
        .node()
        .reader()
        .get(Cf::Kv, &[b"d/app/new\0".as_slice(), &1u64.to_be_bytes()].concat())
        .unwrap()
        .unwrap();
    assert_eq!(Keyring::term_of(&raw).unwrap(), 2);
    assert_eq!(read(&v.cores[0], &v.root, "app/new", None).await, "after");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let k = key_status(&v.cores[0], &v.root).await;
        if k.rewrap.as_ref().is_some_and(|r| r.done) && k.records_on_old_terms == 0 {
            assert_eq!((k.terms.clone(), k.active_term), (vec![1, 2], 2));
            assert!(k.rewrap.unwrap().rewrapped >= 360, "every version and token was rewrapped");
            break;
        }
        assert!(Instant::now() < deadline, "rewrap did not finish: {k:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for core in &v.cores {
        // A request first: its read barrier makes this node current before the raw scan.
        assert_eq!(key_status(core, &v.root).await.records_on_old_terms, 0);
        let terms = stored_terms(core);
        assert!(!terms.is_empty() && terms.iter().all(|t| *t == 2), "node {}: {terms:?}", core.node().id());
    }
    for i in [0usize, 59, 119] {
        for ver in 1..=3u64 {
            assert_eq!(read(&v.cores[i % 3], &v.root, &format!("app/s{i}"), Some(ver)).await, format!("{i}-{ver}"));
        }
    }

    // A node restarted after the rotation unseals from the root-sealed keyring (term 1) and
    // follows the term chain to term 2.
    for e in engines {
        e.abort();
    }
    // Every handle on the node goes (its core's queue holds one), so its RocksDB closes.
    let id = v.cores.remove(2).node().id();
    tokio::time::sleep(Duration::from_millis(200)).await;
    v.cluster.stop(id).await;
    let node = v.cluster.restart(id).await;
    let core = Core::new(node);
    v.unseal(&core).await;
    v.cluster.wait_for_leader(Duration::from_secs(5)).await;
    assert_eq!(read(&core, &v.root, "app/s7", Some(2)).await, "7-2");
    assert_eq!(read(&core, &v.root, "app/new", None).await, "after");
    v.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rekey_with_current_shares_replaces_them() {
    let v = Vault::start().await;
    v.root(0, Operation::KvPut { path: "app/db".into(), data: data(&[("v", "kept")]), cas: None }).await;
    let rekey =
        |share: &str| Operation::Rekey { share: Zeroizing::new(share.into()), shares: 5, threshold: 3, reset: false };

    // A share of another set is refused and counts for nothing.
    let foreign = Vault::start().await;
    let e = call(&v.cores[1], None, rekey(&foreign.shares[0])).await.unwrap_err();
    assert!(matches!(e, Error::Share(_)), "{e}");
    foreign.cluster.shutdown().await;

    let Reply::Rekey { progress: 1, shares, .. } = call(&v.cores[1], None, rekey(&v.shares[0])).await.unwrap() else {
        panic!()
    };
    assert!(shares.is_empty());
    let Reply::Rekey { shares: new, .. } = call(&v.cores[1], None, rekey(&v.shares[2])).await.unwrap() else {
        panic!()
    };
    assert_eq!(new.len(), 5);

    // Seal a node: the old shares no longer unseal it, three new ones do.
    let core = &v.cores[2];
    v.root(2, Operation::Seal).await;
    let old = Operation::Unseal { share: Zeroizing::new(v.shares[0].clone()), reset: false };
    let e = call(core, None, old).await.unwrap_err();
    assert!(e.to_string().contains("share"), "{e}");
    for share in &new[..3] {
        call(core, None, Operation::Unseal { share: share.clone(), reset: false }).await.unwrap();
    }
    assert_eq!(read(core, &v.root, "app/db", None).await, "kept");
    // The old shares cannot start a second rekey either.
    assert!(call(&v.cores[0], None, rekey(&v.shares[1])).await.is_err());
    v.cluster.shutdown().await;
}
