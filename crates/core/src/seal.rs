//! Seal state of this node, and the replicated init record.

use std::sync::{Arc, Mutex};

use arca_crypto::shamir::{self, Share, ShareCollector, ShareConfig, ShareSetId};
use arca_crypto::{AuditHasher, Keyring, SecretKey};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::ceremony::{Ceremony, GenerateRootParams, RekeyParams};

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

/// This node's seal state. Each node unseals on its own, as in Vault.
pub(crate) enum Seal {
    /// No key in memory; unseal shares collected so far, if any.
    Sealed(Option<ShareCollector>),
    /// The keyring, shared by in-flight requests; dropping the last reference zeroizes it.
    /// The root key stays too, as on Vault's active node: every keyring term is sealed under
    /// it alone, so a node needs it to load a term another node added (and to add one).
    Unsealed { keyring: Arc<Keyring>, root: Arc<SecretKey> },
}

/// A new root key this node is about to publish with a rekey, by share set: when the rekey
/// applies here, the node moves to it instead of sealing (as every other node does).
pub(crate) type PendingRoot = Arc<Mutex<Option<([u8; 8], Arc<SecretKey>)>>>;

/// Everything sealing a node clears, as shared handles (the storage observer seals a node too,
/// and must not hold the whole `Core`).
#[derive(Clone)]
pub(crate) struct Sealer {
    pub seal: Arc<Mutex<Seal>>,
    pub audit_hasher: Arc<Mutex<Option<Arc<AuditHasher>>>>,
    pub root_generation: Arc<Mutex<Option<Ceremony<GenerateRootParams>>>>,
    pub rekey: Arc<Mutex<Option<Ceremony<RekeyParams>>>>,
    /// The compiled policies: back to the built-in set, whatever seals the node.
    pub policies: Arc<std::sync::RwLock<crate::policy::PolicySet>>,
    /// Bumped on every seal: background work that holds keys (rotations, the rewrap) stops
    /// when it changes, so no key outlives the seal in a running task.
    pub epoch: Arc<watch::Sender<u64>>,
}

impl Sealer {
    /// Drops every key and every ceremony in progress, and stops the tasks that hold keys.
    pub fn seal(&self) {
        *self.seal.lock().expect("seal lock") = Seal::Sealed(None);
        *self.audit_hasher.lock().expect("audit key lock") = None;
        *self.root_generation.lock().expect("generate-root lock") = None;
        *self.rekey.lock().expect("rekey lock") = None;
        *self.policies.write().expect("policy lock") = crate::policy::store::sealed_set();
        self.epoch.send_modify(|e| *e = e.wrapping_add(1));
    }
}

/// Runs `work` until it finishes or the node seals (the epoch moves), whichever comes first.
/// `sealed` must be subscribed before the keys `work` uses were taken.
pub(crate) async fn until_sealed<F: std::future::Future>(
    mut sealed: watch::Receiver<u64>,
    work: F,
) -> Option<F::Output> {
    tokio::select! {
        out = work => Some(out),
        _ = sealed.changed() => None,
    }
}
