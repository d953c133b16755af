//! Tokens: random, prefixed, stored only as a hash, each with an accessor, a TTL and a parent.
//!
//! Storage (the `tokens` column family):
//! * `t/<sha256(token)>` → the [`TokenInfo`], barrier-encrypted with that key as AAD;
//! * `a/<accessor>` → `t/<sha256(token)>`: lookup and revocation by accessor (a one-way hash,
//!   never the token);
//! * `c/<parent accessor>/<child accessor>` → empty: the children to revoke with a parent.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::policy::ROOT_POLICY;
use crate::{Error, Result};

/// Every token starts with this, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "arca_";
/// TTL of a token created without one, and the most any token can live: 32 days, as Vault.
pub const DEFAULT_MAX_TTL_MS: i64 = 32 * 24 * 3600 * 1000;

/// How a token came to be: the auth method and the identity it proved.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthSource {
    /// `token`, `approle`, `cert` or `jwt`.
    pub method: String,
    /// The role the login used, if any.
    pub role: String,
    /// The proven identity: certificate subject, JWT subject, AppRole role; empty for tokens
    /// made by other tokens.
    pub identity: String,
}

/// What is stored for a token, encrypted, under the hash of the token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenInfo {
    /// Non-secret handle for lookup and revocation.
    pub accessor: String,
    pub policies: Vec<String>,
    pub display_name: String,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    pub created_ms: i64,
    /// `None`: never expires (root tokens).
    pub expires_ms: Option<i64>,
    /// The TTL a renewal without an explicit increment grants again.
    #[serde(default)]
    pub ttl_ms: i64,
    /// Renewals never extend past this.
    #[serde(default)]
    pub max_expires_ms: Option<i64>,
    #[serde(default)]
    pub renewable: bool,
    /// Uses left; `None` for unlimited. A token is deleted when its last use is taken.
    #[serde(default)]
    pub uses_left: Option<u32>,
    /// The parent's accessor; `None` for orphans (root tokens, logins, `--orphan`).
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub auth: AuthSource,
}

impl TokenInfo {
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == ROOT_POLICY)
    }

    pub fn expired_at(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|e| e <= now_ms)
    }

    /// The expiry a renewal at `now_ms` asking for `increment_ms` (or the token's own TTL)
    /// grants: never past the max TTL.
    pub fn renewed_expiry(&self, now_ms: i64, increment_ms: Option<i64>) -> Result<Option<i64>> {
        let Some(_) = self.expires_ms else { return Ok(None) };
        if !self.renewable {
            return Err(Error::InvalidArgument("this token is not renewable".into()));
        }
        let wanted = now_ms.saturating_add(increment_ms.unwrap_or(self.ttl_ms));
        Ok(Some(self.max_expires_ms.map_or(wanted, |max| wanted.min(max))))
    }
}

/// A fresh token and its accessor.
pub(crate) fn generate() -> Result<(Zeroizing<String>, String)> {
    let mut raw = Zeroizing::new([0u8; 32]);
    arca_crypto::random_bytes(&mut raw[..]).map_err(|e| Error::Internal(e.to_string()))?;
    let token = Zeroizing::new(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(&raw[..])));
    Ok((token, random_id(12)?))
}

/// `bytes` random bytes, hex: accessors, role ids, ids that are handles rather than secrets.
pub(crate) fn random_id(bytes: usize) -> Result<String> {
    let mut id = vec![0u8; bytes];
    arca_crypto::random_bytes(&mut id).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(hex::encode(id))
}

/// SHA-256 of a high-entropy credential, hex. A 256-bit random token needs no slow hash; the
/// lookup by hash means the credential itself is never compared or stored.
pub(crate) fn hash_hex(credential: &str) -> String {
    arca_crypto::to_hex(&Sha256::digest(credential.as_bytes()))
}

/// The storage key of a token.
pub(crate) fn storage_key(token: &str) -> Vec<u8> {
    format!("t/{}", hash_hex(token)).into_bytes()
}

pub(crate) fn accessor_key(accessor: &str) -> Vec<u8> {
    format!("a/{accessor}").into_bytes()
}

pub(crate) fn child_key(parent: &str, child: &str) -> Vec<u8> {
    format!("c/{parent}/{child}").into_bytes()
}

pub(crate) fn children_prefix(parent: &str) -> Vec<u8> {
    format!("c/{parent}/").into_bytes()
}

/// Cheap shape check before touching storage, so garbage gets the same error as a bad token
/// without a lookup.
pub(crate) fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_PREFIX.len() + 43
        && token.starts_with(TOKEN_PREFIX)
        && token[TOKEN_PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An accessor as it is generated: 24 hex digits. Checked before it becomes part of a key.
pub(crate) fn valid_accessor(accessor: &str) -> Result<()> {
    if accessor.len() == 24 && accessor.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("{accessor:?} is not a token accessor (24 hex digits)")))
    }
}

/// The authenticated caller.
pub(crate) struct Caller {
    pub key: Vec<u8>,
    pub info: TokenInfo,
}

/// Everything decided about a token before it is written.
pub(crate) struct NewToken {
    pub policies: Vec<String>,
    pub ttl_ms: Option<i64>,
    pub max_ttl_ms: Option<i64>,
    pub display_name: String,
    pub meta: BTreeMap<String, String>,
    /// Accessor, storage key and expiry of the parent; `None` for orphans.
    pub parent: Option<(String, Vec<u8>, Option<i64>)>,
    pub renewable: bool,
    pub num_uses: u32,
    pub auth: AuthSource,
    /// A root token: no expiry.
    pub root: bool,
}

impl NewToken {
    /// A root token: every capability, no expiry, no parent.
    pub fn root(method: &str) -> NewToken {
        NewToken {
            policies: vec![ROOT_POLICY.into()],
            ttl_ms: None,
            max_ttl_ms: None,
            display_name: "root".into(),
            meta: BTreeMap::new(),
            parent: None,
            renewable: false,
            num_uses: 0,
            auth: AuthSource { method: method.into(), ..Default::default() },
            root: true,
        }
    }

    pub(crate) fn into_info(self, accessor: String, now: i64) -> TokenInfo {
        let cap = |v: i64| v.min(DEFAULT_MAX_TTL_MS);
        let max_ttl = cap(self.max_ttl_ms.unwrap_or(DEFAULT_MAX_TTL_MS));
        let ttl = self.ttl_ms.map_or(max_ttl, |t| t.min(max_ttl));
        let parent_expiry = self.parent.as_ref().and_then(|(_, _, e)| *e);
        // A child never outlives its parent: it would be revoked with it anyway.
        let bound = |t: i64| parent_expiry.map_or(t, |p| t.min(p));
        let (expires_ms, max_expires_ms) =
            if self.root { (None, None) } else { (Some(bound(now + ttl)), Some(bound(now + max_ttl))) };
        TokenInfo {
            accessor,
            policies: self.policies,
            display_name: self.display_name,
            meta: self.meta,
            created_ms: now,
            expires_ms,
            ttl_ms: ttl,
            max_expires_ms,
            renewable: self.renewable && !self.root,
            uses_left: (self.num_uses > 0).then_some(self.num_uses),
            parent: self.parent.map(|(a, _, _)| a),
            auth: self.auth,
        }
    }
}

/// The token store: create, authenticate, renew, revoke, purge.
pub(crate) mod store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_unique_and_well_formed() {
        let (a, acc_a) = generate().unwrap();
        let (b, acc_b) = generate().unwrap();
        assert_ne!(*a, *b);
        assert_ne!(acc_a, acc_b);
        valid_accessor(&acc_a).unwrap();
        assert!(valid_accessor("../x").is_err());
        assert!(well_formed(&a), "{}", a.len());
        assert!(!well_formed("arca_short"));
        assert!(!well_formed(&a.replace(TOKEN_PREFIX, "xxxx_")));
        assert_ne!(storage_key(&a), storage_key(&b));
        assert!(!String::from_utf8_lossy(&storage_key(&a)).contains(&a[TOKEN_PREFIX.len()..]));
    }

    #[test]
    fn renewal_is_bounded_by_max_ttl() {
        let info = TokenInfo {
            accessor: String::new(),
            policies: vec![],
            display_name: String::new(),
            meta: BTreeMap::new(),
            created_ms: 0,
            expires_ms: Some(1000),
            ttl_ms: 1000,
            max_expires_ms: Some(2500),
            renewable: true,
            uses_left: None,
            parent: None,
            auth: AuthSource::default(),
        };
        assert_eq!(info.renewed_expiry(900, None).unwrap(), Some(1900));
        assert_eq!(info.renewed_expiry(2000, None).unwrap(), Some(2500));
        assert_eq!(info.renewed_expiry(100, Some(10_000)).unwrap(), Some(2500));
        let fixed = TokenInfo { renewable: false, ..info };
        assert!(fixed.renewed_expiry(900, None).is_err());
    }
}
