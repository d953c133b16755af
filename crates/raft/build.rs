//! Generates the node-to-node gRPC code from `proto/` without a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with env!(): cargo reuses a compiled build script across checkouts
    // of the same workspace at other paths (CI clones elsewhere into a shared target dir).
    let proto_root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = proto_root.join("arca/raft/v1/raft.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&proto_root])?;
    tonic_prost_build::configure().bytes(".arca.raft.v1.RaftMessage.payload").compile_fds(fds)?;
    Ok(())
}
