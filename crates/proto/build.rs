//! Generates the client API (server and client stubs) and the descriptor set served by gRPC
//! reflection, from `proto/arca/v1`, without a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with env!(): cargo reuses a compiled build script across checkouts
    // of the same workspace at other paths (CI clones elsewhere into a shared target dir).
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files: Vec<_> = ["sys", "kv", "token", "policy", "auth", "audit", "rotation", "watch"]
        .iter()
        .map(|f| root.join(format!("arca/v1/{f}.proto")))
        .collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("arca_v1_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
