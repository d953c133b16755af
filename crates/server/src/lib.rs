//! The Arca server process: configuration, the client API (gRPC over TLS, with reflection),
//! cluster formation, and lifecycle (signals, graceful shutdown). Also the development
//! certificate authority used by `arca dev`.

mod api;
pub mod certs;
pub mod config;
mod error;
mod http;
mod limits;
mod server;
pub mod tls;
mod ui;

/// The client API's generated types (see `arca-proto`).
pub use arca_proto as proto;

pub use config::Config;
pub use error::{Error, Result};
#[cfg(fuzzing)]
#[doc(hidden)]
pub use server::fuzzing;
pub use server::{run, wait_for_signal};
