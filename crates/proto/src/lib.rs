//! The Arca client API as Rust types: messages, client stubs (for the CLI and `arca-client`) and
//! server traits (for `arca-server`), generated at build time from `proto/arca/v1` without a
//! system `protoc`. A crate of its own so that clients never link the server's storage engine.

tonic::include_proto!("arca.v1");

/// The descriptor set served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/arca_v1_descriptor.bin"));
