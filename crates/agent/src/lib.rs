//! `arca agent`: renders secrets into files and environments for applications that are not
//! written in Rust, and renders again the moment a secret changes.
//!
//! * [`config`]: `agent.toml`, checked field by field.
//! * [`render`]: minijinja templates (`{{ secret("db/app").password }}`) over one consistent
//!   set of reads.
//! * [`output`]: files replaced atomically (temp file, fsync, rename), the after-change command.
//! * [`exec`]: the application as a child, restarted or signalled on a change.
//! * [`listener`]: an optional loopback endpoint speaking the Vault KV v2 read API from a
//!   watch-invalidated cache.
//! * [`agent`]: logging in, the watch, and the loop tying them together.

pub mod agent;
pub mod config;
pub mod exec;
pub mod listener;
pub mod output;
pub mod render;

pub use agent::run;
pub use config::Config;

/// What stops the agent or one of its renders. Messages name the file, field or path, never
/// a secret value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Client(#[from] arca_client::Error),
    #[error("rendering: {0}")]
    Render(String),
    #[error("the application: {0}")]
    Exec(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
