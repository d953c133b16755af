//! Arca's cryptographic core.
//!
//! Everything that turns secrets into something safe to store lives here:
//!
//! * [`Keyring`]: the encryption *barrier*. AES-256-GCM with a fresh random nonce per record,
//!   the storage path bound in as associated data, and numbered key *terms* so keys can be
//!   rotated online while old records stay readable.
//! * [`shamir`]: splitting the root key into unseal shares and putting it back together,
//!   with every way a human can hand us the wrong shares reported as its own error.
//! * [`AuditHasher`]: `hmac-sha256:<hex>` fingerprints that let audit records refer to secret
//!   values without containing them.
//! * [`PgpRecipient`]: an operator's OpenPGP key, to hand out unseal shares and root tokens
//!   that only its holder can decrypt.
//! * [`SecretKey`]: 32 bytes that zeroize on drop and never print.
//!
//! Nothing in this crate logs, and no error message ever contains key material or plaintext.

mod audit;
mod barrier;
mod error;
mod key;
mod pgp;
pub mod shamir;

pub use audit::{AuditHasher, HMAC_PREFIX};
pub use barrier::{Keyring, RECORD_OVERHEAD, RECORD_VERSION};
pub use error::{Error, Result};
pub use key::{constant_time_eq, random_bytes, random_id_bytes, to_hex, SecretKey, KEY_LEN};
pub use pgp::PgpRecipient;
pub use zeroize::Zeroizing;
