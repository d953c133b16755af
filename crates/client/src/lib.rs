//! The Arca client SDK.
//!
//! ```no_run
//! # async fn run() -> arca_client::Result<()> {
//! use arca_client::{Auth, CacheConfig, Client, UseError};
//!
//! let client = Client::builder()
//!     .addr("https://arca-1:8200")
//!     .addr("https://arca-2:8200")
//!     .ca_cert_file("/etc/arca/ca.pem")
//!     .auth(Auth::app_role("my-role-id", std::env::var("ARCA_SECRET_ID").unwrap_or_default()))
//!     .build()
//!     .await?;
//! // Cached for 30 s at most, and dropped the moment a watch reports a change under app/.
//! let cache = client.secret_cache(CacheConfig { watch: vec!["app/".into()], ..Default::default() })?;
//! let user = cache
//!     .with_secret("app/db", |s| async move {
//!         // Connect with s.get("password"); on "password authentication failed" return
//!         // Err(UseError::RetryWithRefresh(e)) and the call is retried once with a fresh read.
//!         Ok::<_, UseError<String>>(s.get("username").unwrap_or_default().to_string())
//!     })
//!     .await;
//! # let _ = user;
//! # Ok(())
//! # }
//! ```
//!
//! * [`Client`]: connections to every member given, failover with jittered backoff on
//!   `UNAVAILABLE`, logins ([`Auth`]), token renewal at about 2/3 of its TTL and a new login
//!   when renewal is refused. Its answers are the SDK's own types ([`TokenInfo`],
//!   [`SecretMetadata`], [`Error`] with [`Code`]); the generated wire types are only behind the
//!   `raw` feature (`raw::Services`, `Client::call`), for tools that need every call.
//! * [`SecretCache`]: TTL, refresh-ahead, LRU bound, single-flight, stale-on-error, watch
//!   invalidation, and [`SecretCache::with_secret`] (retry-with-refresh).
//! * [`Watcher`]: the server's change stream, resumed across reconnects without a gap.

mod cache;
mod client;
mod error;
#[cfg(feature = "raw")]
pub mod raw;
mod secret;
mod task;
mod types;
mod watch;

pub use cache::{CacheConfig, CacheStats, SecretCache, SecretSource, UseError, WithSecretError, MAX_TTL};
pub use client::{Auth, Client, ClientBuilder, RetryPolicy};
pub use error::{Cause, Code, Error, Result};
pub use secret::{Secret, Which};
pub use types::{SecretMetadata, TokenInfo, VersionInfo};
pub use watch::{WatchEvent, WatchKind, Watcher};
