//! Stored ciphertext as it arrives from a peer, a Raft snapshot or a restored backup: barrier
//! records, a sealed keyring and a legacy term record. Opening garbage must fail cleanly.
#![no_main]

use arca_crypto::{Keyring, SecretKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let root = SecretKey::from_slice(&[3u8; 32]).expect("a 32-byte key");
    let keyring = Keyring::from_key(1, SecretKey::from_slice(&[5u8; 32]).expect("a 32-byte key")).expect("keyring");
    let _ = keyring.decrypt(b"secret/data/app", data);
    let _ = Keyring::term_of(data);
    let _ = Keyring::unseal(&root, data);
    let _ = keyring.load_term(2, b"keyring/term/2", data);
});
