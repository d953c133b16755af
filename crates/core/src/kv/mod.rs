//! Versioned KV secrets (Vault KV v2 semantics) over encrypted records.
//!
//! Layout in the `kv` column family (paths are not secret; values and metadata are):
//! * `m/<path>`: metadata, barrier-encrypted with AAD `secret/metadata/<path>`;
//! * `d/<path>\0<version u64 BE>`: one version's data, AAD `secret/data/<path>#<version>`, so a
//!   version's ciphertext cannot be replayed as another version or another secret.

use std::collections::BTreeMap;

use arca_crypto::Keyring;
use arca_raft::Op;
use arca_storage::Cf;
use zeroize::{Zeroize, Zeroizing};

use serde::{Deserialize, Serialize};

use crate::codec::encrypt_json;
use crate::{Error, Result};

/// The KV v2 engine (`Core`'s reads and guarded writes of secrets).
pub(crate) mod engine;

/// A secret's key/value pairs. Zeroized when dropped; `Debug` shows only the key count.
#[derive(Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretData(pub BTreeMap<String, String>);

impl Drop for SecretData {
    fn drop(&mut self) {
        for (mut k, mut v) in std::mem::take(&mut self.0) {
            k.zeroize();
            v.zeroize();
        }
    }
}

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretData({} keys, values redacted)", self.0.len())
    }
}

/// Versions kept per secret unless configured otherwise.
pub const DEFAULT_MAX_VERSIONS: u32 = 10;
/// Largest accepted secret (its JSON encoding), in bytes.
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// One version's lifecycle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMetadata {
    pub version: u64,
    pub created_ms: i64,
    /// Soft-deleted at this time; undelete clears it.
    pub deleted_ms: Option<i64>,
    /// Data removed for good.
    pub destroyed: bool,
}

impl VersionMetadata {
    /// Whether the version is deleted at `now` (a deletion may be scheduled for later by
    /// `delete_version_after`).
    pub fn deleted_at(&self, now: i64) -> bool {
        self.deleted_ms.is_some_and(|d| d <= now)
    }
}

/// A version's stage label. `current` is what reads return by default; rotation writes its new
/// value as `pending` and, when it finishes, moves `current` to it and labels the old one
/// `previous` (still valid on the target for alternating-user rotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Current,
    Pending,
    Previous,
}

impl std::str::FromStr for Stage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Stage> {
        match s {
            "current" => Ok(Stage::Current),
            "pending" => Ok(Stage::Pending),
            "previous" => Ok(Stage::Previous),
            other => Err(Error::InvalidArgument(format!("unknown stage {other:?}: use current, pending or previous"))),
        }
    }
}

/// A secret's metadata: current version and every version still tracked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMetadata {
    pub path: String,
    pub current_version: u64,
    pub max_versions: u32,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub versions: BTreeMap<u64, VersionMetadata>,
    /// The version labelled `pending` (a rotation in progress).
    #[serde(default)]
    pub pending_version: Option<u64>,
    /// The version labelled `previous` (the one `current` replaced).
    #[serde(default)]
    pub previous_version: Option<u64>,
    /// Writes must carry a check-and-set version (Vault's `cas_required`).
    #[serde(default)]
    pub cas_required: bool,
    /// Free-form labels (Vault's `custom_metadata`); stored encrypted like the rest.
    #[serde(default)]
    pub custom_metadata: BTreeMap<String, String>,
    /// New versions are deleted this long after they are written (Vault's
    /// `delete_version_after`); 0: kept until pruned or deleted.
    #[serde(default)]
    pub delete_version_after_ms: i64,
    /// How many metadata writes the secret has had (Vault's `current_metadata_version`).
    #[serde(default)]
    pub metadata_version: u64,
}

/// What a metadata write changes; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataSettings {
    pub max_versions: Option<u32>,
    pub cas_required: Option<bool>,
    /// 0 turns automatic deletion off.
    pub delete_version_after_ms: Option<i64>,
    /// Labels to set (`Some`) or remove (`None`).
    pub custom_metadata: BTreeMap<String, Option<String>>,
    /// Whether `custom_metadata` replaces all labels (a PUT) or is merged into them (a PATCH).
    pub replace_custom_metadata: bool,
}

/// Most custom metadata labels on one secret, and their sizes (Vault's limits).
pub const MAX_CUSTOM_METADATA_KEYS: usize = 64;
pub const MAX_CUSTOM_METADATA_KEY_BYTES: usize = 128;
pub const MAX_CUSTOM_METADATA_VALUE_BYTES: usize = 512;
/// Longest `delete_version_after` (100 years): a deletion time always fits.
pub const MAX_DELETE_VERSION_AFTER_MS: i64 = 100 * 365 * 86_400_000;

impl MetadataSettings {
    /// Applies these settings to `meta`, refusing what is out of bounds.
    pub(crate) fn apply(&self, meta: &mut SecretMetadata) -> crate::Result<()> {
        let invalid = |m: String| crate::Error::InvalidArgument(m);
        meta.metadata_version += 1;
        if let Some(n) = self.max_versions {
            if n == 0 {
                return Err(invalid("max_versions must be at least 1".into()));
            }
            meta.max_versions = n;
        }
        if let Some(required) = self.cas_required {
            meta.cas_required = required;
        }
        if let Some(after) = self.delete_version_after_ms {
            if !(0..=MAX_DELETE_VERSION_AFTER_MS).contains(&after) {
                return Err(invalid(format!(
                    "delete_version_after must be between 0 (off) and {} days",
                    MAX_DELETE_VERSION_AFTER_MS / 86_400_000
                )));
            }
            meta.delete_version_after_ms = after;
        }
        if self.replace_custom_metadata {
            meta.custom_metadata.clear();
        }
        for (k, v) in &self.custom_metadata {
            if k.is_empty() || k.len() > MAX_CUSTOM_METADATA_KEY_BYTES {
                return Err(invalid(format!(
                    "custom_metadata key {:?} must be 1 to {MAX_CUSTOM_METADATA_KEY_BYTES} bytes",
                    crate::text::cap(k)
                )));
            }
            match v {
                Some(v) if v.len() > MAX_CUSTOM_METADATA_VALUE_BYTES => {
                    return Err(invalid(format!(
                        "custom_metadata.{k} is {} bytes, over the {MAX_CUSTOM_METADATA_VALUE_BYTES}-byte limit",
                        v.len()
                    )))
                }
                Some(v) => {
                    meta.custom_metadata.insert(k.clone(), v.clone());
                }
                None => {
                    meta.custom_metadata.remove(k);
                }
            }
        }
        if meta.custom_metadata.len() > MAX_CUSTOM_METADATA_KEYS {
            return Err(invalid(format!("custom_metadata may hold at most {MAX_CUSTOM_METADATA_KEYS} keys")));
        }
        Ok(())
    }
}

impl SecretMetadata {
    pub(crate) fn new(path: &str, now: i64) -> Self {
        SecretMetadata {
            path: path.to_string(),
            current_version: 0,
            max_versions: DEFAULT_MAX_VERSIONS,
            created_ms: now,
            updated_ms: now,
            versions: BTreeMap::new(),
            pending_version: None,
            previous_version: None,
            cas_required: false,
            custom_metadata: BTreeMap::new(),
            delete_version_after_ms: 0,
            metadata_version: 0,
        }
    }

    /// A new version written at `now`, due for deletion if the secret says so.
    fn new_version(&self, now: i64) -> VersionMetadata {
        let deleted_ms = (self.delete_version_after_ms > 0).then(|| now.saturating_add(self.delete_version_after_ms));
        VersionMetadata { version: self.next_version(), created_ms: now, deleted_ms, destroyed: false }
    }

    /// The number the next version gets: above every version ever tracked, pending included.
    fn next_version(&self) -> u64 {
        self.versions.keys().next_back().copied().unwrap_or(0).max(self.current_version) + 1
    }

    /// Adds a version labelled `pending`, leaving `current` as it is. Returns it and the versions
    /// pruned beyond `max_versions`.
    pub(crate) fn add_pending(&mut self, now: i64) -> (VersionMetadata, Vec<u64>) {
        let v = self.new_version(now);
        self.pending_version = Some(v.version);
        self.updated_ms = now;
        self.versions.insert(v.version, v.clone());
        (v, self.prune())
    }

    /// Makes the pending version current; the old current becomes `previous`.
    pub(crate) fn promote_pending(&mut self, now: i64) -> Result<u64> {
        let pending = self.pending_version.take().ok_or(Error::Conflict)?;
        if self.current_version != 0 {
            self.previous_version = Some(self.current_version);
        }
        self.current_version = pending;
        self.updated_ms = now;
        Ok(pending)
    }

    /// The version carrying `stage`, if any.
    pub fn stage_version(&self, stage: Stage) -> Option<u64> {
        match stage {
            Stage::Current => (self.current_version != 0).then_some(self.current_version),
            Stage::Pending => self.pending_version,
            Stage::Previous => self.previous_version,
        }
    }

    fn labelled(&self, v: u64) -> bool {
        v == self.current_version || Some(v) == self.pending_version || Some(v) == self.previous_version
    }

    /// Adds the next version, checking `cas`. Returns the new version and the versions pruned
    /// beyond `max_versions` (their data must be deleted).
    pub(crate) fn add_version(&mut self, cas: Option<u64>, now: i64) -> Result<(VersionMetadata, Vec<u64>)> {
        if let Some(expected) = cas {
            if expected != self.current_version {
                return Err(Error::CasMismatch { expected, current: self.current_version });
            }
        }
        let v = self.new_version(now);
        if self.current_version != 0 {
            self.previous_version = Some(self.current_version);
        }
        self.current_version = v.version;
        self.updated_ms = now;
        self.versions.insert(v.version, v.clone());
        Ok((v, self.prune()))
    }

    /// Drops the oldest versions beyond `max_versions`, never one with a stage label (a
    /// rotation's `previous` must stay readable however small `max_versions` is).
    pub(crate) fn prune(&mut self) -> Vec<u64> {
        let mut pruned = Vec::new();
        let excess = self.versions.len().saturating_sub(self.max_versions as usize);
        let oldest: Vec<u64> = self.versions.keys().copied().filter(|v| !self.labelled(*v)).take(excess).collect();
        for v in oldest {
            self.versions.remove(&v);
            pruned.push(v);
        }
        pruned
    }

    /// The versions an operation targets: the listed ones, or the current one if none listed.
    pub(crate) fn targets(&self, versions: &[u64]) -> Result<Vec<u64>> {
        let wanted = if versions.is_empty() { vec![self.current_version] } else { versions.to_vec() };
        for v in &wanted {
            if !self.versions.contains_key(v) {
                return Err(Error::NotFound(format!("version {v} of {} does not exist", self.path)));
            }
        }
        Ok(wanted)
    }

    /// The version a read returns, or why there is none.
    pub(crate) fn readable(&self, version: Option<u64>) -> Result<&VersionMetadata> {
        let v = version.unwrap_or(self.current_version);
        let meta = self
            .versions
            .get(&v)
            .ok_or_else(|| Error::NotFound(format!("version {v} of {} does not exist", self.path)))?;
        if meta.destroyed {
            return Err(Error::NotFound(format!("version {v} of {} was destroyed", self.path)));
        }
        if meta.deleted_at(crate::now_ms()) {
            return Err(Error::NotFound(format!(
                "version {v} of {} is deleted; 'arca kv undelete --versions {v}' restores it",
                self.path
            )));
        }
        Ok(meta)
    }
}

pub(crate) fn meta_key(path: &str) -> Vec<u8> {
    [b"m/", path.as_bytes()].concat()
}

pub(crate) fn meta_aad(path: &str) -> Vec<u8> {
    format!("secret/metadata/{path}").into_bytes()
}

pub(crate) fn data_key(path: &str, version: u64) -> Vec<u8> {
    [b"d/", path.as_bytes(), b"\0", &version.to_be_bytes()].concat()
}

/// Which secret a `kv` column family key belongs to: `(path, Some(version))` for a version's
/// data, `(path, None)` for the metadata record.
pub(crate) fn parse_key(key: &[u8]) -> Option<(&str, Option<u64>)> {
    if let Some(path) = key.strip_prefix(b"m/") {
        return Some((std::str::from_utf8(path).ok()?, None));
    }
    let rest = key.strip_prefix(b"d/")?;
    let (path, tail) = rest.split_at(rest.len().checked_sub(9)?);
    let version = u64::from_be_bytes(tail.strip_prefix(b"\0")?.try_into().ok()?);
    Some((std::str::from_utf8(path).ok()?, Some(version)))
}

pub(crate) fn data_aad(path: &str, version: u64) -> Vec<u8> {
    format!("secret/data/{path}#{version}").into_bytes()
}

/// Vault-style listing: the immediate children of `prefix` among `paths`, folders with a
/// trailing `/`, each once, in order.
pub(crate) fn children<'a>(prefix: &str, paths: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in paths {
        let Some(rest) = p.strip_prefix(prefix) else { continue };
        let child = match rest.find('/') {
            Some(i) => &rest[..=i],
            None => rest,
        };
        if !child.is_empty() && out.last().map(String::as_str) != Some(child) {
            out.push(child.to_string());
        }
    }
    out
}

/// Refuses a write without check-and-set to a secret whose metadata requires it.
pub(crate) fn require_cas(meta: Option<&SecretMetadata>, cas: Option<u64>) -> Result<()> {
    if meta.is_some_and(|m| m.cas_required) && cas.is_none() {
        return Err(Error::InvalidArgument(
            "check-and-set parameter required for this call: this secret has cas_required set; send options.cas \
             (the version you read, or 0 to create)"
                .into(),
        ));
    }
    Ok(())
}

/// A secret's value as stored (before encryption), refused when over the size limit.
pub(crate) fn encode_value(data: &SecretData) -> Result<Zeroizing<Vec<u8>>> {
    let plain = Zeroizing::new(serde_json::to_vec(data).map_err(|e| Error::Internal(e.to_string()))?);
    if plain.len() > MAX_VALUE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "secret value is {} bytes, over the {MAX_VALUE_BYTES}-byte limit",
            plain.len()
        )));
    }
    Ok(plain)
}

/// Adds a version holding `plain` to `meta` (checked against `cas`): the ops that write it and
/// drop the versions it pushes out.
pub(crate) fn new_version(
    keyring: &Keyring,
    path: &str,
    meta: &mut SecretMetadata,
    plain: &[u8],
    cas: Option<u64>,
    now: i64,
) -> Result<(Vec<Op>, VersionMetadata)> {
    let (version, pruned) = meta.add_version(cas, now)?;
    let mut ops = vec![kv_data_op(keyring, path, version.version, plain)?];
    ops.extend(pruned.into_iter().map(|v| Op::Delete { cf: Cf::Kv, key: data_key(path, v) }));
    Ok((ops, version))
}

/// The write of a secret's metadata, encrypted and bound to its path.
pub(crate) fn kv_meta_op(keyring: &Keyring, path: &str, meta: &SecretMetadata) -> Result<Op> {
    Ok(Op::Put { cf: Cf::Kv, key: meta_key(path), value: encrypt_json(keyring, &meta_aad(path), meta)? })
}

/// The write of one version's data (its JSON), encrypted and bound to its path and version.
pub(crate) fn kv_data_op(keyring: &Keyring, path: &str, version: u64, plain: &[u8]) -> Result<Op> {
    let value = keyring.encrypt(&data_aad(path, version), plain).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Op::Put { cf: Cf::Kv, key: data_key(path, version), value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_cas_and_pruning() {
        let mut m = SecretMetadata::new("app/db", 1);
        m.max_versions = 2;
        assert!(matches!(m.add_version(Some(1), 2), Err(Error::CasMismatch { expected: 1, current: 0 })));
        assert_eq!(m.add_version(Some(0), 2).unwrap().0.version, 1);
        assert_eq!(m.add_version(None, 3).unwrap().1, Vec::<u64>::new());
        let (v3, pruned) = m.add_version(Some(2), 4).unwrap();
        assert_eq!((v3.version, pruned), (3, vec![1]));
        assert!(m.readable(Some(1)).unwrap_err().to_string().contains("does not exist"));
        m.versions.get_mut(&3).unwrap().deleted_ms = Some(5);
        assert!(m.readable(None).unwrap_err().to_string().contains("is deleted"));
        assert_eq!(m.readable(Some(2)).unwrap().version, 2);
    }

    #[test]
    fn keys_parse_back() {
        assert_eq!(parse_key(&meta_key("app/db")), Some(("app/db", None)));
        assert_eq!(parse_key(&data_key("app/db", 7)), Some(("app/db", Some(7))));
        assert_eq!(parse_key(b"d/short"), None);
        assert_eq!(parse_key(b"x/app"), None);
    }

    #[test]
    fn listing_children() {
        let paths = ["app/db", "app/x/a", "app/x/b", "apps", "other"];
        assert_eq!(children("app/", paths.iter().copied()), vec!["db", "x/"]);
        assert_eq!(children("", paths.iter().copied()), vec!["app/", "apps", "other"]);
    }
}
