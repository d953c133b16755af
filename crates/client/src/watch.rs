//! [`Watcher`]: the cluster's change stream, resumed across reconnects without a gap.

use std::time::Duration;

use arca_proto as proto;
use tonic::Code;
use tracing::{debug, warn};

use crate::{Client, Error, Result};

/// The server reports progress every 5 s on a quiet stream; this much silence means the
/// connection is dead even if TCP has not noticed.
const SILENCE_LIMIT: Duration = Duration::from_secs(15);

/// What a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WatchKind {
    /// A new version was written (by a client or a rotation).
    Written,
    /// Versions were deleted, undeleted or destroyed.
    Deleted,
    /// The metadata changed (max versions, stage labels).
    Metadata,
    /// The token lost `read` on the path: the stream ends; the watcher reconnects on the next
    /// call, which fails if the access is really gone.
    AccessRevoked,
    /// The member cannot tell what happened since the position asked for (it was compacted
    /// away): reread what you hold.
    Reset,
    /// Nothing changed; the stream's position moved (sent every few seconds on a quiet stream).
    Progress,
}

impl WatchKind {
    fn from_wire(kind: i32) -> Option<WatchKind> {
        use proto::watch_event::Kind as K;
        Some(match K::try_from(kind).ok()? {
            K::Written => WatchKind::Written,
            K::Deleted => WatchKind::Deleted,
            K::Metadata => WatchKind::Metadata,
            K::AccessRevoked => WatchKind::AccessRevoked,
            K::Reset => WatchKind::Reset,
            K::Progress => WatchKind::Progress,
            K::Unspecified => return None,
        })
    }

    /// The kind's name on the wire (`WRITTEN`, `ACCESS_REVOKED`, …), as tools print it.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchKind::Written => "WRITTEN",
            WatchKind::Deleted => "DELETED",
            WatchKind::Metadata => "METADATA",
            WatchKind::AccessRevoked => "ACCESS_REVOKED",
            WatchKind::Reset => "RESET",
            WatchKind::Progress => "PROGRESS",
        }
    }
}

/// One change (never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The change's Raft log index: the same on every member.
    pub seq: u64,
    pub kind: WatchKind,
    pub path: String,
    pub version: u64,
    pub current_version: u64,
}

impl WatchEvent {
    fn from_proto(e: proto::WatchEvent) -> Option<WatchEvent> {
        let kind = WatchKind::from_wire(e.kind)?;
        Some(WatchEvent { seq: e.seq, kind, path: e.path, version: e.version, current_version: e.current_version })
    }
}

/// A watch of some prefixes. [`Watcher::next`] yields events in order; when the member it is
/// connected to goes away, it reconnects to the next one and resumes after the last position
/// seen, so no event is missed (or, if that member cannot tell, a `Reset` says so).
pub struct Watcher {
    client: Client,
    prefixes: Vec<String>,
    after: Option<u64>,
    stream: Option<(usize, tonic::Streaming<proto::WatchEvent>)>,
    reconnects: u64,
}

impl Client {
    /// Opens a watch of the secrets under `prefixes` (the token needs `read` on them), from
    /// now on.
    pub async fn watch<S: Into<String>>(&self, prefixes: impl IntoIterator<Item = S>) -> Result<Watcher> {
        self.watch_after(prefixes, None).await
    }

    /// Like [`Client::watch`], resuming after `after`: a [`Watcher::position`] an earlier watch
    /// reached (`None`: from now on).
    pub async fn watch_after<S: Into<String>>(
        &self,
        prefixes: impl IntoIterator<Item = S>,
        after: Option<u64>,
    ) -> Result<Watcher> {
        let mut w = Watcher {
            client: self.clone(),
            prefixes: prefixes.into_iter().map(Into::into).collect(),
            after,
            stream: None,
            reconnects: 0,
        };
        w.connect().await?;
        Ok(w)
    }
}

impl Watcher {
    /// The last position seen: events up to it have been delivered.
    pub fn position(&self) -> Option<u64> {
        self.after
    }

    /// How often the stream was re-established.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    async fn connect(&mut self) -> Result<()> {
        let req = proto::WatchRequest { prefixes: self.prefixes.clone(), after_seq: self.after };
        let client = self.client.clone();
        // Through `call`: failover on UNAVAILABLE and a new login on UNAUTHENTICATED.
        let stream = client.send(req, |mut s, r| async move { s.watch.watch(r).await }).await?;
        self.stream = Some((self.client.current_index(), stream));
        Ok(())
    }

    /// The next event. Reconnects (bounded by the client's retry policy per attempt) when the
    /// stream breaks; fails when the server refuses the watch.
    pub async fn next(&mut self) -> Result<WatchEvent> {
        loop {
            let Some((member, stream)) = self.stream.as_mut() else {
                self.connect().await?;
                continue;
            };
            let member = *member;
            let broke = match tokio::time::timeout(SILENCE_LIMIT, stream.message()).await {
                Ok(Ok(Some(e))) => {
                    let Some(event) = WatchEvent::from_proto(e) else { continue };
                    self.after = Some(self.after.map_or(event.seq, |a| a.max(event.seq)));
                    if event.kind == WatchKind::AccessRevoked {
                        self.stream = None;
                    }
                    return Ok(event);
                }
                Ok(Ok(None)) => "the member ended the stream".to_string(),
                Ok(Err(s)) if matches!(s.code(), Code::PermissionDenied | Code::InvalidArgument) => {
                    self.stream = None;
                    return Err(Error::WatchEnded(s.message().to_string()));
                }
                Ok(Err(s)) => format!("{:?}: {}", s.code(), s.message()),
                Err(_) => format!("no message for {SILENCE_LIMIT:?}"),
            };
            warn!(member = %self.client.current_member(), reason = %broke, after = ?self.after, "watch stream broke; resuming on another member");
            self.stream = None;
            self.reconnects += 1;
            if self.client.member_count() > 1 {
                self.client.fail_over_from(member);
            } else {
                tokio::time::sleep(crate::client::jitter(self.client.retry_policy().initial_backoff)).await;
            }
            debug!(to = %self.client.current_member(), "reconnecting the watch");
        }
    }
}

impl crate::Client {
    /// A [`crate::SecretCache`] over this client. With `config.watch` prefixes, a background
    /// watch drops changed entries at once; it runs until the cache is dropped, reconnecting
    /// as needed (while it cannot, entries still expire by TTL).
    pub fn secret_cache(&self, config: crate::CacheConfig) -> Result<crate::SecretCache> {
        let prefixes = config.watch.clone();
        let cache = crate::SecretCache::new(self.clone(), config)?;
        if !prefixes.is_empty() {
            let (client, weak) = (self.clone(), cache.downgrade());
            cache.set_watcher(tokio::spawn(async move {
                let mut backoff = client.retry_policy().initial_backoff;
                loop {
                    match client.watch(prefixes.clone()).await {
                        Ok(mut watcher) => loop {
                            match watcher.next().await {
                                Ok(event) => {
                                    let Some(cache) = crate::SecretCache::upgrade(&weak) else { return };
                                    cache.apply(&event);
                                    backoff = client.retry_policy().initial_backoff;
                                }
                                Err(e) => {
                                    warn!(error = %e, "the cache's watch ended; entries expire by TTL until it is back");
                                    break;
                                }
                            }
                        },
                        Err(e) => warn!(error = %e, "the cache cannot watch; entries expire by TTL until it can"),
                    }
                    let Some(cache) = crate::SecretCache::upgrade(&weak) else { return };
                    // Whatever happened while not watching is unknown.
                    cache.clear();
                    drop(cache);
                    tokio::time::sleep(crate::client::jitter(backoff)).await;
                    backoff = (backoff * 2).min(client.retry_policy().max_backoff);
                }
            }));
        }
        Ok(cache)
    }
}
