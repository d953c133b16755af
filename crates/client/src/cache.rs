//! [`SecretCache`]: short-lived, rotation-aware caching of secrets.
//!
//! A long cache defeats rotation: an application that keeps a database password for a day while
//! rotation fires twice a day starts failing. So entries live seconds to minutes (30 s by
//! default), are refreshed ahead of expiry by a background fetch (hot secrets never block a
//! caller), are dropped within milliseconds when a watch reports a change, and
//! [`SecretCache::with_secret`] fetches again when the credential it handed out is refused.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use tracing::{debug, warn};

use crate::{Error, Result, Secret, WatchEvent, WatchKind, Which};

/// Where a cache gets secrets from: a [`crate::Client`], or anything else that can read them.
pub trait SecretSource: Send + Sync + 'static {
    fn fetch(&self, path: &str, which: Which) -> BoxFuture<'static, Result<Secret>>;
}

impl SecretSource for crate::Client {
    fn fetch(&self, path: &str, which: Which) -> BoxFuture<'static, Result<Secret>> {
        let (client, path) = (self.clone(), path.to_string());
        async move { client.read(&path, which).await }.boxed()
    }
}

/// Longest TTL a cache accepts: beyond it, a cached credential may outlive its rotation.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// How a [`SecretCache`] behaves.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// How long an entry is served without asking the cluster (default 30 s; at most an hour).
    pub ttl: Duration,
    /// A hit this close to expiry starts a background refresh (default 5 s; at most half the
    /// TTL is used).
    pub refresh_ahead: Duration,
    /// Entries kept; the least recently used goes first (default 1000).
    pub max_entries: usize,
    /// When the cluster cannot be reached, an expired entry is still served, with a warning,
    /// for at most this long past its expiry (default 5 min; zero: never).
    pub max_stale: Duration,
    /// Prefixes to watch (with [`crate::Client::secret_cache`]): a change under them drops the
    /// cached entries at once. Empty: TTL only.
    pub watch: Vec<String>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(30),
            refresh_ahead: Duration::from_secs(5),
            max_entries: 1000,
            max_stale: Duration::from_secs(300),
            watch: Vec::new(),
        }
    }
}

struct Entry {
    secret: Secret,
    expires: Instant,
    refresh_at: Instant,
    refreshing: bool,
    last_used: u64,
}

type Fetch = Shared<BoxFuture<'static, Result<Secret>>>;

#[derive(Default)]
struct State {
    /// Per path, its cached selections (usually one: the current version).
    entries: HashMap<String, Vec<(Which, Entry)>>,
    len: usize,
    /// Recency clock for LRU eviction.
    clock: u64,
    /// Bumped by every invalidation: a fetch that started before one does not cache its result.
    epoch: u64,
    inflight: HashMap<(String, Which), Fetch>,
}

impl State {
    fn entry_mut(&mut self, path: &str, which: Which) -> Option<&mut Entry> {
        self.entries.get_mut(path)?.iter_mut().find(|(w, _)| *w == which).map(|(_, e)| e)
    }

    fn insert(&mut self, path: &str, which: Which, entry: Entry, max_entries: usize) {
        let list = self.entries.entry(path.to_string()).or_default();
        match list.iter_mut().find(|(w, _)| *w == which) {
            Some((_, e)) => *e = entry,
            None => {
                list.push((which, entry));
                self.len += 1;
            }
        }
        while self.len > max_entries {
            self.evict_lru();
        }
    }

    /// A linear scan, on inserts beyond the bound only (a miss already cost a round trip).
    fn evict_lru(&mut self) {
        let oldest = self
            .entries
            .iter()
            .flat_map(|(p, list)| list.iter().map(move |(w, e)| (e.last_used, p, *w)))
            .min_by_key(|(used, _, _)| *used)
            .map(|(_, p, w)| (p.clone(), w));
        if let Some((path, which)) = oldest {
            self.remove(&path, Some(which));
        }
    }

    fn remove(&mut self, path: &str, which: Option<Which>) {
        let Some(list) = self.entries.get_mut(path) else { return };
        let before = list.len();
        list.retain(|(w, _)| which.is_some_and(|which| *w != which));
        self.len -= before - list.len();
        if list.is_empty() {
            self.entries.remove(path);
        }
    }
}

/// Counters of what the cache did, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Reads that went to the source (single-flight: one per burst of misses).
    pub fetches: u64,
    /// Background refreshes started ahead of expiry.
    pub refreshes: u64,
    /// Expired entries served because the source failed.
    pub stale_served: u64,
    pub invalidations: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fetches: AtomicU64,
    refreshes: AtomicU64,
    stale_served: AtomicU64,
    invalidations: AtomicU64,
}

pub(crate) struct Inner {
    source: Arc<dyn SecretSource>,
    config: CacheConfig,
    state: Mutex<State>,
    counters: Counters,
    watcher: crate::task::Background,
}

/// A cache of secrets in front of a [`SecretSource`]. Cheap to clone; clones share entries.
#[derive(Clone)]
pub struct SecretCache {
    inner: Arc<Inner>,
}

/// What the closure of [`SecretCache::with_secret`] failed with.
#[derive(Debug)]
pub enum UseError<E> {
    /// The secret was refused downstream (a database said "password authentication failed"):
    /// fetch it again, bypassing the cache, and retry once.
    RetryWithRefresh(E),
    /// Anything else: returned as is.
    Fail(E),
}

/// What [`SecretCache::with_secret`] failed with.
#[derive(Debug, thiserror::Error)]
pub enum WithSecretError<E> {
    /// The secret could not be read.
    #[error("reading the secret: {0}")]
    Secret(Error),
    /// The closure failed (after the one retry, if it asked for it).
    #[error("using the secret failed")]
    Use(E),
}

impl SecretCache {
    /// A cache over `source`. Fails on a TTL of zero or above [`MAX_TTL`].
    pub fn new(source: impl SecretSource, config: CacheConfig) -> Result<SecretCache> {
        if config.ttl.is_zero() || config.ttl > MAX_TTL {
            return Err(Error::Config(format!(
                "cache TTL {:?} is out of range: use a few seconds to minutes (at most {MAX_TTL:?}), so that rotation is seen",
                config.ttl
            )));
        }
        if config.max_entries == 0 {
            return Err(Error::Config("a cache needs room for at least one entry (max_entries)".into()));
        }
        Ok(SecretCache {
            inner: Arc::new(Inner {
                source: Arc::new(source),
                config,
                state: Mutex::default(),
                counters: Counters::default(),
                watcher: Default::default(),
            }),
        })
    }

    pub(crate) fn set_watcher(&self, task: tokio::task::JoinHandle<()>) {
        self.inner.watcher.set(task);
    }

    pub(crate) fn downgrade(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn upgrade(inner: &Weak<Inner>) -> Option<SecretCache> {
        inner.upgrade().map(|inner| SecretCache { inner })
    }

    /// The current version of `path`.
    pub async fn get(&self, path: &str) -> Result<Secret> {
        self.get_which(path, Which::Current).await
    }

    /// A numbered version, or the one a stage label names, cached under that selection.
    pub async fn get_which(&self, path: &str, which: Which) -> Result<Secret> {
        let now = Instant::now();
        let c = &self.inner.counters;
        let stale = {
            let mut state = self.inner.state.lock().expect("cache lock");
            state.clock += 1;
            let clock = state.clock;
            match state.entry_mut(path, which) {
                Some(e) if now < e.expires => {
                    e.last_used = clock;
                    let secret = e.secret.clone();
                    if now >= e.refresh_at && !e.refreshing {
                        e.refreshing = true;
                        drop(state);
                        c.refreshes.fetch_add(1, Ordering::Relaxed);
                        let fetch = self.fetch(path, which);
                        tokio::spawn(fetch);
                    }
                    c.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(secret);
                }
                Some(e) => (now < e.expires + self.inner.config.max_stale).then(|| e.secret.clone()),
                None => None,
            }
        };
        c.misses.fetch_add(1, Ordering::Relaxed);
        match self.fetch(path, which).await {
            Ok(secret) => Ok(secret),
            Err(e) => match stale {
                // Only when the cluster is unreachable: a refusal (revoked access, deleted
                // secret) must not be papered over with an old value.
                Some(secret) if matches!(e, Error::Unreachable { .. }) => {
                    c.stale_served.fetch_add(1, Ordering::Relaxed);
                    warn!(path, version = secret.version(), error = %e, "serving an expired secret: the cluster is unreachable");
                    Ok(secret)
                }
                _ => Err(e),
            },
        }
    }

    /// Fetches `path` now, bypassing (and then replacing) the cached entry.
    pub async fn refresh(&self, path: &str, which: Which) -> Result<Secret> {
        self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
        self.fetch(path, which).await
    }

    /// One fetch per `(path, which)` at a time: concurrent misses share it.
    fn fetch(&self, path: &str, which: Which) -> Fetch {
        let mut state = self.inner.state.lock().expect("cache lock");
        let key = (path.to_string(), which);
        if let Some(running) = state.inflight.get(&key) {
            return running.clone();
        }
        let epoch = state.epoch;
        let weak = Arc::downgrade(&self.inner);
        let source = self.inner.source.clone();
        let path = path.to_string();
        self.inner.counters.fetches.fetch_add(1, Ordering::Relaxed);
        let fetch = async move {
            let result = source.fetch(&path, which).await;
            if let Some(inner) = weak.upgrade() {
                let cfg = &inner.config;
                let mut state = inner.state.lock().expect("cache lock");
                state.inflight.remove(&(path.clone(), which));
                match &result {
                    Ok(secret) if state.epoch == epoch => {
                        let now = Instant::now();
                        let ahead = cfg.refresh_ahead.min(cfg.ttl / 2);
                        state.clock += 1;
                        let entry = Entry {
                            secret: secret.clone(),
                            expires: now + cfg.ttl,
                            refresh_at: now + cfg.ttl - ahead,
                            refreshing: false,
                            last_used: state.clock,
                        };
                        state.insert(&path, which, entry, cfg.max_entries);
                    }
                    // Changed while this fetch ran: what it read may predate the change.
                    Ok(_) => debug!(path = %path, "not caching a read that raced an invalidation"),
                    Err(_) => {
                        // Let a later hit try the background refresh again, not at once.
                        if let Some(e) = state.entry_mut(&path, which) {
                            e.refreshing = false;
                            e.refresh_at = (Instant::now() + Duration::from_secs(1)).min(e.expires);
                        }
                    }
                }
            }
            result
        }
        .boxed()
        .shared();
        state.inflight.insert(key, fetch.clone());
        fetch
    }

    /// Drops every cached selection of `path`.
    pub fn invalidate(&self, path: &str) {
        let mut state = self.inner.state.lock().expect("cache lock");
        state.epoch += 1;
        state.remove(path, None);
        self.inner.counters.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops everything.
    pub fn clear(&self) {
        let mut state = self.inner.state.lock().expect("cache lock");
        state.epoch += 1;
        state.entries.clear();
        state.len = 0;
        self.inner.counters.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    /// Applies a watch event: a change to a path drops its entries; a reset or lost access
    /// drops everything.
    pub fn apply(&self, event: &WatchEvent) {
        match event.kind {
            WatchKind::Written | WatchKind::Deleted | WatchKind::Metadata => self.invalidate(&event.path),
            WatchKind::Reset | WatchKind::AccessRevoked => self.clear(),
            WatchKind::Progress => {}
        }
    }

    /// Entries cached now.
    pub fn len(&self) -> usize {
        self.inner.state.lock().expect("cache lock").len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            fetches: c.fetches.load(Ordering::Relaxed),
            refreshes: c.refreshes.load(Ordering::Relaxed),
            stale_served: c.stale_served.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
        }
    }

    /// Runs `f` with the secret at `path`. If `f` says the secret was refused
    /// ([`UseError::RetryWithRefresh`]: say, the database rejected the password because it was
    /// just rotated), the secret is fetched again bypassing the cache and `f` runs once more.
    /// If the refetch returns the very version that was refused, a rotation has changed the
    /// target but not yet promoted its new version: `f` gets the `pending` version instead.
    ///
    /// If that second try is refused too, `f` gets a third and last try with a version newer
    /// than both tried: a rotation's `pending` version, or, when there is none, `current` again. The
    /// next rotation's `set` can land between the refetch and its use (the cached value was
    /// then two rotations old, or the connection was slow), and only its pending version works
    /// until that rotation finishes; once it has finished, current is that version. No version
    /// is tried twice.
    pub async fn with_secret<T, E, F, Fut>(&self, path: &str, f: F) -> Result<T, WithSecretError<E>>
    where
        F: Fn(Secret) -> Fut,
        Fut: Future<Output = Result<T, UseError<E>>>,
    {
        let secret = self.get(path).await.map_err(WithSecretError::Secret)?;
        let refused = secret.version();
        match f(secret).await {
            Ok(v) => return Ok(v),
            Err(UseError::Fail(e)) => return Err(WithSecretError::Use(e)),
            Err(UseError::RetryWithRefresh(_)) => {}
        }
        warn!(path, version = refused, "the secret was refused downstream; fetching it again and retrying");
        let mut fresh = self.refresh(path, Which::Current).await.map_err(WithSecretError::Secret)?;
        if fresh.version() == refused {
            fresh = match self.inner.source.fetch(path, Which::Pending).await {
                Ok(pending) => pending,
                // No pending version (any more): the rotation was promoted in between, so
                // current is new now.
                Err(_) => self.refresh(path, Which::Current).await.map_err(WithSecretError::Secret)?,
            };
        }
        let second = fresh.version();
        let refused_again = match f(fresh).await {
            Ok(v) => return Ok(v),
            Err(UseError::Fail(e)) => return Err(WithSecretError::Use(e)),
            Err(UseError::RetryWithRefresh(e)) => e,
        };
        // Refused again: a rotation moved on while this was trying (a cached value two
        // rotations old, or a slow connection that straddled the next rotation). A third and
        // last try with a version newer than both tried: the pending one of a rotation in
        // progress or, if that rotation was promoted in the meantime, current. Versions only
        // grow, so an older one is stale (a refresh that joined a fetch begun before the
        // rotation moved on), and would only cost the target a failed login.
        let newest = refused.max(second);
        let third = match self.inner.source.fetch(path, Which::Pending).await {
            Ok(pending) if pending.version() > newest => Some(pending),
            _ => match self.refresh(path, Which::Current).await {
                Ok(current) if current.version() > newest => Some(current),
                _ => None,
            },
        };
        match third {
            Some(secret) => {
                warn!(path, version = secret.version(), "refused again; trying the version a rotation set since");
                f(secret).await.map_err(|(UseError::Fail(e) | UseError::RetryWithRefresh(e))| WithSecretError::Use(e))
            }
            None => Err(WithSecretError::Use(refused_again)),
        }
    }
}

#[cfg(test)]
mod tests;
