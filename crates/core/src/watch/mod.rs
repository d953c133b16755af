//! Watch: a feed of committed changes to secrets, for clients that cache them.
//!
//! Every node keeps its own feed, filled at apply time by a storage observer, so a watcher is
//! served by whichever member it is connected to and a leader change does not touch it. Events
//! are numbered by the Raft log index that produced them: the same number on every member, so a
//! client that reconnects elsewhere resumes with "everything after N" and misses nothing.
//!
//! Events never carry values: a path, a version and what happened. The feed is a bounded ring;
//! a watcher that asks for a position the ring no longer holds (it was away too long, or the
//! node restarted or installed a snapshot since) gets a `Reset` first: "drop everything you
//! cached", which is always safe.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arca_storage::{Applied, Cf, ChangedKey, StateReader};
use tokio::sync::{mpsc, watch};
use tracing::debug;
use zeroize::Zeroizing;

use crate::audit::AuditContext;
use crate::token::Caller;
use crate::{kv, Error, Operation, Result};

/// Watch streams: the `Core` side, re-authorizing every event for its own path.
mod stream;

/// Changes a node remembers for watchers that reconnect.
pub const FEED_CAPACITY: usize = 65_536;
/// A quiet stream still reports its position this often: the client's resume point moves on,
/// and a client that hears nothing for a few of these knows its connection is dead.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// Changes examined per wake-up before the stream yields.
const PAGE: usize = 1024;

/// What a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchKind {
    /// A new version was stored (`version`); rotation's pending versions included.
    Written,
    /// Versions were deleted or destroyed, or the whole secret was removed.
    Deleted,
    /// The metadata changed without new data: a stage label moved (rotation promoted its
    /// pending version), an undelete, a setting.
    Metadata,
    /// The watcher's token was revoked or expired, or lost `read` on a watched prefix (`path`).
    /// The stream ends after this event.
    AccessRevoked,
    /// The node cannot say what changed since the requested position: drop everything cached.
    Reset,
    /// Nothing to report up to `seq`: resume from here.
    Progress,
}

/// One event on a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The Raft log index of the change (or, for `Progress`, the position reached).
    pub seq: u64,
    pub kind: WatchKind,
    /// The secret's path (KV path, without `secret/data/`); the prefix for `AccessRevoked`.
    pub path: String,
    /// The version written or deleted, when the change names one.
    pub version: u64,
    /// The secret's current version once the change applied (0: none, or the secret is gone).
    pub current_version: u64,
}

impl WatchEvent {
    fn at(seq: u64, kind: WatchKind) -> WatchEvent {
        WatchEvent { seq, kind, path: String::new(), version: 0, current_version: 0 }
    }
}

/// What one applied batch changed, as the feed records it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Secret {
        path: String,
        kind: WatchKind,
        version: u64,
    },
    /// A policy changed or a token was removed: watchers re-check their access.
    Access,
    /// A snapshot replaced the state.
    Reset,
}

struct Ring {
    changes: VecDeque<(u64, Change)>,
    /// Every change after this index is in `changes`.
    floor: u64,
    /// The newest applied index seen; changes up to it are in `changes`.
    latest: u64,
}

/// One node's change feed.
pub(crate) struct Feed {
    ring: Mutex<Ring>,
    wake: watch::Sender<u64>,
}

impl Feed {
    /// Starts recording the changes `reader`'s node applies from now on.
    pub(crate) fn start(reader: &StateReader) -> Arc<Feed> {
        let feed = Arc::new(Feed {
            ring: Mutex::new(Ring { changes: VecDeque::new(), floor: u64::MAX, latest: 0 }),
            wake: watch::channel(0).0,
        });
        let observed = Arc::downgrade(&feed);
        reader.observe(Arc::new(move |_: &StateReader, applied: &Applied<'_>| {
            if let Some(feed) = observed.upgrade() {
                feed.record(applied);
            }
        }));
        // Read after the observer is in place: whatever applied before this index is not in the
        // ring, whatever applies after it is.
        let start = reader.applied_index().unwrap_or(0);
        {
            let mut ring = feed.ring.lock().expect("feed lock");
            ring.floor = ring.floor.min(start);
            ring.latest = ring.latest.max(start);
        }
        feed
    }

    fn record(&self, applied: &Applied<'_>) {
        let (index, changes) = match applied {
            Applied::Everything { index } => (*index, vec![Change::Reset]),
            Applied::Keys { index, keys } => (*index, changes_of(keys)),
        };
        let mut ring = self.ring.lock().expect("feed lock");
        if ring.floor == u64::MAX {
            // The first batch after start: the start index is read once the observer is in.
            ring.floor = index.saturating_sub(1);
        }
        ring.latest = ring.latest.max(index);
        // Most batches (audit records, token uses) change nothing a watcher sees: watchers are
        // woken only for those that do. Their position still moves on, with the next event or
        // the periodic progress report.
        if changes.is_empty() {
            return;
        }
        for c in changes {
            ring.changes.push_back((index, c));
        }
        while ring.changes.len() > FEED_CAPACITY {
            if let Some((seq, _)) = ring.changes.pop_front() {
                ring.floor = ring.floor.max(seq);
            }
        }
        drop(ring);
        self.wake.send_replace(index);
    }

    /// Changes after `cursor` (at most `limit`), the floor, and the newest applied index.
    fn after(&self, cursor: u64, limit: usize) -> (Vec<(u64, Change)>, u64, u64) {
        let ring = self.ring.lock().expect("feed lock");
        let start = ring.changes.partition_point(|(seq, _)| *seq <= cursor);
        let page = ring.changes.range(start..).take(limit).cloned().collect();
        (page, ring.floor, ring.latest)
    }

    fn latest(&self) -> u64 {
        self.ring.lock().expect("feed lock").latest
    }
}

/// The feed's view of one batch: per secret, the one change a watcher needs to hear about.
/// Decided from the batch's own keys, without reading the store: this runs on every apply.
fn changes_of(keys: &[ChangedKey]) -> Vec<Change> {
    #[derive(Default)]
    struct Seen {
        written: Option<u64>,
        removed: Option<u64>,
        meta: bool,
        gone: bool,
    }
    let mut secrets: BTreeMap<&str, Seen> = BTreeMap::new();
    let mut access = false;
    for c in keys {
        match c.cf {
            Cf::Kv => {
                let Some((path, version)) = kv::parse_key(&c.key) else { continue };
                let seen = secrets.entry(path).or_default();
                match version {
                    None => {
                        seen.meta = true;
                        seen.gone = c.deleted;
                    }
                    // Data keys are written once: a put is a new version.
                    Some(v) if !c.deleted => seen.written = seen.written.max(Some(v)),
                    Some(v) => seen.removed = seen.removed.max(Some(v)),
                }
            }
            Cf::Sys => access |= crate::policy::store::is_policy_key(&c.key),
            // A token created, renewed or used changes nothing for watchers; one removed
            // (revoked, expired and purged, used up) may be a watcher's.
            Cf::Tokens => access |= c.deleted,
            _ => {}
        }
    }
    let mut out: Vec<Change> = secrets
        .into_iter()
        .filter(|(_, s)| s.meta || s.written.is_some() || s.removed.is_some())
        .map(|(path, s)| {
            let (kind, version) = match (s.gone, s.written, s.removed) {
                (true, _, _) => (WatchKind::Deleted, 0),
                (false, Some(v), _) => (WatchKind::Written, v),
                (false, None, Some(v)) => (WatchKind::Deleted, v),
                (false, None, None) => (WatchKind::Metadata, 0),
            };
            Change::Secret { path: path.to_string(), kind, version }
        })
        .collect();
    if access {
        out.push(Change::Access);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(cf: Cf, key: Vec<u8>) -> ChangedKey {
        ChangedKey { cf, key, deleted: false }
    }

    fn del(cf: Cf, key: Vec<u8>) -> ChangedKey {
        ChangedKey { cf, key, deleted: true }
    }

    fn secret(path: &str, kind: WatchKind, version: u64) -> Change {
        Change::Secret { path: path.into(), kind, version }
    }

    #[test]
    fn a_batch_becomes_one_change_per_secret() {
        let batch = [
            // A new version (which pruned an old one) of app/db.
            put(Cf::Kv, kv::data_key("app/db", 3)),
            del(Cf::Kv, kv::data_key("app/db", 1)),
            put(Cf::Kv, kv::meta_key("app/db")),
            // A stage label moved on app/rot: metadata only.
            put(Cf::Kv, kv::meta_key("app/rot")),
            // A destroyed version of app/old.
            del(Cf::Kv, kv::data_key("app/old", 2)),
            put(Cf::Kv, kv::meta_key("app/old")),
            // app/gone removed for good.
            del(Cf::Kv, kv::data_key("app/gone", 1)),
            del(Cf::Kv, kv::meta_key("app/gone")),
            // Noise: an audit record, a new token.
            put(Cf::Audit, b"r/00000001".to_vec()),
            put(Cf::Tokens, b"t/abc".to_vec()),
        ];
        assert_eq!(
            changes_of(&batch),
            vec![
                secret("app/db", WatchKind::Written, 3),
                secret("app/gone", WatchKind::Deleted, 0),
                secret("app/old", WatchKind::Deleted, 2),
                secret("app/rot", WatchKind::Metadata, 0),
            ]
        );
    }

    #[test]
    fn access_changes_are_policy_writes_and_removed_tokens() {
        assert_eq!(changes_of(&[put(Cf::Sys, b"policy/app".to_vec())]), vec![Change::Access]);
        assert_eq!(changes_of(&[del(Cf::Tokens, b"t/abc".to_vec())]), vec![Change::Access]);
        assert!(
            changes_of(&[put(Cf::Tokens, b"t/abc".to_vec()), put(Cf::Sys, b"auth/approle/role/x".to_vec())]).is_empty()
        );
    }
}
