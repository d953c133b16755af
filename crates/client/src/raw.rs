//! The wire level, for tools that need every call of the API (the `arca` CLI): the generated
//! messages and stubs, on the client's connections, token and failover.
//!
//! Behind the `raw` feature because these types follow `proto/` and change with it; the rest
//! of the SDK ([`Client::read`], [`crate::TokenInfo`], [`crate::Error`]) has none of them, and
//! an application should not need this module.

use std::future::Future;

pub use arca_proto as proto;

pub use crate::client::{AuthedChannel, Services, TokenInterceptor};
use crate::{Client, Result};

impl Client {
    /// The stubs of every service on the member currently in use, without retries: for
    /// requests meant for that one member.
    pub fn services(&self) -> Services {
        self.services_on(self.current_index())
    }

    /// Runs `f` against a member, with failover: on `UNAVAILABLE` (member down, sealed, no
    /// leader) it moves to the next member after a jittered backoff, within the retry policy's
    /// time budget; on `UNAUTHENTICATED` it logs in again once (when it can) and retries. Any
    /// other error is returned as is. `f` may run more than once: writes are retried too (the
    /// server recognises a resent write).
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnMut(Services) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_with(f, true).await
    }

    /// [`Client::call`] for one request message, cloned for each attempt:
    /// `client.unary(req, |mut s, r| async move { s.kv.get(r).await })`.
    pub async fn unary<R, T, F, Fut>(&self, req: R, f: F) -> Result<T>
    where
        R: Clone,
        F: FnMut(Services, R) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.send(req, f).await
    }
}
