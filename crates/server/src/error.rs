use thiserror::Error;

/// Errors starting or running a server. Configuration errors exit with status 2.
#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),

    #[error(transparent)]
    Cluster(#[from] arca_raft::Error),

    #[error("cannot listen on the client API address {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },

    #[error("client API server failed: {0}")]
    Serve(String),

    #[error("certificate generation failed: {0}")]
    Certs(String),

    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
