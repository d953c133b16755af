use thiserror::Error;

/// Everything a request can fail with. The server maps each variant to one gRPC status, in one
/// place. Messages are for the person at the terminal: what was wrong, and what to do. None
/// contains a secret value, a token or a share.
#[derive(Debug, Error)]
pub enum Error {
    #[error("node is sealed; unseal it with 'arca operator unseal'")]
    Sealed,

    #[error("the cluster is not initialized (or this node has not yet received its state); run 'arca operator init'")]
    NotInitialized,

    #[error("the cluster is already initialized")]
    AlreadyInitialized,

    #[error("{0}")]
    InvalidArgument(String),

    /// The request is valid but the cluster is not in a state to carry it out as asked.
    #[error("{0}")]
    FailedPrecondition(String),

    #[error("unseal share rejected: {0}")]
    Share(arca_crypto::Error),

    #[error("missing token: set ARCA_TOKEN or pass a token")]
    MissingToken,

    #[error("invalid or expired token")]
    BadToken,

    /// A login's credentials were refused; the message says what was wrong with them.
    #[error("{0}")]
    LoginFailed(String),

    #[error("permission denied: {0}")]
    PermissionDenied(String),

    #[error("{0}")]
    NotFound(String),

    #[error("check-and-set failed: the secret is at version {current}, the request expected {expected}")]
    CasMismatch { expected: u64, current: u64 },

    #[error("the write kept conflicting with concurrent writes to the same secret; retry")]
    Conflict,

    #[error("audit log unavailable: the request's audit record could not be committed (lost quorum or a full disk); nothing was returned, retry later")]
    AuditUnavailable,

    /// A write that carried its own audit record was proposed but not confirmed in time: unlike
    /// `AuditUnavailable`, it may still be applied (with its record) once the cluster recovers.
    #[error("the write was sent with its audit record but not confirmed in time (lost quorum or a slow disk): it may or may not have been applied; read the secret before writing it again")]
    WriteUnconfirmed,

    #[error(transparent)]
    Cluster(#[from] arca_raft::Error),

    /// A new node could not join through the address it was given.
    #[error("could not join the cluster through {peer}: {reason}. Give a member's cluster address (its [cluster] advertise, e.g. node1:8201), not its API address")]
    JoinFailed { peer: String, reason: String },

    #[error("storage failure: {0}")]
    Storage(#[from] arca_storage::Error),

    #[error("stored data failed to decrypt or decode at {path}: {reason}; this indicates corruption or tampering")]
    Corrupt { path: String, reason: String },

    /// A rotation step failed on the target system or in the rotator; the rotation retries
    /// with backoff and `current` stays as it was.
    #[error("rotation step failed: {0}")]
    Rotation(String),

    /// A source sent more untrusted requests (unauthenticated, failed logins, denied) than its
    /// budget: refused before anything was recorded or replicated (see `limits`).
    #[error("too many {what} from {from}: over the limit of {per_second}/s (burst {burst}); retry in {retry_after_s} s. Refused requests are counted in the audit trail, not recorded one by one")]
    RateLimited { what: &'static str, from: String, per_second: f64, burst: u32, retry_after_s: u64 },

    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
