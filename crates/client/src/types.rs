//! The SDK's own views of what the server answers: [`TokenInfo`], [`SecretMetadata`],
//! [`VersionInfo`]. Converted from the wire messages in one place, so an application never
//! depends on generated types (which follow `proto/` and may change with it).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arca_proto as proto;

/// A wire time (Unix milliseconds, 0 for none) as a point in time.
fn time(ms: i64) -> Option<SystemTime> {
    (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms as u64))
}

/// What the cluster knows of a token. Never holds the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The token's public handle: safe to log, used to look up or revoke it.
    pub accessor: String,
    pub policies: Vec<String>,
    pub display_name: String,
    pub created: Option<SystemTime>,
    /// `None`: the token does not expire.
    pub expires: Option<SystemTime>,
    /// The latest time renewals can reach; `None`: no limit.
    pub max_expires: Option<SystemTime>,
    pub renewable: bool,
    /// Uses left, for a token limited in uses.
    pub uses_left: Option<u32>,
    /// The accessor of the token that created this one (empty for an orphan).
    pub parent_accessor: String,
    pub meta: BTreeMap<String, String>,
    /// How the token was obtained: `token`, `approle`, `cert`, `jwt`.
    pub auth_method: String,
    /// The login role, for a token from a login.
    pub role: String,
    /// Who logged in (a certificate's subject, a JWT's subject claim), for a token from a login.
    pub identity: String,
}

impl From<proto::TokenInfo> for TokenInfo {
    fn from(t: proto::TokenInfo) -> Self {
        TokenInfo {
            accessor: t.accessor,
            policies: t.policies,
            display_name: t.display_name,
            created: time(t.created_ms),
            expires: time(t.expires_ms),
            max_expires: time(t.max_expires_ms),
            renewable: t.renewable,
            uses_left: t.uses_left,
            parent_accessor: t.parent_accessor,
            meta: t.meta.into_iter().collect(),
            auth_method: t.auth_method,
            role: t.role,
            identity: t.identity,
        }
    }
}

/// One version of a secret, without its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: u64,
    pub created: Option<SystemTime>,
    /// When it was soft-deleted (it can be undeleted); `None`: not deleted.
    pub deleted: Option<SystemTime>,
    /// Its data is gone for good.
    pub destroyed: bool,
}

impl From<proto::VersionMetadata> for VersionInfo {
    fn from(v: proto::VersionMetadata) -> Self {
        VersionInfo {
            version: v.version,
            created: time(v.created_ms),
            deleted: time(v.deleted_ms),
            destroyed: v.destroyed,
        }
    }
}

/// A secret's versions and stage labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMetadata {
    pub path: String,
    pub current_version: u64,
    /// How many versions are kept.
    pub max_versions: u32,
    pub created: Option<SystemTime>,
    pub updated: Option<SystemTime>,
    /// The versions kept, oldest first.
    pub versions: Vec<VersionInfo>,
    /// The version a rotation in progress wrote and has not yet promoted.
    pub pending_version: Option<u64>,
    /// The version `current` replaced, still valid for an alternating-user rotation.
    pub previous_version: Option<u64>,
}

impl From<proto::SecretMetadata> for SecretMetadata {
    fn from(m: proto::SecretMetadata) -> Self {
        SecretMetadata {
            path: m.path,
            current_version: m.current_version,
            max_versions: m.max_versions,
            created: time(m.created_ms),
            updated: time(m.updated_ms),
            versions: m.versions.into_iter().map(VersionInfo::from).collect(),
            pending_version: (m.pending_version != 0).then_some(m.pending_version),
            previous_version: (m.previous_version != 0).then_some(m.previous_version),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_times_and_versions_mean_none() {
        let m = SecretMetadata::from(proto::SecretMetadata {
            path: "app/db".into(),
            current_version: 3,
            created_ms: 1_000,
            versions: vec![proto::VersionMetadata { version: 3, created_ms: 2_000, ..Default::default() }],
            ..Default::default()
        });
        assert_eq!(m.created, Some(UNIX_EPOCH + Duration::from_secs(1)));
        assert_eq!((m.updated, m.pending_version, m.previous_version), (None, None, None));
        assert_eq!(m.versions[0].deleted, None);
        assert_eq!(TokenInfo::from(proto::TokenInfo::default()).expires, None);
    }
}
