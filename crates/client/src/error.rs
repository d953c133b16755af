use thiserror::Error;

/// What a client call can fail with. Cheap to clone (a cache hands one failure to every caller
/// that waited on the same fetch). Messages never contain a token or a secret value.
#[derive(Debug, Clone, Error)]
pub enum Error {
    /// The builder was given something unusable (no address, an unreadable CA file, …).
    #[error("client configuration: {0}")]
    Config(String),

    /// No member answered within the retry budget.
    #[error("no cluster member reachable ({attempts} attempts over {members} members): {last}")]
    Unreachable { attempts: u32, members: usize, last: String },

    /// The server refused the request; `message` is the server's, written for users.
    #[error("{message} ({code:?})")]
    Status { code: tonic::Code, message: String },

    /// Logging in was refused (wrong credentials, a role's bounds, an expired secret id).
    #[error("login refused: {0}")]
    Login(String),

    /// The watch stream ended because the token lost access to what it watches.
    #[error("the watch ended: {0}")]
    WatchEnded(String),
}

impl Error {
    pub(crate) fn from_status(s: &tonic::Status) -> Error {
        Error::Status { code: s.code(), message: s.message().to_string() }
    }

    /// The gRPC status code, when the server answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the secret (or its version) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
