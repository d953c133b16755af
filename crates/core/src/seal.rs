//! Seal state of this node, and the replicated init record.

use std::sync::Arc;

use arca_crypto::shamir::{self, Share, ShareCollector, ShareConfig, ShareSetId};
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
}

impl InitRecord {
    /// A fresh root key, split into `shares` with `threshold`, sealing `keyring`: the record
    /// to replicate and the shares to hand out. The root key itself is dropped (zeroized) here.
    pub fn new_root(keyring: &Keyring, shares: u8, threshold: u8) -> crate::Result<(InitRecord, Vec<Share>)> {
        let internal = |e: arca_crypto::Error| crate::Error::Internal(e.to_string());
        let root = SecretKey::generate().map_err(internal)?;
        let (config, split) = shamir::split(&root, threshold as usize, shares as usize)
            .map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
        let record = InitRecord {
            share_set: config.set.0,
            threshold,
            shares,
            sealed_keyring: keyring.seal(&root).map_err(internal)?,
        };
        Ok((record, split))
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
    Unsealed(Arc<Keyring>),
}
