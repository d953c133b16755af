//! gRPC messages as any client sends them: every method of the client API (listed from the
//! API's own descriptor set), a message body of arbitrary bytes, without a token, with a wrong
//! one, or as root, against a running vault.
//!
//! Input: byte 0 picks the method, byte 1 the token; the rest is the message.
#![no_main]

use std::sync::OnceLock;

use arca_fuzz::{vault, ROOT_SKIPS};
use axum::body::Body;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn methods() -> &'static [String] {
    static METHODS: OnceLock<Vec<String>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let set = prost_types::FileDescriptorSet::decode(arca_server::proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut methods = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
        methods
    })
}

fuzz_target!(|data: &[u8]| {
    let [method, token, message @ ..] = data else { return };
    let methods = methods();
    let method = &methods[*method as usize % methods.len()];
    let vault = vault();
    let root = token % 3 == 2;
    if root && ROOT_SKIPS.iter().any(|s| method.contains(s)) {
        return;
    }
    // One length-prefixed gRPC frame, uncompressed.
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    let mut request = axum::http::Request::builder()
        .method("POST")
        .uri(method.as_str())
        .version(axum::http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    match token % 3 {
        1 => request = request.header("authorization", "Bearer arca.not-a-token"),
        2 => request = request.header("authorization", format!("Bearer {}", vault.root)),
        _ => {}
    }
    vault.send(request.body(Body::from(body)).unwrap());
});
