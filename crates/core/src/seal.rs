//! Seal state of this node: its keys while unsealed, and what sealing clears.

use std::sync::{Arc, Mutex};

use arca_crypto::shamir::ShareCollector;
use arca_crypto::{AuditHasher, Keyring, SecretKey};
use tokio::sync::watch;

use crate::ceremony::{Ceremony, GenerateRootParams, RekeyParams};

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
        *self.policies.write().expect("policy lock") = crate::policy::sealed_set();
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
