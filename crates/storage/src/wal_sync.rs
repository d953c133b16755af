//! Syncing the write-ahead log off the Raft core, and the leader's log writes that Raft is told
//! about before they are synced.
//!
//! openraft 0.9 waits for the log store's flush callback before it sends an entry to the
//! followers, so on a leader the entry's fsync and the followers' round trip ran in series. The
//! Raft thesis (§10.2.1) lets the leader write its log in parallel with replicating it, as long
//! as nothing treats an entry as committed until a majority has it on disk. Here the leader's
//! own entries are acknowledged as soon as they are written (readable, in the page cache) and
//! synced right after; until the sync covers them they are *unsynced*, and nothing on any node
//! acts on their commit:
//!
//! - the state machine applies no entry at or after the first unsynced one (so no reply, no
//!   read barrier and no snapshot on the leader sees it; [`Unsynced::wait_synced`]);
//! - the commit index the leader sends its followers stops short of the first unsynced entry
//!   (`arca_raft`'s network clamps it), so no follower applies one either.
//!
//! openraft may count the leader towards a quorum a moment early; the commit it computes takes
//! effect only once the leader's copy is on disk too, which is a majority of 3 with the
//! follower that acknowledged it. A leader that dies before its sync loses the entry as any
//! uncommitted one: nobody applied it, and nobody was answered.
//!
//! Followers' entries are still acknowledged only after their sync: their answer is what the
//! leader counts. Every sync covers every write before it (one WAL, written in order), so a
//! synced vote or truncation also makes earlier entries durable.

use std::sync::{Arc, Condvar, Mutex, Weak};

use openraft::LogId;
use rocksdb::DB;
use tokio::sync::watch;

/// Called once the write it waits for is synced, with the sync's result.
type Callback = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// What waits for the next sync.
enum Waiter {
    /// A follower's append (or a leader's before its leadership is established): Raft hears
    /// of it only once it is durable.
    Callback(Callback),
    /// A leader's append already acknowledged: the index of its first entry, the id of its
    /// last.
    Early(u64, LogId<u64>),
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    stop: bool,
    /// The thread died (panicked): nothing queued from now on would ever be synced.
    dead: bool,
}

/// The state the rest of the node sees: the first log index written and acknowledged but not
/// synced yet, if any, or why a sync failed (then nothing further may apply: fail-stop, as
/// after any lost write).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnsyncedState {
    pub from: Option<u64>,
    /// The last entry acknowledged early whose sync is done: a true log id of this leader's
    /// log to name as a commit index while later ones sync.
    pub synced_last: Option<LogId<u64>>,
    pub failed: Option<String>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    state: watch::Sender<UnsyncedState>,
}

impl Shared {
    /// The queue, also after a panic while it was held (`FailOnPanic` must still reach it).
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The node's WAL syncer: one thread that syncs whatever was written since its last sync, so
/// appends that arrive during a sync share the next one.
pub(crate) struct WalSync {
    shared: Arc<Shared>,
}

impl WalSync {
    /// Starts the syncer of `db`. It holds the database only while syncing, so dropping the
    /// store closes it; dropping the last `WalSync` stops the thread.
    pub(crate) fn start(db: &Arc<DB>) -> std::io::Result<Arc<WalSync>> {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            wake: Condvar::new(),
            state: watch::Sender::new(UnsyncedState::default()),
        });
        let (db, thread_shared) = (Arc::downgrade(db), shared.clone());
        std::thread::Builder::new().name("arca-wal-sync".into()).spawn(move || run(db, thread_shared))?;
        Ok(Arc::new(WalSync { shared }))
    }

    /// Calls `done` once everything written so far is synced.
    pub(crate) fn after_sync(&self, done: Callback) {
        self.push(Waiter::Callback(done));
    }

    /// Records that entries `first..=last` are written and acknowledged, and not synced.
    pub(crate) fn acknowledged_early(&self, first: u64, last: LogId<u64>) {
        // Marked unsynced before Raft hears of the entries, and under the queue lock together
        // with queueing them: the syncer recomputes `from` from the queue under that lock, and
        // a sync ending between the two would otherwise clear the mark of entries it did not
        // cover. With the thread dead, the state already says the log failed: nothing applies.
        // Nobody waits for entries to become unsynced (readers look when they need to), so
        // this wakes no one.
        let queue = self.lock();
        self.shared.state.send_if_modified(|s| {
            s.from = Some(s.from.map_or(first, |f| f.min(first)));
            false
        });
        self.push_locked(queue, Waiter::Early(first, last));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.shared.lock()
    }

    fn push(&self, waiter: Waiter) {
        self.push_locked(self.lock(), waiter);
    }

    fn push_locked(&self, mut queue: std::sync::MutexGuard<'_, Queue>, waiter: Waiter) {
        if queue.dead {
            drop(queue);
            if let Waiter::Callback(done) = waiter {
                done(Err(std::io::Error::other(SYNCER_DIED)));
            }
            return;
        }
        queue.waiting.push(waiter);
        self.shared.wake.notify_one();
    }

    pub(crate) fn unsynced(&self) -> Unsynced {
        Unsynced(self.shared.state.subscribe(), None)
    }
}

impl Drop for WalSync {
    fn drop(&mut self) {
        self.lock().stop = true;
        self.shared.wake.notify_one();
    }
}

const SYNCER_DIED: &str = "the thread syncing the Raft log panicked; restart the node";

/// Fails everything still waiting if the syncer thread panics, rather than leave Raft waiting
/// for a sync that never comes (fail-stop, as after a failed sync).
struct FailOnPanic(Arc<Shared>);

impl Drop for FailOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let waiting = {
            let mut queue = self.0.lock();
            queue.dead = true;
            self.0.state.send_modify(|s| {
                s.failed.get_or_insert_with(|| SYNCER_DIED.to_string());
            });
            std::mem::take(&mut queue.waiting)
        };
        for w in waiting {
            if let Waiter::Callback(done) = w {
                done(Err(std::io::Error::other(SYNCER_DIED)));
            }
        }
    }
}

fn run(db: Weak<DB>, shared: Arc<Shared>) {
    let _failsafe = FailOnPanic(shared.clone());
    loop {
        let waiting = {
            let mut queue = shared.lock();
            while queue.waiting.is_empty() && !queue.stop {
                queue = shared.wake.wait(queue).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if queue.waiting.is_empty() {
                return;
            }
            std::mem::take(&mut queue.waiting)
        };
        // Everything the waiters wrote was written before they queued, so this sync covers it.
        let result = match db.upgrade() {
            Some(db) => db.flush_wal(true).map_err(|e| e.to_string()),
            None => Err("the store was closed before its log was synced".to_string()),
        };
        {
            // Under the queue lock: an early acknowledgement queued meanwhile is not synced yet,
            // and must stay visible as such.
            let queue = shared.lock();
            let still = queue.waiting.iter().filter_map(|w| match w {
                Waiter::Early(first, _) => Some(*first),
                Waiter::Callback(_) => None,
            });
            let from = still.min();
            // The last acknowledged, in the order they were: the newest leadership's.
            let synced_last = waiting.iter().rev().find_map(|w| match w {
                Waiter::Early(_, last) => Some(*last),
                Waiter::Callback(_) => None,
            });
            // Waiters care about entries becoming synced and about a failure; a follower's
            // syncs change neither, and wake no one.
            shared.state.send_if_modified(|s| match &result {
                Ok(()) => {
                    s.synced_last = synced_last.or(s.synced_last);
                    std::mem::replace(&mut s.from, from) != from
                }
                Err(e) => {
                    let first = s.failed.is_none();
                    s.failed.get_or_insert_with(|| format!("syncing the Raft log failed: {e}"));
                    first
                }
            });
        }
        for w in waiting {
            if let Waiter::Callback(done) = w {
                done(result.clone().map_err(std::io::Error::other));
            }
        }
    }
}

/// A view of the leader's unsynced log entries (see the module documentation).
#[derive(Clone)]
pub struct Unsynced(
    watch::Receiver<UnsyncedState>,
    /// The sender of a fixed view (`Unsynced::fixed`), kept open with it; `None` for the
    /// syncer's, whose thread owns the sender.
    #[allow(dead_code)]
    Option<Arc<watch::Sender<UnsyncedState>>>,
);

impl Unsynced {
    /// The last of this leader's entries acknowledged early and synced since (see
    /// [`UnsyncedState::synced_last`]).
    pub fn synced_last(&self) -> Option<LogId<u64>> {
        self.0.borrow().synced_last
    }

    /// The highest commit index others may act on given `commit`: below the first unsynced
    /// entry. `None` when a sync failed (nothing more is to be trusted from this log).
    pub fn bound(&self, commit: u64) -> Option<u64> {
        let s = self.0.borrow();
        if s.failed.is_some() {
            return None;
        }
        Some(match s.from {
            Some(from) => commit.min(from.saturating_sub(1)),
            None => commit,
        })
    }

    /// Waits until every entry up to `index` is synced; fails if a sync failed.
    pub async fn wait_synced(&mut self, index: u64) -> Result<(), String> {
        let state = self
            .0
            .wait_for(|s| s.failed.is_some() || s.from.is_none_or(|from| from > index))
            .await
            .map_err(|_| "the log syncer stopped".to_string())?;
        match &state.failed {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    /// Waits for the next change that matters to a waiter (entries synced, a sync failed).
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

impl Unsynced {
    /// A fixed view, for tests of what reads it (the commit index a leader sends).
    #[doc(hidden)]
    pub fn fixed(from: Option<u64>, synced_last: Option<LogId<u64>>, failed: Option<String>) -> Unsynced {
        let (tx, rx) = watch::channel(UnsyncedState { from, synced_last, failed });
        // Kept open with the view: a closed channel would read as a stopped syncer.
        Unsynced(rx, Some(Arc::new(tx)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn db(dir: &std::path::Path) -> Arc<DB> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        Arc::new(DB::open(&opts, dir).unwrap())
    }

    /// The bound a leader's commit index is held to, and what applying waits for.
    #[tokio::test]
    async fn entries_from_the_first_unsynced_one_are_held_back() {
        let held = Unsynced::fixed(Some(5), None, None);
        assert_eq!(held.bound(10), Some(4), "commit stops before the first unsynced entry");
        assert_eq!(held.bound(3), Some(3), "a commit below it is untouched");
        let mut waiting = held.clone();
        assert!(waiting.wait_synced(4).await.is_ok(), "entries before it may apply");
        let blocked = tokio::time::timeout(Duration::from_millis(50), waiting.wait_synced(5)).await;
        assert!(blocked.is_err(), "an unsynced entry must not apply");

        let failed = Unsynced::fixed(None, None, Some("disk gone".into()));
        assert_eq!(failed.bound(10), None, "after a failed sync no commit index is vouched for");
        assert!(failed.clone().wait_synced(1).await.unwrap_err().contains("disk gone"));
    }

    /// A syncer thread that dies fails closed: the log is marked failed (nothing applies, no
    /// commit index is vouched for) and a waiter queued afterwards hears so at once instead of
    /// waiting forever (openraft waits for its flush callback without a deadline).
    #[test]
    fn a_syncer_that_dies_fails_every_later_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let syncer = WalSync::start(&db).unwrap();
        let shared = syncer.shared.clone();
        let died = std::thread::spawn(move || {
            let _failsafe = FailOnPanic(shared);
            panic!("a simulated fault in the syncer");
        });
        assert!(died.join().is_err());
        let (tx, rx) = std::sync::mpsc::channel();
        syncer.after_sync(Box::new(move |r| tx.send(r.map_err(|e| e.to_string())).unwrap()));
        let heard = rx.recv_timeout(Duration::from_secs(1)).expect("answered at once");
        assert!(heard.unwrap_err().contains("panicked"));
        assert_eq!(syncer.unsynced().bound(1), None);
    }

    /// An early acknowledgement holds entries back until the syncer has synced them; a
    /// callback runs after a sync; a sync that cannot happen fails every waiter (fail-stop).
    #[tokio::test]
    async fn the_syncer_releases_entries_once_synced_and_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path());
        let syncer = WalSync::start(&db).unwrap();
        let mut unsynced = syncer.unsynced();
        let id = |index| LogId::new(openraft::CommittedLeaderId::new(2, 1), index);
        syncer.acknowledged_early(7, id(8));
        // Either still unsynced, or synced already: never a bound past 6 before the sync.
        assert!(matches!(unsynced.bound(9), Some(6) | Some(9)));
        tokio::time::timeout(Duration::from_secs(5), unsynced.wait_synced(9)).await.unwrap().unwrap();
        assert_eq!(unsynced.bound(9), Some(9));
        assert_eq!(unsynced.synced_last(), Some(id(8)), "the last entry synced is named");
        let (tx, rx) = tokio::sync::oneshot::channel();
        syncer.after_sync(Box::new(move |r| {
            let _ = tx.send(r.is_ok());
        }));
        assert!(tokio::time::timeout(Duration::from_secs(5), rx).await.unwrap().unwrap());

        // The database gone before the sync (the store closed): nothing may apply after it.
        drop(db);
        syncer.acknowledged_early(10, id(10));
        let err = tokio::time::timeout(Duration::from_secs(5), unsynced.wait_synced(10)).await.unwrap();
        assert!(err.unwrap_err().contains("syncing the Raft log failed"));
        assert_eq!(unsynced.bound(9), None);
    }
}
