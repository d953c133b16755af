//! The Arca vault, independent of any transport.
//!
//! [`Core::handle`] takes a [`Request`] (operation, token, peer) and returns a [`Reply`]: the
//! gRPC services, and later the HTTP front, only translate. Every request that is not one of the
//! seal-independent system calls goes through the same steps: sealed check, read barrier
//! (linearizable on any node), token authentication, authorization (default deny), handler.

pub mod audit;
pub mod auth;
mod authz;
pub mod backup;
pub mod ceremony;
mod codec;
mod duration;
mod duties;
mod error;
mod execute;
mod grants;
mod init;
mod keyring;
mod kv;
mod lifecycle;
pub mod limits;
mod metrics;
mod path;
mod pipeline;
pub mod policy;
mod request;
pub mod rotation;
mod seal;
mod text;
mod token;
mod vault;
pub mod watch;

pub use audit::{AuditCaller, AuditConfig, AuditFilter, AuditRecord};
pub use auth::login::SECRET_ID_PREFIX;
pub use backup::{Download, Restored, Upload};
pub use duration::parse_duration_secs;
pub use error::{Error, Result};
pub use grants::GrantUse;
pub use keyring::{KeyringInfo, RewrapState};
pub use kv::{
    MetadataSettings, SecretData, SecretMetadata, Stage, VersionMetadata, DEFAULT_MAX_VERSIONS, MAX_VALUE_BYTES,
};
pub use limits::LimitsConfig;
pub use path::{validate_path, validate_prefix, MAX_PATH_BYTES};
pub use pipeline::Rejection;
pub use policy::{DEFAULT_POLICY, ROOT_POLICY};
pub use request::{
    mounts, HealthInfo, InitResult, KvSecret, KvWritten, Member, Mount, MountTable, Need, OpClass, Operation, Reply,
    Request, SealStatus, SecretIdIssued, Spec, TokenCreate, TokenCreated, TokenRef,
};
pub use token::{AuthSource, TokenInfo, DEFAULT_MAX_TTL_MS, TOKEN_PREFIX};
pub use vault::Core;
pub use watch::{WatchEvent, WatchKind};

/// How often a guarded write is re-decided after losing a race before giving up.
pub(crate) const MAX_TXN_ATTEMPTS: usize = 16;

/// Milliseconds since the Unix epoch, decided by the node that proposes a write (apply never
/// reads a clock).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Entry points for the fuzz targets in `fuzz/` (built only with `--cfg fuzzing`, which
/// cargo-fuzz sets).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use arca_crypto::{Keyring, SecretKey};

    /// An audit record read back from the log: as stored (a restore's cleartext system record
    /// or ciphertext), and arbitrary plaintext sealed under the keyring, so the decoder behind
    /// the AEAD is reached too.
    pub fn audit_record(data: &[u8]) {
        let keyring = Keyring::from_key(1, SecretKey::from_slice(&[5u8; 32]).expect("a 32-byte key")).expect("keyring");
        let _ = crate::audit::AuditRecord::open(&keyring, 1, data);
        if let Ok(sealed) = keyring.encrypt(crate::audit::RECORD_AAD, data) {
            let _ = crate::audit::AuditRecord::open(&keyring, 1, &sealed);
        }
    }
}
