//! Tokens: random, prefixed, stored only as a hash.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Every token starts with this, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "arca_";
/// The policy that allows everything; only the initial root token holds it.
pub const ROOT_POLICY: &str = "root";

/// What is stored for a token, encrypted, under the hash of the token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenInfo {
    /// Non-secret handle for lookup and revocation.
    pub accessor: String,
    pub policies: Vec<String>,
    pub display_name: String,
    pub created_ms: i64,
    /// `None`: never expires (root token).
    pub expires_ms: Option<i64>,
}

impl TokenInfo {
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == ROOT_POLICY)
    }
}

/// A fresh token and its accessor.
pub(crate) fn generate() -> Result<(Zeroizing<String>, String)> {
    let mut raw = Zeroizing::new([0u8; 32]);
    arca_crypto::random_bytes(&mut raw[..]).map_err(|e| Error::Internal(e.to_string()))?;
    let token = Zeroizing::new(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(&raw[..])));
    let mut accessor = [0u8; 12];
    arca_crypto::random_bytes(&mut accessor).map_err(|e| Error::Internal(e.to_string()))?;
    Ok((token, hex::encode(accessor)))
}

/// The storage key of a token: SHA-256 of the token. A 256-bit random token needs no slow
/// hash; the lookup by hash means the token itself is never compared or stored.
pub(crate) fn storage_key(token: &str) -> Vec<u8> {
    let mut key = b"t/".to_vec();
    key.extend_from_slice(hex::encode(Sha256::digest(token.as_bytes())).as_bytes());
    key
}

/// Cheap shape check before touching storage, so garbage gets the same error as a bad token
/// without a lookup.
pub(crate) fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_PREFIX.len() + 43
        && token.starts_with(TOKEN_PREFIX)
        && token[TOKEN_PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_unique_and_well_formed() {
        let (a, acc_a) = generate().unwrap();
        let (b, acc_b) = generate().unwrap();
        assert_ne!(*a, *b);
        assert_ne!(acc_a, acc_b);
        assert!(well_formed(&a), "{}", a.len());
        assert!(!well_formed("arca_short"));
        assert!(!well_formed(&a.replace(TOKEN_PREFIX, "xxxx_")));
        assert_ne!(storage_key(&a), storage_key(&b));
        assert!(!String::from_utf8_lossy(&storage_key(&a)).contains(&a[TOKEN_PREFIX.len()..]));
    }
}
