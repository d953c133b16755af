//! openraft's own storage conformance suite against the RocksDB store, plus the state machine
//! behaviours Arca relies on beyond it (atomic apply, restart, snapshot install).

use std::io::Cursor;

use arca_storage::{Cf, LogStore, StateMachine, StoreConfig, Transaction};
use openraft::storage::RaftStateMachine;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

/// A put of `value` under `key` in the `kv` family; responds with the index it applied at.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Put {
    key: String,
    value: Vec<u8>,
}

openraft::declare_raft_types!(
    TestConfig:
        D = Put,
        R = u64,
);

impl StoreConfig for TestConfig {
    fn apply(cmd: &Put, log_id: &openraft::LogId<u64>, tx: &mut Transaction<'_>) -> u64 {
        // Reads see writes staged earlier in the same batch.
        let prev = tx.get(Cf::Kv, cmd.key.as_bytes()).unwrap().unwrap_or_default();
        let mut value = prev;
        value.extend_from_slice(&cmd.value);
        tx.put(Cf::Kv, cmd.key.as_bytes(), value);
        log_id.index
    }

    fn empty_response(index: u64) -> u64 {
        index
    }
}

struct Builder;

impl StoreBuilder<TestConfig, LogStore<TestConfig>, StateMachine<TestConfig>, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore<TestConfig>, StateMachine<TestConfig>), StorageError<u64>> {
        let dir = TempDir::new().expect("temp dir");
        let (log, sm) = arca_storage::open(dir.path()).expect("open store");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("openraft storage suite failed: {e}");
    }
}

fn entry(index: u64, key: &str, value: &[u8]) -> Entry<TestConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Put { key: key.into(), value: value.to_vec() }),
    }
}

#[tokio::test]
async fn applied_state_survives_restart_and_batches_see_their_own_writes() {
    let dir = TempDir::new().unwrap();
    {
        let (_log, mut sm) = arca_storage::open::<TestConfig>(dir.path()).unwrap();
        let resp = sm.apply([entry(1, "a", b"x"), entry(2, "a", b"y"), entry(3, "b", b"z")]).await.unwrap();
        assert_eq!(resp, vec![1, 2, 3]);
    }
    let (_log, mut sm) = arca_storage::open::<TestConfig>(dir.path()).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(3));
    let reader = sm.reader();
    assert_eq!(reader.get(Cf::Kv, b"a").unwrap().as_deref(), Some(&b"xy"[..]));
    assert_eq!(reader.get(Cf::Kv, b"b").unwrap().as_deref(), Some(&b"z"[..]));
}

/// A node that led when it stopped comes back without its leadership: it may have lost entries
/// it acknowledged before syncing them, and leading the same term again would reuse their log
/// ids. Its vote comes back uncommitted (a candidate's, for a new term); anyone else's vote, and
/// any vote of a store that never acknowledges early, comes back as saved.
#[tokio::test]
async fn a_leader_restarts_as_a_candidate_not_as_the_leader_of_its_term() {
    use openraft::storage::RaftLogStorage;
    use openraft::Vote;
    let dir = TempDir::new().unwrap();
    {
        let (mut log, _sm) =
            arca_storage::open_node::<TestConfig>(dir.path(), 1, arca_storage::DirectIo::Auto).unwrap();
        log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
    }
    let (mut log, _sm) = arca_storage::open_node::<TestConfig>(dir.path(), 1, arca_storage::DirectIo::Auto).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    drop((log, _sm));
    let (mut log, _sm) = arca_storage::open_node::<TestConfig>(dir.path(), 2, arca_storage::DirectIo::Auto).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new_committed(3, 1)), "another node's leadership stays");
    drop((log, _sm));
    let (mut log, _sm) = arca_storage::open::<TestConfig>(dir.path()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new_committed(3, 1)));
}

#[tokio::test]
async fn a_data_dir_cannot_be_opened_twice() {
    let dir = TempDir::new().unwrap();
    let _first = arca_storage::open::<TestConfig>(dir.path()).unwrap();
    let err = arca_storage::open::<TestConfig>(dir.path()).err().expect("second open must fail");
    assert!(err.to_string().contains("no other arca process"), "{err}");
}

#[tokio::test]
async fn snapshot_install_replaces_state_and_is_kept_on_disk() {
    let src_dir = TempDir::new().unwrap();
    let (_l, mut src) = arca_storage::open::<TestConfig>(src_dir.path()).unwrap();
    src.apply((1..=50).map(|i| entry(i, &format!("k{i}"), b"v"))).await.unwrap();
    let built = src.get_snapshot_builder().await.build_snapshot().await.unwrap();
    // A build writes its data to the snapshot file, from where it is sent.
    let snap = src.get_current_snapshot().await.unwrap().expect("the built snapshot is current");
    assert_eq!(snap.meta, built.meta);

    let dst_dir = TempDir::new().unwrap();
    {
        let (_l, mut dst) = arca_storage::open::<TestConfig>(dst_dir.path()).unwrap();
        // Stale state that the snapshot must remove.
        dst.apply([entry(1, "stale", b"old")]).await.unwrap();
        let mut data = dst.begin_receiving_snapshot().await.unwrap();
        data.get_mut().extend_from_slice(snap.snapshot.get_ref());
        dst.install_snapshot(&snap.meta, data).await.unwrap();
        assert_eq!(dst.reader().digest().unwrap(), src.reader().digest().unwrap());
        assert_eq!(dst.reader().get(Cf::Kv, b"stale").unwrap(), None);
    }
    let (_l, mut dst) = arca_storage::open::<TestConfig>(dst_dir.path()).unwrap();
    assert_eq!(dst.applied_state().await.unwrap().0.map(|l| l.index), Some(50));
    let current = dst.get_current_snapshot().await.unwrap().expect("snapshot kept");
    assert_eq!(current.meta, snap.meta);

    // A corrupted transfer is refused and leaves the state untouched.
    let before = dst.reader().digest().unwrap();
    let mut bad = snap.snapshot.get_ref().clone();
    bad[20] ^= 0xFF;
    let err = dst.install_snapshot(&snap.meta, Box::new(Cursor::new(bad))).await.unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    assert_eq!(dst.reader().digest().unwrap(), before);
}
