//! A JWT as a login presents it, against a role with bound claims and an EC P-256 key: as raw
//! text (the header and encoding checks), and with fuzzed claims signed by the configured key,
//! so the claim checks behind the signature are reached too. The key pair is a throwaway made
//! for this target.
//!
//! Input: byte 0 picks raw (even) or signed (odd); the rest is the token or the claims.
#![no_main]

use arca_core::auth::{JwtConfig, JwtRole};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;

const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9izz/3hQYhQNVB/ghEc0CYPSYR0R\neSQghO3u3QRcdbovm6r3ENnTtOhjbS1tipDSFg8Vw9t0spxHmDDgvCa1NQ==\n-----END PUBLIC KEY-----";
const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgLWR2YSdOIGary3yD\nXZUCflMnCy6xZkfpNte3A3WxE5GhRANCAAT2LPP/eFBiFA1UH+CERzQJg9JhHRF5\nJCCE7e7dBFx1ui+bqvcQ2dO06GNtLW2KkNIWDxXD23SynEeYMOC8JrU1\n-----END PRIVATE KEY-----";

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let config = JwtConfig { pem_keys: vec![PUBLIC.to_string()], jwks: String::new(), bound_issuer: "arca".into() };
    let role = JwtRole {
        name: "fuzz".into(),
        bound_audiences: vec!["arca".into()],
        bound_claims: [("team".to_string(), vec!["a".to_string(), "b".to_string()])].into(),
        user_claim: "email".into(),
        ..Default::default()
    };
    if mode % 2 == 0 {
        let _ = role.verify(&config, text);
        return;
    }
    let Ok(claims) = serde_json::from_str::<serde_json::Value>(text) else { return };
    let key = EncodingKey::from_ec_pem(PRIVATE.as_bytes()).unwrap();
    let Ok(jwt) = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key) else { return };
    let _ = role.verify(&config, &jwt);
});
