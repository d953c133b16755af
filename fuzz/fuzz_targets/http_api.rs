//! The Vault-compatible HTTP API as any client reaches it: a verb, a path with its query, and a
//! body, without a token, with a wrong one, or as root, against a running vault.
//!
//! Input: byte 0 picks the verb, byte 1 the token; then the path up to the first newline, and
//! the body after it.
#![no_main]

use arca_fuzz::{vault, ROOT_SKIPS};
use axum::body::Body;
use libfuzzer_sys::fuzz_target;

const VERBS: [&str; 8] = ["GET", "PUT", "POST", "DELETE", "LIST", "PATCH", "HEAD", "OPTIONS"];

fuzz_target!(|data: &[u8]| {
    let [verb, token, rest @ ..] = data else { return };
    let (path, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(path) = std::str::from_utf8(path) else { return };
    let vault = vault();
    let root = token % 3 == 2;
    if root && ROOT_SKIPS.iter().any(|s| path.contains(s)) {
        return;
    }
    let mut request =
        axum::http::Request::builder().method(VERBS[*verb as usize % VERBS.len()]).uri(format!("/v1/{path}"));
    match token % 3 {
        1 => request = request.header("X-Vault-Token", "hvs.not-a-token"),
        2 => request = request.header("X-Vault-Token", vault.root.as_str()),
        _ => {}
    }
    if verb & 0x80 != 0 {
        request = request.header("Content-Type", "application/json");
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else { return };
    vault.send(request);
});
