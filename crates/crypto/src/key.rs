use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{Error, Result};

/// Length of every symmetric key Arca uses (AES-256, HMAC-SHA256 keys).
pub const KEY_LEN: usize = 32;

/// 32 bytes of key material.
///
/// Zeroized when dropped, not `Clone` by accident (cloning is explicit with
/// [`SecretKey::duplicate`]), and `Debug` prints a placeholder so a stray `{:?}` in a log line
/// or a panic message cannot leak it.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut key = SecretKey([0u8; KEY_LEN]);
        random_bytes(&mut key.0)?;
        Ok(key)
    }

    /// Takes ownership of key bytes; the caller's copy should be zeroized by the caller.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SecretKey(bytes)
    }

    /// Copies a slice into a key, or `None` if it is not exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(SecretKey(arr))
    }

    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// An explicit copy; named so that copies of key material are easy to find in review.
    pub fn duplicate(&self) -> Self {
        SecretKey(self.0)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

impl Eq for SecretKey {}

/// Compares two byte strings in time that depends only on their lengths, never on where they
/// first differ. Use it for every comparison involving a token, hash of a token, or key.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Lengths are not secret (they are fixed by the formats being compared).
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Fills `buf` from the operating system's CSPRNG. For key material and tokens.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::Rng(e.to_string()))
}

/// Lower-case hex of `bytes`. The `hex` crate collects its string one `char` at a time, and
/// every audited request hexes a few hashes: its token's storage key (twice), its request id
/// and every HMAC in its record.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Fills `buf` with bytes that must be unique and unpredictable but protect nothing: request
/// and batch ids. They come from a per-thread ChaCha CSPRNG that the operating system seeds and
/// periodically reseeds (rand's `ThreadRng`), where `random_bytes` makes a system call each
/// time. Not for AEAD nonces: a cloned or restored VM would repeat this generator's output
/// until its next reseed, and a repeated AES-GCM nonce under one key gives away plaintext and
/// lets ciphertexts be forged; the kernel's generator is reseeded when a VM is restored.
pub fn random_id_bytes(buf: &mut [u8]) {
    use rand::RngCore;
    rand::thread_rng().fill_bytes(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_hex_is_lower_case_hex() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(to_hex(&bytes), hex::encode(&bytes));
        assert_eq!(to_hex(&[]), "");
        assert_eq!(to_hex(&[0x0a, 0xf0]), "0af0");
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let key = SecretKey::from_bytes([0xAB; KEY_LEN]);
        let shown = format!("{key:?}");
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(SecretKey::generate().unwrap(), SecretKey::generate().unwrap());
    }

    #[test]
    fn constant_time_eq_semantics() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
