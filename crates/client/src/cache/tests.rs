//! The cache's behaviour against a counting in-memory source (the cluster round trip is
//! covered end to end in the root `tests/client.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};

use super::*;

#[derive(Default)]
struct Source {
    /// Reads made of each selection.
    calls: AtomicU64,
    /// The version `Current` returns; `Pending` returns `pending` when set.
    version: AtomicU64,
    pending: AtomicU64,
    delay_ms: AtomicU64,
    fail: Mutex<Option<Error>>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Source>);

impl SecretSource for Shared {
    fn fetch(&self, path: &str, which: Which) -> BoxFuture<'static, Result<Secret>> {
        let (s, path) = (self.0.clone(), path.to_string());
        async move {
            s.calls.fetch_add(1, Ordering::SeqCst);
            let delay = s.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if let Some(e) = s.fail.lock().unwrap().clone() {
                return Err(e);
            }
            let version = match which {
                Which::Current => s.version.load(Ordering::SeqCst),
                Which::Version(v) => v,
                Which::Pending => match s.pending.load(Ordering::SeqCst) {
                    0 => return Err(Error::Status { code: crate::Code::NotFound, message: "no pending".into() }),
                    v => v,
                },
                Which::Previous => s.version.load(Ordering::SeqCst).saturating_sub(1),
            };
            let data = BTreeMap::from([("password".to_string(), format!("pw-{version}"))]);
            Ok(Secret::new(path, version, data))
        }
        .boxed()
    }
}

fn cache(ttl_ms: u64, config: impl FnOnce(&mut CacheConfig)) -> (SecretCache, Arc<Source>) {
    let source = Shared::default();
    source.0.version.store(1, Ordering::SeqCst);
    let mut c = CacheConfig { ttl: Duration::from_millis(ttl_ms), ..Default::default() };
    config(&mut c);
    let inner = source.0.clone();
    (SecretCache::new(source, c).unwrap(), inner)
}

fn unreachable() -> Error {
    Error::Unreachable {
        addrs: "a, b, c".into(),
        attempts: 3,
        cause: crate::Cause::Refused,
        detail: "connection refused".into(),
    }
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let (c, s) = cache(100, |_| {});
    assert_eq!(c.get("app/db").await.unwrap().version(), 1);
    s.version.store(2, Ordering::SeqCst);
    assert_eq!(c.get("app/db").await.unwrap().version(), 1, "served from the cache within the TTL");
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(130)).await;
    assert_eq!(c.get("app/db").await.unwrap().version(), 2, "fetched again after the TTL");
    assert_eq!((c.stats().hits, c.stats().misses), (1, 2));
}

#[tokio::test]
async fn a_hit_near_expiry_refreshes_in_the_background() {
    // TTL 400 ms, refresh ahead 300 ms, capped at half the TTL: refresh from 200 ms on.
    let (c, s) = cache(400, |c| c.refresh_ahead = Duration::from_millis(300));
    c.get("app/db").await.unwrap();
    s.version.store(2, Ordering::SeqCst);
    s.delay_ms.store(50, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(c.get("app/db").await.unwrap().version(), 1);
    assert_eq!(c.stats().refreshes, 0, "no refresh before the refresh-ahead point");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = std::time::Instant::now();
    assert_eq!(c.get("app/db").await.unwrap().version(), 1, "the hit is served at once, not after the fetch");
    assert!(started.elapsed() < Duration::from_millis(40));
    assert_eq!(c.stats().refreshes, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(c.get("app/db").await.unwrap().version(), 2, "the refreshed value replaced the entry");
    assert_eq!(s.calls.load(Ordering::SeqCst), 2);
    assert_eq!(c.stats().misses, 1, "only the very first read missed");
}

#[tokio::test]
async fn concurrent_misses_make_one_request() {
    let (c, s) = cache(30_000, |_| {});
    s.delay_ms.store(50, Ordering::SeqCst);
    let gets = (0..100).map(|_| {
        let c = c.clone();
        tokio::spawn(async move { c.get("app/db").await.unwrap().version() })
    });
    let versions = futures::future::join_all(gets).await;
    assert!(versions.iter().all(|v| *v.as_ref().unwrap() == 1));
    assert_eq!(s.calls.load(Ordering::SeqCst), 1, "100 concurrent misses, one request");
    assert_eq!(c.stats().fetches, 1);
}

#[tokio::test]
async fn stale_entries_are_served_only_while_unreachable_and_only_for_max_stale() {
    let (c, s) = cache(50, |c| c.max_stale = Duration::from_millis(200));
    c.get("app/db").await.unwrap();
    *s.fail.lock().unwrap() = Some(unreachable());
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(c.get("app/db").await.unwrap().version(), 1, "expired, the cluster unreachable: served stale");
    assert_eq!(c.stats().stale_served, 1);

    // A refusal is not an outage: no stale value for a token that lost access.
    *s.fail.lock().unwrap() = Some(Error::Status { code: crate::Code::PermissionDenied, message: "denied".into() });
    assert!(c.get("app/db").await.is_err());

    *s.fail.lock().unwrap() = Some(unreachable());
    tokio::time::sleep(Duration::from_millis(220)).await;
    let err = c.get("app/db").await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "past max_stale the error surfaces: {err}");
    assert_eq!(c.stats().stale_served, 1);
}

#[tokio::test]
async fn the_least_recently_used_entry_goes_first() {
    let (c, s) = cache(30_000, |c| c.max_entries = 3);
    for p in ["a", "b", "c"] {
        c.get(p).await.unwrap();
    }
    c.get("a").await.unwrap();
    c.get("d").await.unwrap();
    assert_eq!(c.len(), 3);
    let before = s.calls.load(Ordering::SeqCst);
    for p in ["a", "c", "d"] {
        c.get(p).await.unwrap();
    }
    assert_eq!(s.calls.load(Ordering::SeqCst), before, "a, c, d are still cached");
    c.get("b").await.unwrap();
    assert_eq!(s.calls.load(Ordering::SeqCst), before + 1, "b was evicted");
    assert_eq!(c.len(), 3);
}

fn event(kind: WatchKind, path: &str) -> WatchEvent {
    WatchEvent { seq: 9, kind, path: path.into(), version: 2, current_version: 2 }
}

#[tokio::test]
async fn watch_events_invalidate_at_once() {
    let (c, s) = cache(30_000, |_| {});
    c.get("app/db").await.unwrap();
    c.get("app/other").await.unwrap();
    c.get_which("app/db", Which::Previous).await.unwrap();
    s.version.store(2, Ordering::SeqCst);

    c.apply(&event(WatchKind::Progress, ""));
    assert_eq!(c.get("app/db").await.unwrap().version(), 1, "progress invalidates nothing");

    c.apply(&event(WatchKind::Written, "app/db"));
    assert_eq!(c.len(), 1, "every selection of app/db dropped, app/other kept");
    assert_eq!(c.get("app/db").await.unwrap().version(), 2);

    c.apply(&event(WatchKind::Reset, ""));
    assert!(c.is_empty());
}

#[tokio::test]
async fn a_fetch_that_raced_an_invalidation_is_not_cached() {
    let (c, s) = cache(30_000, |_| {});
    s.delay_ms.store(100, Ordering::SeqCst);
    let reading = tokio::spawn({
        let c = c.clone();
        async move { c.get("app/db").await.unwrap().version() }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    c.apply(&event(WatchKind::Written, "app/db"));
    assert_eq!(reading.await.unwrap(), 1);
    assert!(c.is_empty(), "the read that started before the change was not cached");
}

#[tokio::test]
async fn with_secret_retries_once_with_a_fresh_read() {
    let (c, s) = cache(30_000, |_| {});
    c.get("app/db").await.unwrap();
    s.version.store(2, Ordering::SeqCst);
    let tries = AtomicU64::new(0);
    let used = c
        .with_secret("app/db", |secret| {
            tries.fetch_add(1, Ordering::SeqCst);
            async move {
                match secret.version() {
                    2 => Ok(secret.get("password").unwrap().to_string()),
                    _ => Err(UseError::RetryWithRefresh("password authentication failed")),
                }
            }
        })
        .await
        .unwrap();
    assert_eq!((used.as_str(), tries.load(Ordering::SeqCst)), ("pw-2", 2));
    assert_eq!(c.get("app/db").await.unwrap().version(), 2, "the refreshed value is cached");

    // Refused twice: the second error is returned, with no third try.
    let tries = AtomicU64::new(0);
    let err = c
        .with_secret("app/db", |_| {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(UseError::RetryWithRefresh("still refused")) }
        })
        .await
        .unwrap_err();
    assert!(matches!(err, WithSecretError::Use("still refused")));
    assert_eq!(tries.load(Ordering::SeqCst), 2);

    // Fail: no retry at all.
    let tries = AtomicU64::new(0);
    let err = c
        .with_secret("app/db", |_| {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(UseError::Fail("syntax error")) }
        })
        .await
        .unwrap_err();
    assert!(matches!(err, WithSecretError::Use("syntax error")));
    assert_eq!(tries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn with_secret_uses_the_pending_version_when_current_was_refused_mid_rotation() {
    // Single-user rotation between `set` and `finish`: the database already has the pending
    // password while `current` still names the old one.
    let (c, s) = cache(30_000, |_| {});
    s.pending.store(2, Ordering::SeqCst);
    let used = c
        .with_secret("app/db", |secret| async move {
            match secret.version() {
                2 => Ok(secret.version()),
                _ => Err(UseError::RetryWithRefresh("password authentication failed")),
            }
        })
        .await
        .unwrap();
    assert_eq!(used, 2);
}

/// Runs `with_secret` on `app/db` with a use that only version `works` passes (any other is
/// refused as a stale password); `on_try` sees each version before its use. Returns the
/// outcome and the versions tried, in order.
async fn use_until(
    c: &SecretCache,
    works: u64,
    on_try: impl Fn(u64),
) -> (std::result::Result<u64, WithSecretError<&'static str>>, Vec<u64>) {
    let tried = Mutex::new(Vec::new());
    let used = c
        .with_secret("app/db", |secret| {
            tried.lock().unwrap().push(secret.version());
            on_try(secret.version());
            async move {
                match secret.version() {
                    v if v == works => Ok(v),
                    _ => Err(UseError::RetryWithRefresh("password authentication failed")),
                }
            }
        })
        .await;
    (used, tried.into_inner().unwrap())
}

#[tokio::test]
async fn a_second_refusal_tries_the_next_rotations_pending_version_once() {
    // The cached value is two rotations old: version 2 is current, but the next rotation has
    // already set version 3 on the target and not promoted it yet.
    let (c, s) = cache(30_000, |_| {});
    c.get("app/db").await.unwrap();
    s.version.store(2, Ordering::SeqCst);
    s.pending.store(3, Ordering::SeqCst);
    let (used, tried) = use_until(&c, 3, |_| {}).await;
    assert_eq!((used.unwrap(), tried), (3, vec![1, 2, 3]));

    // A pending version already tried is not tried again: two tries, the second error.
    s.pending.store(2, Ordering::SeqCst);
    let tried = Mutex::new(Vec::new());
    let err = c
        .with_secret("app/db", |secret| {
            tried.lock().unwrap().push(secret.version());
            async { Err::<(), _>(UseError::RetryWithRefresh("refused")) }
        })
        .await
        .unwrap_err();
    assert!(matches!(err, WithSecretError::Use("refused")));
    assert_eq!(tried.lock().unwrap().len(), 2, "{:?}", tried.lock().unwrap());
}

#[tokio::test]
async fn a_rotation_promoted_during_the_second_try_makes_current_the_third() {
    // Found under load (1 query in 2 990, `tests/client.rs`): the second try used current
    // version 2 while the next rotation set version 3 on the database, and promoted it before
    // the third look, so no pending version was left to try; current is the new one then.
    let (c, s) = cache(30_000, |_| {});
    c.get("app/db").await.unwrap();
    s.version.store(2, Ordering::SeqCst);
    let promote = |version| {
        if version == 2 {
            s.version.store(3, Ordering::SeqCst);
        }
    };
    let (used, tried) = use_until(&c, 3, promote).await;
    assert_eq!((used.unwrap(), tried), (3, vec![1, 2, 3]));
    assert_eq!(c.get("app/db").await.unwrap().version(), 3, "the promoted value is cached");
}

#[test]
fn a_ttl_that_would_outlive_rotation_is_refused() {
    let ttl = MAX_TTL + Duration::from_secs(1);
    let err = SecretCache::new(Shared::default(), CacheConfig { ttl, ..Default::default() }).err().unwrap();
    assert!(err.to_string().contains("out of range"), "{err}");
    assert!(SecretCache::new(Shared::default(), CacheConfig { ttl: Duration::ZERO, ..Default::default() }).is_err());
}
