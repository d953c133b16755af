//! The Arca server process: configuration, the client API (gRPC over TLS, with reflection),
//! cluster formation, and lifecycle (signals, graceful shutdown). Also the development
//! certificate authority used by `arca dev`.

mod api;
pub mod certs;
pub mod config;
mod error;
mod server;
pub mod tls;

pub mod proto {
    tonic::include_proto!("arca.v1");

    /// The descriptor set served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/arca_v1_descriptor.bin"));
}

pub use config::Config;
pub use error::{Error, Result};
pub use server::{run, wait_for_signal};
