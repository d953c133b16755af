use thiserror::Error;

/// What a client call can fail with. Cheap to clone (a cache hands one failure to every caller
/// that waited on the same fetch). Messages never contain a token or a secret value.
#[derive(Debug, Clone, Error)]
pub enum Error {
    /// The builder was given something unusable (no address, an unreadable CA file, …).
    #[error("client configuration: {0}")]
    Config(String),

    /// No member answered within the retry budget. `detail` is the last failure's innermost
    /// cause, said once; the message adds the hint that fits `cause`.
    #[error("cannot reach {addrs}: {detail}{}", hint_suffix(*cause))]
    Unreachable {
        /// The members tried, comma-separated.
        addrs: String,
        attempts: u32,
        cause: Cause,
        detail: String,
    },

    /// The server refused the request; `message` is the server's, written for users.
    #[error("{message}")]
    Status { code: Code, message: String },

    /// Logging in was refused (wrong credentials, a role's bounds, an expired secret id).
    #[error("login refused: {0}")]
    Login(String),

    /// The watch stream ended because the token lost access to what it watches.
    #[error("the watch ended: {0}")]
    WatchEnded(String),
}

/// Why the server refused a request: the gRPC status codes the Arca API answers with, under
/// the SDK's own names (so an application does not depend on the transport's types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// The request was malformed: a bad path, an unknown field, a value out of range.
    InvalidArgument,
    /// The secret, version, token or role does not exist.
    NotFound,
    AlreadyExists,
    /// The token's policies do not grant this (the message names the missing capability).
    PermissionDenied,
    /// No token, or one that is expired, revoked or unknown.
    Unauthenticated,
    /// A check-and-set lost, or the vault is in a state that does not allow this.
    FailedPrecondition,
    /// A write lost a race; trying again may succeed.
    Aborted,
    /// A limit was reached (request size, rate, open streams).
    ResourceExhausted,
    /// The member is sealed, has no leader, or is down.
    Unavailable,
    DeadlineExceeded,
    Unimplemented,
    Internal,
    /// Any other code; `Error::Status`'s message says more.
    Other,
}

impl Code {
    pub(crate) fn from_grpc(code: tonic::Code) -> Code {
        use tonic::Code as G;
        match code {
            G::InvalidArgument | G::OutOfRange => Code::InvalidArgument,
            G::NotFound => Code::NotFound,
            G::AlreadyExists => Code::AlreadyExists,
            G::PermissionDenied => Code::PermissionDenied,
            G::Unauthenticated => Code::Unauthenticated,
            G::FailedPrecondition => Code::FailedPrecondition,
            G::Aborted => Code::Aborted,
            G::ResourceExhausted => Code::ResourceExhausted,
            G::Unavailable => Code::Unavailable,
            G::DeadlineExceeded => Code::DeadlineExceeded,
            G::Unimplemented => Code::Unimplemented,
            G::Internal | G::DataLoss => Code::Internal,
            G::Ok | G::Cancelled | G::Unknown => Code::Other,
        }
    }
}

/// Why no member could be reached, judged from the innermost transport error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// Nothing listens at the address.
    Refused,
    /// The TLS handshake failed: the server's certificate is not from the configured CA, or
    /// does not name the host.
    Untrusted,
    /// No answer in time.
    TimedOut,
    /// The host name does not resolve.
    NoSuchHost,
    /// The members answered, but none could serve (sealed, no leader, shutting down).
    Unavailable,
}

impl Cause {
    /// What to check, for a person reading the error.
    pub fn hint(self) -> &'static str {
        match self {
            Cause::Refused => "nothing listens there: is the node running, and is the address right?",
            Cause::Untrusted => {
                "the server's certificate is not signed by the CA the client trusts, or does not name this host"
            }
            Cause::TimedOut => "no answer in time: check the address, the port and any firewall",
            Cause::NoSuchHost => "the host name does not resolve",
            Cause::Unavailable => "the members are sealed, have no leader, or are shutting down",
        }
    }
}

fn hint_suffix(cause: Cause) -> String {
    match cause {
        // The member's own message ("the node is sealed") says it.
        Cause::Unavailable => String::new(),
        other => format!(" ({})", other.hint()),
    }
}

impl Error {
    pub(crate) fn from_status(s: &tonic::Status) -> Error {
        Error::Status { code: Code::from_grpc(s.code()), message: s.message().to_string() }
    }

    /// The status code, when the server answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the secret (or its version) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NotFound)
    }
}

/// The innermost cause of a failed attempt (transport errors nest the same message several
/// times) and what kind of failure it is, so a refused connection does not send the user after
/// their CA file.
pub(crate) fn describe(status: &tonic::Status) -> (Cause, String) {
    if std::error::Error::source(status).is_none() {
        // The member answered: its message is the whole story (and may mention certificates
        // without the connection having anything to do with one).
        return (Cause::Unavailable, status.message().to_string());
    }
    let mut causes: Vec<String> = Vec::new();
    if !status.message().is_empty() {
        causes.push(status.message().to_string());
    }
    let mut io_kind = None;
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(status);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        let m = s.to_string();
        if !causes.contains(&m) {
            causes.push(m);
        }
        source = s.source();
    }
    let all = causes.join(": ").to_lowercase();
    // The operating system's own word first; the text only where no I/O error says it.
    let cause = if io_kind == Some(std::io::ErrorKind::ConnectionRefused) || all.contains("connection refused") {
        Cause::Refused
    } else if ["certificate", "unknownissuer", "invalid peer"].iter().any(|k| all.contains(k)) {
        Cause::Untrusted
    } else if io_kind == Some(std::io::ErrorKind::TimedOut)
        || all.contains("timed out")
        || all.contains("timeout")
        || all.contains("deadline")
    {
        Cause::TimedOut
    } else if all.contains("lookup") || all.contains("resolve") || all.contains("name or service") {
        Cause::NoSuchHost
    } else {
        Cause::Unavailable
    };
    let detail = causes.last().cloned().unwrap_or_else(|| format!("{:?}", status.code()));
    (cause, detail)
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_failure_is_named_by_its_innermost_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused (os error 111)");
        let status = tonic::Status::from_error(Box::new(io));
        let (cause, detail) = describe(&status);
        assert_eq!(cause, Cause::Refused);
        assert_eq!(detail, "Connection refused (os error 111)");

        let sent = tonic::Status::unavailable("the node is sealed; check its certificate");
        assert_eq!(describe(&sent), (Cause::Unavailable, "the node is sealed; check its certificate".to_string()));
    }

    #[test]
    fn status_codes_keep_their_meaning() {
        assert_eq!(Code::from_grpc(tonic::Code::PermissionDenied), Code::PermissionDenied);
        assert_eq!(Code::from_grpc(tonic::Code::OutOfRange), Code::InvalidArgument);
        let e = Error::from_status(&tonic::Status::not_found("no secret at app/x"));
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "no secret at app/x");
    }
}
