//! Edge limits of the client API port: the gRPC message cap, per-token bounds on long-lived
//! streams, and the audit of requests refused before they reached the core.
//!
//! Rate limits of untrusted requests live in the core (`arca_core::limits`), where both fronts
//! meet and the outcome of a request is known; what is here only the server can see.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tonic::Status;
use zeroize::Zeroizing;

/// Largest gRPC message the client port decodes: the HTTP body cap, so the two fronts accept
/// the same requests (a secret value is at most 512 KiB). tonic's default is 4 MiB.
pub const MAX_GRPC_MESSAGE_BYTES: usize = crate::http::MAX_BODY_BYTES;

/// Set on a request once the core has seen it (and so audited it, or refused it over a limit):
/// a failed request without it was refused by a front and is audited as a rejection.
#[derive(Clone, Default)]
pub(crate) struct Seen(Arc<AtomicBool>);

impl Seen {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_marked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Which kind of long-lived stream a slot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum StreamKind {
    Watch,
    AuditTail,
}

/// Counts the open streams of each token (by SHA-256: no token is kept in memory here).
pub(crate) struct StreamSlots {
    watch_per_token: usize,
    tails_per_token: usize,
    open: Mutex<HashMap<(StreamKind, [u8; 32]), usize>>,
}

/// One open stream; its slot is given back when the stream ends (the guard is dropped).
pub(crate) struct Slot {
    slots: Arc<StreamSlots>,
    key: (StreamKind, [u8; 32]),
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("stream slots lock");
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl StreamSlots {
    pub fn new(watch_per_token: usize, tails_per_token: usize) -> StreamSlots {
        StreamSlots { watch_per_token, tails_per_token, open: Mutex::new(HashMap::new()) }
    }

    /// A slot for one more stream of `kind` for `token`, or `RESOURCE_EXHAUSTED` naming the
    /// limit. Taken before the stream's opening request, so concurrent openings cannot exceed it.
    pub fn acquire(self: &Arc<Self>, kind: StreamKind, token: Option<&Zeroizing<String>>) -> Result<Slot, Status> {
        let hash: [u8; 32] = Sha256::digest(token.map(|t| t.as_bytes()).unwrap_or_default()).into();
        let key = (kind, hash);
        let (limit, what) = match kind {
            StreamKind::Watch => (self.watch_per_token, "watch streams"),
            StreamKind::AuditTail => (self.tails_per_token, "audit tails"),
        };
        let mut open = self.open.lock().expect("stream slots lock");
        let n = open.entry(key).or_insert(0);
        if *n >= limit {
            return Err(Status::resource_exhausted(format!(
                "this token already has {n} open {what}, the limit per token (limits.{}_per_token); close one \
                 (or watch several prefixes on one stream) and retry",
                match kind {
                    StreamKind::Watch => "watch_streams",
                    StreamKind::AuditTail => "audit_tails",
                }
            )));
        }
        *n += 1;
        Ok(Slot { slots: self.clone(), key })
    }
}

/// The status of a gRPC response refused before its body (a "trailers-only" response), if it is
/// an error.
pub(crate) fn grpc_error<B>(response: &axum::http::Response<B>) -> Option<Status> {
    Status::from_header_map(response.headers()).filter(|s| s.code() != tonic::Code::Ok)
}

/// The token of a gRPC request (`authorization`: `Bearer <token>` or the bare token).
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<Zeroizing<String>> {
    let raw = headers.get("authorization")?.to_str().ok()?;
    let t = raw.strip_prefix("Bearer ").unwrap_or(raw).trim();
    (!t.is_empty()).then(|| Zeroizing::new(t.to_string()))
}

/// tonic's refusal of a message over [`MAX_GRPC_MESSAGE_BYTES`], restated: which limit, and
/// what fits under it. `RESOURCE_EXHAUSTED`, as gRPC's own implementations answer.
pub(crate) fn oversized(status: &Status) -> Option<Status> {
    let found = status.message().strip_prefix("Error, decoded message length too large: found ")?;
    let bytes = found.split(' ').next().unwrap_or("?");
    Some(Status::resource_exhausted(format!(
        "request message of {bytes} bytes is over the client API's limit of {MAX_GRPC_MESSAGE_BYTES} bytes per \
         gRPC message (secret values are at most {} bytes, paths at most {} bytes)",
        arca_core::MAX_VALUE_BYTES,
        arca_core::MAX_PATH_BYTES
    )))
}

/// The audit trail's name for a gRPC error code.
pub(crate) fn outcome_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        InvalidArgument | OutOfRange => "invalid_argument",
        NotFound => "not_found",
        Unimplemented => "unimplemented",
        ResourceExhausted => "resource_exhausted",
        Unauthenticated => "unauthenticated",
        PermissionDenied => "permission_denied",
        FailedPrecondition => "failed_precondition",
        Unavailable => "unavailable",
        _ => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_token_and_kind_and_come_back() {
        let slots = Arc::new(StreamSlots::new(2, 1));
        let a = Zeroizing::new("token-a".to_string());
        let b = Zeroizing::new("token-b".to_string());
        let s1 = slots.acquire(StreamKind::Watch, Some(&a)).unwrap();
        let _s2 = slots.acquire(StreamKind::Watch, Some(&a)).unwrap();
        let err = slots.acquire(StreamKind::Watch, Some(&a)).err().unwrap();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("limits.watch_streams_per_token"), "{}", err.message());
        slots.acquire(StreamKind::Watch, Some(&b)).unwrap();
        let _t = slots.acquire(StreamKind::AuditTail, Some(&a)).unwrap();
        assert!(slots.acquire(StreamKind::AuditTail, Some(&a)).is_err());
        drop(s1);
        slots.acquire(StreamKind::Watch, Some(&a)).unwrap();
    }

    #[test]
    fn oversized_messages_are_restated_with_the_limit() {
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 2097166 bytes, the limit is: 1048576 bytes",
        );
        let s = oversized(&tonic).unwrap();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(
            s.message().contains("2097166 bytes") && s.message().contains("limit of 1048576 bytes"),
            "{}",
            s.message()
        );
        assert!(oversized(&Status::out_of_range("something else")).is_none());
    }
}
