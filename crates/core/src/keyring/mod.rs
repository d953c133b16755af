//! The vault's own keys: `operator rotate` (a new keyring term, then a leader-driven rewrap of
//! every record under older terms) and `operator rekey` (a new root key and share set).
//!
//! * **Terms.** Every term lives in one keyring sealed under the root key, in the init record;
//!   nothing else holds a term key. `operator rotate` unseals the stored keyring with this
//!   node's root key, adds a term and stores it sealed again, guarded on the record it read.
//!   Every unsealed node holds the root key (as Vault's active node does), so each loads the
//!   new keyring from the replicated record at apply time (a storage observer). A term key is
//!   therefore never stored under another term: one leaked term key opens only its own term's
//!   records, never a later term (DESIGN invariant 10). Clusters from before this stored each
//!   new term as `keyring/term/<n>` under the term before it; such a chain is still read at
//!   unseal, and the next rotate or rekey folds it into the sealed keyring and deletes it.
//! * **Rewrap.** `keyring/rewrap` (clear JSON: paths are not secret) holds the target term and a
//!   cursor over the `kv`, `tokens` and `sys` families. The leader rewraps a bounded batch per
//!   tick, each batch one command guarded on every record it read and on the cursor, so it is
//!   rate-limited, resumable by any later leader, and never overwrites a concurrent write. A
//!   record counts as encrypted only if it decrypts (AEAD) under its path; cleartext entries
//!   (the init record) are skipped by that test, not by a list that could go stale.
//!   Audit records keep their term: they are hash-chained over their ciphertext, and the chain
//!   is the tamper evidence.
//! * **Rekey** is a ceremony (see `ceremony`): a threshold of current shares, each with the
//!   nonce, proves the old root key; then the node seals its whole keyring plus a fresh term
//!   under a fresh root key split into the share set fixed at the ceremony's start, and starts
//!   the rewrap to the fresh term. So nothing written after a rekey is under a key that the
//!   old shares, with any copy of the data directory, can reach. The new root key is never
//!   replicated in any form (a wrapped copy would sit in the Raft log and in snapshots where
//!   the old root opens it): every other node, whose root no longer opens the keyring, seals
//!   itself when the rekey applies, and is unsealed with the new shares.

use std::sync::Arc;

use arca_crypto::Keyring;
use arca_raft::{Command, CommandResult, Guard, Op};
use arca_storage::{Applied, Cf, StateReader};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::ceremony::{self, CeremonyStep, RekeyParams, Stepped};
use crate::init::{InitRecord, INIT_KEY};
use crate::seal::{PendingRoot, Seal, Sealer};
use crate::{kv, now_ms, Error, Result};

/// The `Core`'s keyring operations: rotate (a new term), the leader's rewrap of old records, rekey, and the keyring's status.
mod rotate;

/// Legacy term chain records (see the module comment); read, folded and deleted, never written.
const TERM_PREFIX: &[u8] = b"keyring/term/";
const REWRAP_KEY: &[u8] = b"keyring/rewrap";
/// Records rewrapped per leader tick (the rate limit: a few thousand per second at most).
const REWRAP_BATCH: usize = 256;
/// The families rewrap walks, in order.
const REWRAP_FAMILIES: [Cf; 3] = [Cf::Kv, Cf::Tokens, Cf::Sys];

/// Progress of the rewrap to `target`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewrapState {
    pub target_term: u32,
    /// Index into the families walked; `after` is the last key done in it.
    pub family: usize,
    pub after: Vec<u8>,
    pub rewrapped: u64,
    pub done: bool,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
}

/// `arca operator key-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringInfo {
    pub terms: Vec<u32>,
    pub active_term: u32,
    pub rewrap: Option<RewrapState>,
    /// Records (outside the audit log and the term chain) still under an older term.
    pub records_on_old_terms: u64,
    /// When the active term was made, if the cluster's init record says (ms since the epoch).
    pub active_since_ms: Option<i64>,
}

/// `keyring` extended with every term record it does not hold yet, in order.
pub(crate) fn load_terms(reader: &StateReader, keyring: &Keyring) -> Result<Option<Keyring>> {
    let mut grown: Option<Keyring> = None;
    for (k, v) in reader.scan_prefix(Cf::Sys, TERM_PREFIX, 100_000)? {
        let term: u32 =
            std::str::from_utf8(&k[TERM_PREFIX.len()..]).ok().and_then(|t| t.parse().ok()).ok_or_else(|| {
                Error::Corrupt { path: String::from_utf8_lossy(&k).into_owned(), reason: "bad term number".into() }
            })?;
        let current = grown.as_ref().unwrap_or(keyring);
        if current.terms().any(|t| t == term) {
            continue;
        }
        let next = current
            .load_term(term, &k, &v)
            .map_err(|e| Error::Corrupt { path: String::from_utf8_lossy(&k).into_owned(), reason: e.to_string() })?;
        grown = Some(next);
    }
    Ok(grown)
}

/// Keeps an unsealed node's keyring current with the replicated root-sealed keyring; seals
/// the node if the root key it holds no longer opens it (a rekey elsewhere).
pub(crate) fn follow_keyring(reader: &StateReader, sealer: Sealer, pending: PendingRoot) {
    reader.observe(Arc::new(move |r: &StateReader, applied: &Applied<'_>| {
        let touched = match applied {
            Applied::Everything { .. } => true,
            Applied::Keys { keys, .. } => keys.iter().any(|c| c.cf == Cf::Sys && c.key == INIT_KEY),
        };
        if !touched {
            return;
        }
        if matches!(applied, Applied::Everything { .. }) {
            // A restore may bring another audit key: derive it again on next use.
            *sealer.audit_hasher.lock().expect("audit key lock") = None;
        }
        let init = match r.get(Cf::Sys, INIT_KEY).map_err(Error::from).and_then(|raw| match raw {
            Some(raw) => InitRecord::parse(&raw).map(Some),
            None => Ok(None),
        }) {
            Ok(Some(init)) => init,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "the init record could not be read; the keyring was not reloaded");
                return;
            }
        };
        let mut seal = sealer.seal.lock().expect("seal lock");
        let Seal::Unsealed { root, .. } = &*seal else { return };
        let mut roots = vec![root.clone()];
        if let Some((set, next)) = pending.lock().expect("pending root lock").as_ref() {
            if *set == init.share_set {
                roots.push(next.clone());
            }
        }
        for root in roots {
            if let Ok(keyring) = Keyring::unseal(&root, &init.sealed_keyring) {
                let keyring = load_terms(r, &keyring).ok().flatten().unwrap_or(keyring);
                info!(active_term = keyring.active_term(), "keyring loaded");
                *seal = Seal::Unsealed { keyring: Arc::new(keyring), root };
                return;
            }
        }
        drop(seal);
        sealer.seal();
        warn!("the cluster was rekeyed on another node: this node sealed itself; unseal it with the new shares");
    }));
}

/// The AAD a stored record was encrypted with: its storage key, except KV records, which are
/// bound to their logical path and version.
fn aad_of(cf: Cf, key: &[u8]) -> Option<Vec<u8>> {
    if cf != Cf::Kv {
        return Some(key.to_vec());
    }
    Some(match kv::parse_key(key)? {
        (path, None) => kv::meta_aad(path),
        (path, Some(version)) => kv::data_aad(path, version),
    })
}

/// Whether rewrap leaves this key alone whatever it holds.
fn never_rewrapped(cf: Cf, key: &[u8]) -> bool {
    cf == Cf::Sys && (key.starts_with(TERM_PREFIX) || key == REWRAP_KEY || key == INIT_KEY)
}

/// `Some(aad)` if the record is encrypted under a term older than `target` (and is ours).
fn stale(keyring: &Keyring, cf: Cf, key: &[u8], value: &[u8], target: u32) -> Option<Vec<u8>> {
    if never_rewrapped(cf, key) || Keyring::term_of(value).ok()? >= target {
        return None;
    }
    let aad = aad_of(cf, key)?;
    keyring.decrypt(&aad, value).ok().map(|_| aad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_records_are_bound_to_their_logical_path() {
        assert_eq!(aad_of(Cf::Kv, &kv::meta_key("app/db")).unwrap(), kv::meta_aad("app/db"));
        assert_eq!(aad_of(Cf::Kv, &kv::data_key("app/db", 7)).unwrap(), kv::data_aad("app/db", 7));
        assert_eq!(aad_of(Cf::Tokens, b"t/abc").unwrap(), b"t/abc");
        assert!(aad_of(Cf::Kv, b"x/other").is_none());
        let legacy_term = b"keyring/term/0000000002";
        assert!(never_rewrapped(Cf::Sys, legacy_term) && !never_rewrapped(Cf::Kv, legacy_term));
    }
}
