use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogId, RaftLogReader, StorageError, StorageIOError, Vote,
};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::instrument;

use crate::wal_sync::{Unsynced, WalSync};
use crate::{Cf, Store, StoreConfig};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("in-memory Raft types always serialise")
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(bytes)
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

/// The Raft log and Raft's durable variables. Clones share the database and act as log readers.
pub struct LogStore<C> {
    store: Store,
    syncer: Arc<WalSync>,
    /// This node's id, when the store may acknowledge its own entries as leader before they
    /// are synced (see `wal_sync`); `None` syncs every append before acknowledging it.
    me: Option<u64>,
    /// The vote last saved or read: whose term the entries being appended belong to.
    vote: Option<Vote<u64>>,
    _c: PhantomData<fn() -> C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            store: self.store.clone(),
            syncer: self.syncer.clone(),
            me: self.me,
            vote: self.vote,
            _c: PhantomData,
        }
    }
}

impl<C: StoreConfig> LogStore<C> {
    pub(crate) fn new(store: Store, syncer: Arc<WalSync>, me: Option<u64>) -> Self {
        LogStore { store, syncer, me, vote: None, _c: PhantomData }
    }

    /// The leader's entries written and acknowledged but not synced yet: the state machine
    /// applies none of them, and the commit index sent to followers stops before them.
    pub fn unsynced(&self) -> Unsynced {
        self.syncer.unsynced()
    }

    /// This node's id and term while it is the established leader of that term: its own
    /// entries of the term are acknowledged before their sync.
    fn leading(&self) -> Option<(u64, u64)> {
        let (me, vote) = (self.me?, self.vote?);
        (vote.is_committed() && vote.leader_id().voted_for() == Some(me)).then_some((me, vote.leader_id().term))
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError<u64>> {
        let Some(bytes) = self.store.db.get_cf(self.store.cf(Cf::Raft), key).map_err(|e| StorageIOError::read(&e))?
        else {
            return Ok(None);
        };
        decode(&bytes).map(Some).map_err(|e| StorageIOError::read(&e).into())
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError<u64>> {
        self.store
            .db
            .put_cf_opt(self.store.cf(Cf::Raft), key, encode(value), &synced())
            .map_err(|e| StorageIOError::write(&e).into())
    }

    fn last_log_id(&self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let mut it = self.store.db.iterator_cf(self.store.cf(Cf::Logs), IteratorMode::End);
        match it.next() {
            None => Ok(None),
            Some(item) => {
                let (_, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let entry: Entry<C> = decode(&v).map_err(|e| StorageIOError::read_logs(&e))?;
                Ok(Some(*entry.get_log_id()))
            }
        }
    }

    /// Deletes every entry with index in `[from, to)` in one batch.
    fn delete_range(&self, from: u64, to: u64, opts: &WriteOptions) -> Result<(), rocksdb::Error> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.store.cf(Cf::Logs), index_key(from), index_key(to));
        self.store.db.write_opt(batch, opts)
    }
}

impl<C: StoreConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let iter = self
            .store
            .db
            .iterator_cf(self.store.cf(Cf::Logs), IteratorMode::From(&index_key(start), Direction::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index =
                u64::from_be_bytes(k.as_ref().try_into().map_err(|_| {
                    StorageIOError::read_logs(&std::io::Error::other("log key is not an 8-byte index"))
                })?);
            if !range.contains(&index) {
                break;
            }
            let entry: Entry<C> = decode(&v).map_err(|e| StorageIOError::read_log_at_index(index, &e))?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl<C: StoreConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<u64>> {
        let last_purged_log_id: Option<LogId<u64>> = self.get_meta(KEY_PURGED)?;
        let last_log_id = self.last_log_id()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    #[instrument(level = "debug", skip(self))]
    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        // Synced: a node that forgets its vote after a crash can vote twice in one term.
        self.put_meta(KEY_VOTE, vote)?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        // (openraft reads the vote once, at startup.) A node that led when it stopped does not
        // resume leading in the same term: it may have lost entries it acknowledged before
        // syncing them (power loss), and new entries of its own under the same log ids would
        // pass for them on a follower that kept the old ones. Uncommitted, its vote makes it a
        // candidate for a new term, whose entries overwrite whatever is left of the old ones.
        let saved: Option<Vote<u64>> = self.get_meta(KEY_VOTE)?;
        self.vote = saved.map(|v| match self.me {
            Some(me) if v.is_committed() && v.leader_id().voted_for() == Some(me) => Vote::new(v.leader_id().term, me),
            _ => v,
        });
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        // Not synced: losing it only means re-applying from the last applied id after a crash.
        self.store
            .db
            .put_cf(self.store.cf(Cf::Raft), KEY_COMMITTED, encode(&committed))
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.get_meta::<Option<LogId<u64>>>(KEY_COMMITTED)?.flatten())
    }

    #[instrument(level = "trace", skip_all)]
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.store.cf(Cf::Logs);
        let mut batch = WriteBatch::default();
        let leading = self.leading();
        let (mut own, mut first, mut last) = (leading.is_some(), None, None);
        for entry in entries {
            let id = *entry.get_log_id();
            // Not a membership change: openraft proposes the next one once it deems this one
            // committed, and joint consensus needs that to be true on disk, not only in memory.
            own &= leading.is_some_and(|(me, term)| {
                id.leader_id.term == term
                    && id.leader_id.node_id == me
                    && !matches!(entry.payload, EntryPayload::Membership(_))
            });
            first.get_or_insert(id.index);
            last = Some(id);
            batch.put_cf(cf, index_key(id.index), encode(&entry));
        }
        let (Some(first), Some(last)) = (first, last) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        // Written (readable) now; durable once the WAL is synced, which the syncer thread does
        // off the async workers (an fsync takes milliseconds to tens of milliseconds, and a
        // worker blocked on it stalls every request it would have served). RocksDB orders
        // writes, so a later truncate or append cannot overtake this one, and a sync covers
        // every write before it.
        if let Err(e) = self.store.db.write(batch) {
            let e = std::io::Error::other(e);
            let storage_err = StorageIOError::write_logs(&e).into();
            callback.log_io_completed(Err(e));
            return Err(storage_err);
        }
        if own {
            // The leader's own entries: Raft may replicate them now, while they sync; until
            // the sync, nothing applies them and no follower hears they are committed.
            self.syncer.acknowledged_early(first, last);
            callback.log_io_completed(Ok(()));
        } else {
            // Anyone else's: the callback tells Raft they are durable, and a follower's answer
            // counts towards the leader's quorum.
            self.syncer.after_sync(Box::new(move |r| callback.log_io_completed(r)));
        }
        Ok(())
    }

    #[instrument(level = "debug", skip(self))]
    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.delete_range(log_id.index, u64::MAX, &synced()).map_err(|e| StorageIOError::write_logs(&e).into())
    }

    #[instrument(level = "debug", skip(self))]
    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        // State applied from the entries we are about to delete may still sit unsynced in the WAL.
        self.store.db.flush_wal(true).map_err(|e| StorageIOError::write(&e))?;
        // Record the purge point first: if we crash between the two writes, the log state is
        // still consistent (entries at or below it are ignored and purged again).
        self.put_meta(KEY_PURGED, &log_id)?;
        self.delete_range(0, log_id.index + 1, &WriteOptions::default())
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
