//! The vault's own keys on a real 3-node cluster: `operator rotate` adds a term every node
//! uses at once, the leader's rewrap leaves no record on the old term, every version stays
//! readable (also on a node restarted and unsealed afterwards); `operator rekey` with the
//! current shares makes a new share set and the old shares stop unsealing. And the attacks on
//! DESIGN invariant 10: a leaked term key, or the old shares with a copy of the data, open
//! nothing written after a rotate or a rekey.

mod common;

use std::time::{Duration, Instant};

use arca_core::ceremony::{CeremonyStep, RekeyParams};
use arca_core::{Core, Error, KeyringInfo, Operation, Reply, TokenCreate};
use arca_crypto::shamir::{ShareCollector, ShareConfig, ShareSetId};
use arca_crypto::{Keyring, SecretKey};
use arca_storage::{Cf, StateReader};
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
    let engines: Vec<_> = v.cores.iter().map(|c| tokio::spawn(c.clone().run_leader_duties())).collect();
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

    // Both terms live in the root-sealed keyring alone: no term chain.
    assert!(v.cores[0].node().reader().scan_prefix(Cf::Sys, b"keyring/term/", 10).unwrap().is_empty());
    // A node restarted after the rotation unseals from the root-sealed keyring, terms 1 and 2.
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

fn kv_data_key(path: &str, version: u64) -> Vec<u8> {
    [b"d/", path.as_bytes(), b"\0", &version.to_be_bytes()].concat()
}

fn kv_data_aad(path: &str, version: u64) -> Vec<u8> {
    format!("secret/data/{path}#{version}").into_bytes()
}

fn init_record(core: &Core) -> serde_json::Value {
    serde_json::from_slice(&core.node().reader().get(Cf::Sys, b"core/init").unwrap().unwrap()).unwrap()
}

fn bytes(v: &serde_json::Value) -> Vec<u8> {
    v.as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8).collect()
}

/// What an attacker holding `shares` and a copy of the init record gets offline: the root key
/// and every term sealed under it.
fn offline_unseal(init: &serde_json::Value, shares: &[String]) -> (SecretKey, Keyring) {
    let config = ShareConfig {
        set: ShareSetId(bytes(&init["share_set"]).try_into().unwrap()),
        threshold: init["threshold"].as_u64().unwrap() as u8,
        shares: init["shares"].as_u64().unwrap() as u8,
    };
    let mut c = ShareCollector::new(config);
    for s in &shares[..config.threshold as usize] {
        c.add(s).unwrap();
    }
    c.recover(&bytes(&init["sealed_keyring"])).unwrap()
}

/// Every 32-byte value that any of `keys` decrypts out of any stored record (bound to its own
/// key, as the vault stores its keys), or that `root` opens as a keyring: the key material an
/// attacker with those keys and a copy of the data directory can reach.
fn reachable_keys(reader: &StateReader, keys: &[&Keyring], root: Option<&SecretKey>) -> Vec<SecretKey> {
    let mut found = Vec::new();
    for cf in [Cf::Sys, Cf::Kv, Cf::Tokens, Cf::Audit] {
        for (k, v) in reader.scan_prefix(cf, b"", 1_000_000).unwrap() {
            for kr in keys {
                if let Ok(plain) = kr.decrypt(&k, &v) {
                    found.extend(SecretKey::from_slice(&plain));
                }
            }
            if let Some(root) = root {
                assert!(Keyring::unseal(root, &v).is_err(), "the old root opens a stored keyring at {k:?}");
            }
        }
    }
    found
}

/// Whether any of `candidates`, as any term up to 9, opens `record`.
fn any_opens(candidates: &[SecretKey], aad: &[u8], record: &[u8]) -> bool {
    candidates
        .iter()
        .any(|key| (1..10).any(|t| Keyring::from_key(t, key.duplicate()).unwrap().decrypt(aad, record).is_ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leaked_term_key_opens_nothing_written_after_a_rotate() {
    let v = Vault::start().await;
    v.root(0, Operation::KvPut { path: "app/before".into(), data: data(&[("v", "before")]), cas: None }).await;
    // The leak: term 1's key (taken here through the shares, as a test may).
    let term1 = offline_unseal(&init_record(&v.cores[0]), &v.shares).1.only_term(1).unwrap();

    let Reply::Term(2) = v.root(1, Operation::KeyringRotate).await else { panic!("rotate") };
    v.root(2, Operation::KvPut { path: "app/after".into(), data: data(&[("v", "after")]), cas: None }).await;
    let after = v.cores[2].node().reader().get(Cf::Kv, &kv_data_key("app/after", 1)).unwrap().unwrap();
    assert_eq!(Keyring::term_of(&after).unwrap(), 2);
    assert_eq!(term1.decrypt(&kv_data_aad("app/after", 1), &after).unwrap_err(), arca_crypto::Error::UnknownTerm(2));

    for core in &v.cores {
        key_status(core, &v.root).await; // its read barrier: this node is current
        let reader = core.node().reader();
        // The stored keyring is sealed under the root key, not under any term.
        let sealed = bytes(&init_record(core)["sealed_keyring"]);
        assert!(term1.decrypt(b"sys/keyring", &sealed).is_err());
        // No stored record gives term 1's holder a later term's key (the old term chain did).
        let reachable = reachable_keys(reader, &[&term1], None);
        assert!(!any_opens(&reachable, &kv_data_aad("app/after", 1), &after), "node {}", core.node().id());
        assert!(reader.scan_prefix(Cf::Sys, b"keyring/term/", 10).unwrap().is_empty());
    }
    v.cluster.shutdown().await;
}

async fn rekey_step(core: &Core, step: CeremonyStep<RekeyParams>) -> Result<Reply, Error> {
    call(core, None, Operation::Rekey(step)).await
}

fn submit(nonce: &str, share: &str) -> CeremonyStep<RekeyParams> {
    CeremonyStep::Submit { nonce: Zeroizing::new(nonce.into()), share: Zeroizing::new(share.into()) }
}

/// Runs a whole rekey ceremony on `core` with `shares`; the new shares.
async fn rekey(core: &Core, shares: &[String], new: RekeyParams) -> Vec<String> {
    let Reply::Rekey { status, .. } = rekey_step(core, CeremonyStep::Start(new)).await.unwrap() else { panic!() };
    let nonce = status.nonce.unwrap();
    let mut out = vec![];
    for share in shares {
        let Reply::Rekey { shares, status } = rekey_step(core, submit(&nonce, share)).await.unwrap() else { panic!() };
        out = shares.iter().map(|s| s.to_string()).collect();
        assert_eq!(status.complete, !out.is_empty());
    }
    out
}

async fn sealed(core: &Core) -> bool {
    match call(core, None, Operation::SealStatus).await.unwrap() {
        Reply::SealStatus(s) => s.sealed,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_shares_and_a_copy_of_the_data_open_nothing_written_after_a_rekey() {
    let v = Vault::start().await;
    v.root(0, Operation::KvPut { path: "app/before".into(), data: data(&[("v", "before")]), cas: None }).await;
    let Reply::Term(2) = v.root(0, Operation::KeyringRotate).await else { panic!("rotate") };
    key_status(&v.cores[1], &v.root).await;
    // The attacker's copy of the data directory from before the rekey, and the old shares.
    let old_init = init_record(&v.cores[1]);

    let new = rekey(&v.cores[1], &v.shares[..2], RekeyParams::new(4, 2)).await;
    assert_eq!(new.len(), 4);
    v.root(1, Operation::KvPut { path: "app/after".into(), data: data(&[("v", "after")]), cas: None }).await;
    let after = v.cores[1].node().reader().get(Cf::Kv, &kv_data_key("app/after", 1)).unwrap().unwrap();
    assert_eq!(Keyring::term_of(&after).unwrap(), 3, "a rekey starts a fresh term");

    let (old_root, old_keyring) = offline_unseal(&old_init, &v.shares);
    assert_eq!(old_keyring.terms().collect::<Vec<_>>(), vec![1, 2]);
    assert!(old_keyring.decrypt(&kv_data_aad("app/after", 1), &after).is_err());
    // The current data, opened with everything the old shares give.
    let reader = v.cores[1].node().reader();
    assert!(Keyring::unseal(&old_root, &bytes(&init_record(&v.cores[1])["sealed_keyring"])).is_err());
    let reachable = reachable_keys(reader, &[&old_keyring], Some(&old_root));
    assert!(!any_opens(&reachable, &kv_data_aad("app/after", 1), &after));
    assert!(reader.scan_prefix(Cf::Sys, b"keyring/term/", 10).unwrap().is_empty());
    v.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rekey_with_current_shares_replaces_them() {
    let v = Vault::start().await;
    v.root(0, Operation::KvPut { path: "app/db".into(), data: data(&[("v", "kept")]), cas: None }).await;
    let Reply::Rekey { status, .. } =
        rekey_step(&v.cores[1], CeremonyStep::Start(RekeyParams::new(5, 3))).await.unwrap()
    else {
        panic!()
    };
    let nonce = status.nonce.unwrap();

    // A share of another set is refused and counts for nothing.
    let foreign = Vault::start().await;
    let e = rekey_step(&v.cores[1], submit(&nonce, &foreign.shares[0])).await.unwrap_err();
    assert!(matches!(e, Error::Share(_)), "{e}");
    foreign.cluster.shutdown().await;

    let Reply::Rekey { status, shares } = rekey_step(&v.cores[1], submit(&nonce, &v.shares[0])).await.unwrap() else {
        panic!()
    };
    assert_eq!((status.progress, shares.len()), (1, 0));
    let Reply::Rekey { shares: new, .. } = rekey_step(&v.cores[1], submit(&nonce, &v.shares[2])).await.unwrap() else {
        panic!()
    };
    assert_eq!(new.len(), 5);

    // Every other node sealed itself when the rekey applied; the rekeying node goes on.
    for i in [0, 2] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sealed(&v.cores[i]).await {
            assert!(Instant::now() < deadline, "node {i} is still unsealed under the old root key");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(!sealed(&v.cores[1]).await);
    assert_eq!(read(&v.cores[1], &v.root, "app/db", None).await, "kept");

    // The old shares no longer unseal; three new ones do.
    let core = &v.cores[2];
    let old = Operation::Unseal { share: Zeroizing::new(v.shares[0].clone()), reset: false };
    let e = call(core, None, old).await.unwrap_err();
    assert!(e.to_string().contains("share"), "{e}");
    for share in &new[..3] {
        call(core, None, Operation::Unseal { share: share.clone(), reset: false }).await.unwrap();
    }
    assert_eq!(read(core, &v.root, "app/db", None).await, "kept");
    // The old shares cannot start a second rekey either.
    let Reply::Rekey { status, .. } =
        rekey_step(&v.cores[2], CeremonyStep::Start(RekeyParams::new(3, 2))).await.unwrap()
    else {
        panic!()
    };
    assert!(rekey_step(&v.cores[2], submit(status.nonce.as_deref().unwrap(), &v.shares[1])).await.is_err());
    v.cluster.shutdown().await;
}
