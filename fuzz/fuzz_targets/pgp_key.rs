//! OpenPGP public keys sent with a rekey or generate-root request (binary, base64 or armored):
//! refused with an error or accepted, never a panic or a hang.
#![no_main]

use arca_crypto::PgpRecipient;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(key) = PgpRecipient::parse(&text, "fuzz") {
        let _ = key.fingerprint();
        let _ = key.encrypt(b"share");
    }
});
