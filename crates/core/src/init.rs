//! The init record, replicated at init: the keyring sealed under the root key, the share set
//! that opens it, and the cluster's id. Its presence means "initialized".

use arca_crypto::shamir::{self, Share, ShareConfig, ShareSetId};
use arca_crypto::{Keyring, SecretKey};
use serde::{Deserialize, Serialize};

/// Key of the init record in the `sys` family. Its presence means "initialized".
pub(crate) const INIT_KEY: &[u8] = b"core/init";

/// Replicated at init. Holds nothing secret: the keyring is sealed under the root key, which
/// exists only as shares held by operators.
#[derive(Serialize, Deserialize)]
pub(crate) struct InitRecord {
    pub share_set: [u8; 8],
    pub threshold: u8,
    pub shares: u8,
    pub sealed_keyring: Vec<u8>,
    /// When the keyring's active term was made (ms since the epoch; 0 in records written
    /// before this was kept): Vault's key-status `install_time`.
    #[serde(default)]
    pub active_term_since_ms: i64,
    /// The cluster's name for backups, fixed at init and kept through rekeys (empty in records
    /// written before it was kept: see [`InitRecord::cluster_id`]).
    #[serde(default)]
    pub cluster_id: String,
}

impl InitRecord {
    /// A fresh root key, split into `shares` with `threshold`, sealing `keyring`: the record
    /// to replicate and the shares to hand out. The root key itself is dropped (zeroized) here.
    pub fn new_root(keyring: &Keyring, shares: u8, threshold: u8) -> crate::Result<(InitRecord, Vec<Share>)> {
        let (record, split, _root) = Self::new_root_kept(keyring, shares, threshold, None)?;
        Ok((record, split))
    }

    /// [`InitRecord::new_root`], also returning the new root key (for the node that rekeys,
    /// which stays unsealed under it). `cluster_id`: the cluster's (a rekey keeps it); `None`
    /// names a new cluster after its first share set.
    pub fn new_root_kept(
        keyring: &Keyring,
        shares: u8,
        threshold: u8,
        cluster_id: Option<String>,
    ) -> crate::Result<(InitRecord, Vec<Share>, SecretKey)> {
        let internal = |e: arca_crypto::Error| crate::Error::Internal(e.to_string());
        let root = SecretKey::generate().map_err(internal)?;
        let (config, split) = shamir::split(&root, threshold as usize, shares as usize)
            .map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
        let record = InitRecord {
            share_set: config.set.0,
            threshold,
            shares,
            sealed_keyring: keyring.seal(&root).map_err(internal)?,
            active_term_since_ms: crate::now_ms(),
            cluster_id: cluster_id.unwrap_or_else(|| hex::encode(config.set.0)),
        };
        Ok((record, split, root))
    }

    /// This record with `keyring` sealed under `root` in place of the stored keyring: how a
    /// rotation publishes a new term (the share set is unchanged).
    pub fn reseal(&self, keyring: &Keyring, root: &SecretKey) -> crate::Result<InitRecord> {
        Ok(InitRecord {
            share_set: self.share_set,
            threshold: self.threshold,
            shares: self.shares,
            sealed_keyring: keyring.seal(root).map_err(|e| crate::Error::Internal(e.to_string()))?,
            active_term_since_ms: crate::now_ms(),
            cluster_id: self.cluster_id.clone(),
        })
    }

    /// The cluster's id: fixed at init, or for clusters initialized before it was kept, the
    /// share set they were initialized (or last rekeyed) with.
    pub fn cluster_id(&self) -> String {
        if self.cluster_id.is_empty() {
            hex::encode(self.share_set)
        } else {
            self.cluster_id.clone()
        }
    }

    pub fn parse(raw: &[u8]) -> crate::Result<InitRecord> {
        serde_json::from_slice(raw)
            .map_err(|e| crate::Error::Corrupt { path: "sys/core/init".into(), reason: e.to_string() })
    }

    pub fn share_config(&self) -> ShareConfig {
        ShareConfig { set: ShareSetId(self.share_set), threshold: self.threshold, shares: self.shares }
    }
}
