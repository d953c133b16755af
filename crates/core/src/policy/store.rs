//! The replicated policy store (authorization is `crate::authz`).
//!
//! Policies are stored as their HCL text under `policy/<name>` in the `sys` family, behind the
//! barrier like every other record: AES-GCM under the keyring, with the storage key as AAD.
//! They are not secret (they name paths, not values), but they *are* authority: a policy record
//! that anything other than an unsealed node wrote (a forged Raft command, a write to a node's
//! RocksDB, a record moved from another key) fails its tag and grants nothing.
//!
//! Every node compiles them in memory, so a request's check stays a lookup: at apply time, from a
//! storage observer that runs before Raft reports the entry applied, while the node is unsealed;
//! and all at once when the node is unsealed. A sealed node holds only the built-in default
//! policy (it serves no authorized request anyway).

use std::sync::{Arc, Mutex, RwLock};

use arca_crypto::Keyring;
use arca_storage::{Applied, Cf, StateReader};
use tracing::error;

use crate::policy::{builtin_default, sealed_set, Policy, PolicySet, DEFAULT_POLICY};
use crate::seal::Seal;

const POLICY_PREFIX: &[u8] = b"policy/";

pub(super) fn policy_key(name: &str) -> Vec<u8> {
    [POLICY_PREFIX, name.as_bytes()].concat()
}

/// Loads (or reloads) one policy from storage into `set`. Anything that does not decrypt under
/// its own key, or does not parse, grants nothing.
fn reload(set: &mut PolicySet, reader: &StateReader, keyring: &Keyring, name: &str) {
    let key = policy_key(name);
    match reader.get(Cf::Sys, &key) {
        Ok(Some(record)) => {
            let text = match keyring.decrypt(&key, &record) {
                Ok(text) => text,
                Err(_) => {
                    error!(
                        policy = name,
                        "stored policy fails its integrity check (not written by this cluster, or written \
                         before policies were encrypted); it grants nothing until it is written again"
                    );
                    set.remove(name);
                    return;
                }
            };
            match Policy::parse(name, &String::from_utf8_lossy(&text)) {
                Ok(p) => set.insert(p),
                Err(e) => {
                    // Validated before it was proposed; failing here means a parser change. Fail
                    // closed: the policy grants nothing.
                    error!(policy = name, error = %e, "stored policy does not parse; it grants nothing");
                    set.remove(name);
                }
            }
        }
        Ok(None) if name == DEFAULT_POLICY => set.insert(builtin_default()),
        Ok(None) => set.remove(name),
        Err(e) => {
            error!(policy = name, error = %e, "cannot read stored policy; it grants nothing");
            set.remove(name);
        }
    }
}

fn load_all(reader: &StateReader, keyring: &Keyring) -> PolicySet {
    let mut set = sealed_set();
    match reader.scan_prefix(Cf::Sys, POLICY_PREFIX, usize::MAX) {
        Ok(scan) => {
            for (k, _) in scan {
                reload(&mut set, reader, keyring, &String::from_utf8_lossy(&k[POLICY_PREFIX.len()..]));
            }
        }
        Err(e) => error!(error = %e, "cannot read stored policies; only the built-in ones apply"),
    }
    set
}

/// Whether a `sys` column family key holds a policy.
pub(crate) fn is_policy_key(key: &[u8]) -> bool {
    key.starts_with(POLICY_PREFIX)
}

fn unsealed_keyring(seal: &Mutex<Seal>) -> Option<Arc<Keyring>> {
    match &*seal.lock().expect("seal lock") {
        Seal::Unsealed { keyring, .. } => Some(keyring.clone()),
        Seal::Sealed(_) => None,
    }
}

/// Keeps `set`, the compiled policies, current: a storage observer recompiles a policy on every applied
/// change to it while the node is unsealed, and [`recompile_policies`] rebuilds the whole set
/// when it is unsealed. Register after the keyring's term observer, so a record under a term
/// added in the same batch decrypts.
pub(crate) fn follow_policies(reader: &StateReader, seal: Arc<Mutex<Seal>>, set: Arc<RwLock<PolicySet>>) {
    let observed = set;
    reader.observe(Arc::new(move |r: &StateReader, applied: &Applied<'_>| {
        let changed: Vec<&[u8]> = match applied {
            Applied::Everything { .. } => vec![],
            Applied::Keys { keys, .. } => keys
                .iter()
                .filter(|c| c.cf == Cf::Sys && is_policy_key(&c.key))
                .map(|c| &c.key[POLICY_PREFIX.len()..])
                .collect(),
        };
        let everything = matches!(applied, Applied::Everything { .. });
        if !everything && changed.is_empty() {
            return;
        }
        // Sealed: nothing to decrypt with; unsealing recompiles everything.
        let Some(keyring) = unsealed_keyring(&seal) else { return };
        let mut set = observed.write().expect("policy lock");
        if everything {
            *set = load_all(r, &keyring);
        } else {
            for name in changed {
                reload(&mut set, r, &keyring, &String::from_utf8_lossy(name));
            }
        }
    }));
}

/// Rebuilds `set` from storage with `keyring` (just unsealed; sealing resets it, see
/// `Sealer::seal`). The write lock is held while reading, so a change applied meanwhile is
/// recompiled by the observer after this, never overwritten by an older read.
pub(crate) fn recompile_policies(set: &RwLock<PolicySet>, reader: &StateReader, keyring: &Keyring) {
    let mut guard = set.write().expect("policy lock");
    *guard = load_all(reader, keyring);
}
