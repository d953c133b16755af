use thiserror::Error;

/// Everything that can go wrong in `arca-crypto`.
///
/// Messages name the problem and, where a human can act, what to do. They never contain key
/// bytes, plaintext or share contents.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("the operating system's random number generator failed: {0}")]
    Rng(String),

    #[error(
        "encrypted record is {len} bytes, shorter than the {min}-byte minimum: it is truncated or not an Arca record"
    )]
    RecordTooShort { len: usize, min: usize },

    #[error("encrypted record has format version {0}, this build reads version {ver}", ver = crate::RECORD_VERSION)]
    UnsupportedRecordVersion(u8),

    #[error("encrypted record uses key term {0}, which this keyring does not hold")]
    UnknownTerm(u32),

    #[error(
        "decryption failed: the record was tampered with, moved to another path, or encrypted under a different key"
    )]
    Decrypt,

    #[error("encryption failed")]
    Encrypt,

    #[error("{which} is not a usable PGP public key: {why}")]
    PgpKey { which: String, why: String },

    #[error("keyring is malformed: {0}")]
    MalformedKeyring(&'static str),

    #[error("key term counter exhausted: the keyring already holds term {0}")]
    TermsExhausted(u32),

    #[error("invalid share configuration: need 2 <= threshold ({threshold}) <= shares ({shares}) <= 255")]
    InvalidShareConfig { threshold: usize, shares: usize },

    #[error("unseal share is not valid base64; check that it was copied completely")]
    ShareNotBase64,

    #[error("unseal share decodes to {got} bytes, expected {expected}; check that it was copied completely")]
    ShareWrongLength { got: usize, expected: usize },

    #[error("unseal share has format version {0}, which this build does not understand")]
    ShareUnsupportedVersion(u8),

    #[error("unseal share is corrupted (checksum mismatch); check it for typos")]
    ShareChecksum,

    #[error("share number {0} was already provided; each share counts once")]
    DuplicateShare(u8),

    #[error("unseal share belongs to a different share set (another cluster, or shares replaced by a rekey): expected set {expected}, got set {got}")]
    MixedShares { expected: String, got: String },

    #[error("these shares do not reconstruct the root key; progress has been reset, start again with valid shares")]
    SharesDoNotReconstruct,

    #[error("not enough shares: have {have}, threshold is {threshold}")]
    NotEnoughShares { have: usize, threshold: usize },

    #[error("share splitting failed: {0}")]
    Split(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
