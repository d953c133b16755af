//! Records as the vault stores them: a value serialized to JSON and sealed by the keyring
//! (AES-256-GCM) with its storage key as AAD, so a record moved to another key does not open.

use arca_crypto::Keyring;
use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::{Error, Result};

pub(crate) fn encrypt_json<T: Serialize>(keyring: &Keyring, aad: &[u8], value: &T) -> Result<Vec<u8>> {
    let plain = Zeroizing::new(serde_json::to_vec(value).map_err(|e| Error::Internal(e.to_string()))?);
    keyring.encrypt(aad, &plain).map_err(|e| Error::Internal(e.to_string()))
}

pub(crate) fn decrypt_json<T: DeserializeOwned>(keyring: &Keyring, aad: &[u8], record: &[u8]) -> Result<T> {
    let corrupt = |reason: String| Error::Corrupt { path: String::from_utf8_lossy(aad).into_owned(), reason };
    let plain = keyring.decrypt(aad, record).map_err(|e| corrupt(e.to_string()))?;
    // Only where and what kind: serde's message can quote the decrypted plaintext.
    serde_json::from_slice(&plain).map_err(|e| {
        corrupt(format!(
            "the decrypted record does not decode ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record that decrypts but does not decode must not quote what it decrypted to.
    #[test]
    fn decode_errors_never_quote_the_plaintext() {
        let keyring = Keyring::generate().unwrap();
        let sealed = encrypt_json(&keyring, b"p", &"hunter2-the-secret").unwrap();
        let e = decrypt_json::<u64>(&keyring, b"p", &sealed).unwrap_err().to_string();
        assert!(e.contains("does not decode") && !e.contains("hunter2"), "{e}");
    }
}
