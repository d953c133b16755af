use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::marker::PhantomData;

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, LogId, OptionalSend, RaftLogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions};
use tracing::instrument;

use crate::log_store::{decode, encode};
use crate::wal_sync::Unsynced;
use crate::{snapshot, Applied, Cf, ChangedKey, StateReader, Store, StoreConfig, STATE_CFS};

pub(crate) const KEY_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";

type Membership<C> = StoredMembership<u64, <C as openraft::RaftTypeConfig>::Node>;

/// The writes of one `apply` call, committed as a single RocksDB batch.
///
/// Reads see the transaction's own earlier writes, so a command can build on the one applied
/// just before it in the same batch.
pub struct Transaction<'a> {
    store: &'a Store,
    /// Families emptied by [`Transaction::clear`]: what is on disk in them no longer counts.
    cleared: BTreeSet<Cf>,
    writes: BTreeMap<(Cf, Vec<u8>), Option<Vec<u8>>>,
    /// Set by [`Transaction::replaced_everything`].
    everything: bool,
}

impl<'a> Transaction<'a> {
    fn new(store: &'a Store) -> Self {
        Transaction { store, cleared: BTreeSet::new(), writes: BTreeMap::new(), everything: false }
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error> {
        match self.writes.get(&(cf, key.to_vec())) {
            Some(staged) => Ok(staged.clone()),
            None if self.cleared.contains(&cf) => Ok(None),
            None => self.store.db.get_cf(self.store.cf(cf), key),
        }
    }

    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.insert((cf, key.into()), Some(value.into()));
    }

    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.writes.insert((cf, key.into()), None);
    }

    /// Empties a whole family (one range delete in the batch, however many keys it holds).
    pub fn clear(&mut self, cf: Cf) {
        self.cleared.insert(cf);
        self.writes.retain(|(c, _), _| *c != cf);
    }

    /// Every `(key, value)` of `cf` whose key starts with `prefix`, in key order, as this
    /// transaction would leave it.
    pub fn scan(&self, cf: Cf, prefix: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, rocksdb::Error> {
        let mut out = BTreeMap::new();
        if !self.cleared.contains(&cf) {
            let mode = IteratorMode::From(prefix, rocksdb::Direction::Forward);
            for item in self.store.db.iterator_cf(self.store.cf(cf), mode) {
                let (k, v) = item?;
                if !k.starts_with(prefix) {
                    break;
                }
                out.insert(k.to_vec(), v.to_vec());
            }
        }
        for ((c, k), v) in &self.writes {
            if *c == cf && k.starts_with(prefix) {
                match v {
                    Some(v) => out.insert(k.clone(), v.clone()),
                    None => out.remove(k),
                };
            }
        }
        Ok(out)
    }

    /// Deletes the keys of `cf` in `[from, to)` whose value `doomed` accepts, as this
    /// transaction sees them (what it deleted is gone, what it wrote is there), at most `limit`
    /// of them, the first in key order; returns how many. Each is a delete of its own, so later
    /// reads in this transaction see them gone. The result depends only on the merged view, not
    /// on how many commands share the transaction: every node deletes the same keys however
    /// openraft groups entries into `apply` calls.
    pub fn delete_between(
        &mut self,
        cf: Cf,
        from: &[u8],
        to: &[u8],
        limit: usize,
        doomed: impl Fn(&[u8]) -> bool,
    ) -> Result<usize, rocksdb::Error> {
        let staged = |k: &[u8]| self.writes.get(&(cf, k.to_vec()));
        let mut keys = BTreeSet::new();
        if !self.cleared.contains(&cf) {
            let mode = IteratorMode::From(from, rocksdb::Direction::Forward);
            for item in self.store.db.iterator_cf(self.store.cf(cf), mode) {
                let (k, v) = item?;
                if &*k >= to || keys.len() >= limit {
                    break;
                }
                // Staged keys are judged below, on their staged value (or absence).
                if staged(&k).is_none() && doomed(&v) {
                    keys.insert(k.to_vec());
                }
            }
        }
        for ((_, k), v) in self.writes.range((cf, from.to_vec())..(cf, to.to_vec())) {
            if matches!(v, Some(v) if doomed(v)) {
                keys.insert(k.clone());
            }
        }
        let keys: Vec<Vec<u8>> = keys.into_iter().take(limit).collect();
        let n = keys.len();
        for k in keys {
            self.delete(cf, k);
        }
        Ok(n)
    }

    /// Marks this transaction as replacing the state wholesale (a restore): observers are told
    /// that everything may have changed rather than given a list of keys.
    pub fn replaced_everything(&mut self) {
        self.everything = true;
    }

    /// The keys this transaction writes in the state column families, and whether each ends
    /// up deleted.
    fn changed_keys(&self) -> Vec<ChangedKey> {
        self.writes
            .iter()
            .filter(|((cf, _), _)| STATE_CFS.contains(cf))
            .map(|((cf, key), value)| ChangedKey { cf: *cf, key: key.clone(), deleted: value.is_none() })
            .collect()
    }

    fn into_batch(self) -> Result<WriteBatch, rocksdb::Error> {
        let mut batch = WriteBatch::default();
        // Range deletes first: the batch applies in order, so writes after a clear survive it.
        for cf in &self.cleared {
            let handle = self.store.cf(*cf);
            if let Some(last) = self.store.db.iterator_cf(handle, IteratorMode::End).next() {
                let (last, _) = last?;
                let mut end = last.to_vec();
                end.push(0);
                batch.delete_range_cf(handle, Vec::<u8>::new(), end);
            }
        }
        for ((cf, key), value) in self.writes {
            match value {
                Some(v) => batch.put_cf(self.store.cf(cf), key, v),
                None => batch.delete_cf(self.store.cf(cf), key),
            }
        }
        Ok(batch)
    }
}

/// The replicated state machine.
pub struct StateMachine<C: StoreConfig> {
    store: Store,
    /// The leader's entries acknowledged before their sync, which must not apply yet.
    unsynced: Unsynced,
    last_applied: Option<LogId<u64>>,
    membership: Membership<C>,
    /// Publishes the applied index to `StateReader::wait_applied`; dropped with the state
    /// machine, which ends every wait at once.
    applied: tokio::sync::watch::Sender<u64>,
    _c: PhantomData<fn() -> C>,
}

impl<C: StoreConfig> StateMachine<C> {
    pub(crate) fn new(store: Store, unsynced: Unsynced) -> crate::Result<Self> {
        let read = |key: &[u8]| -> crate::Result<Option<Vec<u8>>> { Ok(store.db.get_cf(store.cf(Cf::Meta), key)?) };
        let corrupt = |e: bincode::Error| crate::Error::Corrupt(format!("state machine metadata: {e}"));
        let last_applied = read(KEY_APPLIED)?.map(|b| decode(&b)).transpose().map_err(corrupt)?.flatten();
        let membership = read(KEY_MEMBERSHIP)?.map(|b| decode(&b)).transpose().map_err(corrupt)?.unwrap_or_default();
        let (applied, published) = tokio::sync::watch::channel(last_applied.map_or(0, |id: LogId<u64>| id.index));
        store.applied.set(published).map_err(|_| crate::Error::SecondStateMachine)?;
        Ok(StateMachine { store, unsynced, last_applied, membership, applied, _c: PhantomData })
    }

    /// A reader of the applied state that stays valid while Raft owns the state machine.
    pub fn reader(&self) -> StateReader {
        self.store.reader()
    }

    /// Tells `StateReader::wait_applied` that the state is at `index`: written, and its
    /// observers run.
    fn published_applied(&self, index: u64) {
        self.applied.send_if_modified(|at| std::mem::replace(at, index) != index);
    }
}

/// Builds snapshots from a point-in-time RocksDB snapshot, so applying may continue meanwhile.
pub struct SnapshotBuilder<C> {
    store: Store,
    _c: PhantomData<fn() -> C>,
}

impl<C: StoreConfig> RaftSnapshotBuilder<C> for SnapshotBuilder<C> {
    #[instrument(level = "info", skip(self))]
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError<u64>> {
        let store = self.store.clone();
        // A snapshot holds the whole state, audit trail included, so it costs time in
        // proportion to everything ever kept, and every node builds one at the same index. It
        // runs on a thread of its own at the lowest CPU and I/O priority: requests must not
        // wait behind it (seen: p99 of 20-150 ms, every 5 000 entries, with a 59 MB state).
        let (done, built) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("arca-snapshot".into())
            .spawn(move || {
                background_priority();
                let _ = done.send(build::<C>(&store));
            })
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let meta = built.await.map_err(|e| StorageIOError::read_state_machine(&e))??;
        tracing::info!(snapshot = %meta, "built snapshot");
        // openraft 0.9 keeps only the metadata of a build (`core::sm::worker`): the data is in
        // the snapshot file, which `get_current_snapshot` reads when a follower needs it.
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(Vec::new())) })
    }
}

/// Lowers the calling thread to the lowest CPU priority (nice 19) and the lowest best-effort
/// I/O priority, so whatever else wants the CPU or the disk goes first. Not the idle I/O class:
/// under a scheduler that honours it a busy disk could starve the build forever, keeping its
/// RocksDB snapshot pinned and the log unpurged. Best effort: a refusal leaves the thread as it
/// was, which is only slower for everyone else.
fn background_priority() {
    // SAFETY: plain syscalls on the calling thread (`gettid`, `setpriority` on that id, and
    // `ioprio_set` with who = that id); no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
        // IOPRIO_PRIO_VALUE(IOPRIO_CLASS_BE = 2, level 7), IOPRIO_WHO_PROCESS = 1 (a thread id).
        libc::syscall(libc::SYS_ioprio_set, 1, tid, (2 << 13) | 7);
    }
}

fn read_err<E: std::error::Error + 'static>(e: &E) -> StorageError<u64> {
    StorageIOError::read_state_machine(e).into()
}

/// Writes a snapshot of the applied state straight to the node's snapshot file, record by
/// record, and returns its metadata. The state is never held in memory: a build used to
/// serialize all of it (100 MB after a few minutes of benchmark load; locked memory, since the
/// server locks its pages) before writing a byte.
fn build<C: StoreConfig>(store: &Store) -> Result<SnapshotMeta<u64, C::Node>, StorageError<u64>> {
    let snap = store.db.snapshot();
    let meta_get = |key: &[u8]| snap.get_cf(store.cf(Cf::Meta), key).map_err(|e| read_err(&e));
    // Stored as `Option<LogId>`, the type `applied_state` reports.
    let last_log_id: Option<LogId<u64>> =
        meta_get(KEY_APPLIED)?.map(|b| decode(&b)).transpose().map_err(|e| read_err(&e))?.flatten();
    let last_membership: Membership<C> =
        meta_get(KEY_MEMBERSHIP)?.map(|b| decode(&b)).transpose().map_err(|e| read_err(&e))?.unwrap_or_default();
    let snapshot_id = match &last_log_id {
        Some(id) => format!("{}-{}-{}", id.leader_id.term, id.leader_id.node_id, id.index),
        None => "empty".to_string(),
    };
    let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
    snapshot::save_streamed(&store.snapshot_dir, snapshot::Origin::Build, &meta, |out| {
        let mut w = snapshot::Writer::new(out)?;
        for cf in STATE_CFS {
            for item in snap.iterator_cf(store.cf(cf), IteratorMode::Start) {
                let (k, v) = item.map_err(std::io::Error::other)?;
                w.record(cf, &k, &v)?;
            }
        }
        w.finish().map(|_| ())
    })
    .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
    Ok(meta)
}

impl<C: StoreConfig> RaftStateMachine<C> for StateMachine<C> {
    type SnapshotBuilder = SnapshotBuilder<C>;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, Membership<C>), StorageError<u64>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    #[instrument(level = "trace", skip_all)]
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<C::R>, StorageError<u64>>
    where
        I: IntoIterator<Item = openraft::Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut tx = Transaction::new(&self.store);
        let mut responses = Vec::new();
        let mut last_applied = self.last_applied;
        let mut membership = None;
        for entry in entries {
            let log_id = *entry.get_log_id();
            last_applied = Some(log_id);
            responses.push(match &entry.payload {
                EntryPayload::Normal(cmd) => C::apply(cmd, &log_id, &mut tx),
                EntryPayload::Blank => C::empty_response(log_id.index),
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(log_id), m.clone()));
                    C::empty_response(log_id.index)
                }
            });
        }
        if let Some(m) = &membership {
            tx.put(Cf::Meta, KEY_MEMBERSHIP, encode(m));
        }
        tx.put(Cf::Meta, KEY_APPLIED, encode(&last_applied));
        let changed = tx.changed_keys();
        let everything = tx.everything;
        // Not synced: the log is durable, and after a crash Raft re-applies from the persisted
        // last-applied id. Data and that id are in one batch, so nothing is applied twice.
        let batch = tx.into_batch().map_err(|e| StorageIOError::read_state_machine(&e))?;
        let index = last_applied.map_or(0, |id| id.index);
        // A committed entry takes effect only once it is on a majority's disks: on the leader
        // that may not be so yet for its own newest entries (see `wal_sync`). Built meanwhile,
        // the batch is written once they are.
        self.unsynced.wait_synced(index).await.map_err(|e| StorageIOError::write_logs(&std::io::Error::other(e)))?;
        self.store.db.write(batch).map_err(|e| StorageIOError::write_state_machine(&e))?;
        if everything {
            self.store.notify(&Applied::Everything { index });
        } else if !changed.is_empty() {
            self.store.notify(&Applied::Keys { index, keys: &changed });
        }
        self.published_applied(index);
        self.last_applied = last_applied;
        if let Some(m) = membership {
            self.membership = m;
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { store: self.store.clone(), _c: PhantomData }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    #[instrument(level = "info", skip(self, snapshot), fields(snapshot = %meta))]
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, C::Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let store = self.store.clone();
        let owned_meta = meta.clone();
        tokio::task::spawn_blocking(move || install::<C>(&store, &owned_meta, &data))
            .await
            .map_err(|e| StorageIOError::write_state_machine(&e))??;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let index = meta.last_log_id.map_or(0, |id| id.index);
        self.store.notify(&Applied::Everything { index });
        self.published_applied(index);
        tracing::info!("installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError<u64>> {
        let loaded = snapshot::load(&self.store.snapshot_dir).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(loaded.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

/// Replaces the whole state with a snapshot's, in one synced batch, then keeps the snapshot
/// file so this node can serve it onwards.
fn install<C: StoreConfig>(
    store: &Store,
    meta: &SnapshotMeta<u64, C::Node>,
    data: &[u8],
) -> Result<(), StorageError<u64>> {
    let sig = Some(meta.signature());
    let bad = |e: String| StorageError::from(StorageIOError::read_snapshot(sig.clone(), &std::io::Error::other(e)));
    let records = snapshot::parse(data).map_err(bad)?;
    let mut batch = WriteBatch::default();
    for cf in STATE_CFS {
        for item in store.db.iterator_cf(store.cf(cf), IteratorMode::Start) {
            let (k, _) = item.map_err(|e| StorageIOError::read_state_machine(&e))?;
            batch.delete_cf(store.cf(cf), k);
        }
    }
    for (cf, k, v) in records {
        batch.put_cf(store.cf(cf), k, v);
    }
    batch.put_cf(store.cf(Cf::Meta), KEY_APPLIED, encode(&meta.last_log_id));
    batch.put_cf(store.cf(Cf::Meta), KEY_MEMBERSHIP, encode(&meta.last_membership));
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    store.db.write_opt(batch, &opts).map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
    snapshot::save(&store.snapshot_dir, snapshot::Origin::Install, meta, data)
        .map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two bounded range deletes in one transaction take what one each would take in two
    /// transactions: a node that applies two retention entries in one `apply` call must delete
    /// what a node applying them one by one does.
    #[test]
    fn bounded_range_deletes_give_the_same_result_however_they_are_grouped() {
        let keys = |store: &Store| -> Vec<Vec<u8>> {
            store.db.iterator_cf(store.cf(Cf::Audit), IteratorMode::Start).map(|i| i.unwrap().0.to_vec()).collect()
        };
        let fill = |store: &Store| {
            for i in 0..10u8 {
                store.db.put_cf(store.cf(Cf::Audit), [b'o', b'/', b'0' + i], [i]).unwrap();
            }
        };
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (grouped, apart) = (
            Store::open(one.path(), None, crate::DirectIo::Auto).unwrap(),
            Store::open(two.path(), None, crate::DirectIo::Auto).unwrap(),
        );
        fill(&grouped);
        fill(&apart);
        // Odd values are spared; a key written in the transaction counts as it was written.
        let even = |v: &[u8]| v.first().is_some_and(|b| b % 2 == 0);
        let mut tx = Transaction::new(&grouped);
        tx.put(Cf::Audit, b"o/05".to_vec(), vec![8]);
        assert_eq!(tx.delete_between(Cf::Audit, b"o/", b"o/9", 2, even).unwrap(), 2);
        assert_eq!(tx.delete_between(Cf::Audit, b"o/", b"o/9", 2, even).unwrap(), 2);
        grouped.db.write(tx.into_batch().unwrap()).unwrap();
        for round in 0..2 {
            let mut tx = Transaction::new(&apart);
            if round == 0 {
                tx.put(Cf::Audit, b"o/05".to_vec(), vec![8]);
            }
            tx.delete_between(Cf::Audit, b"o/", b"o/9", 2, even).unwrap();
            apart.db.write(tx.into_batch().unwrap()).unwrap();
        }
        assert_eq!(keys(&grouped), keys(&apart));
        let left: Vec<&[u8]> = vec![b"o/1", b"o/3", b"o/5", b"o/6", b"o/7", b"o/8", b"o/9"];
        assert_eq!(keys(&grouped), left, "o/0, o/05, o/2 and o/4 went: the first four even ones");
    }
}
