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
use crate::seal::{InitRecord, PendingRoot, Seal, Sealer, INIT_KEY};
use crate::{kv, now_ms, Core, Error, Reply, Result};

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

impl Core {
    fn rewrap_state(&self) -> Result<(Option<RewrapState>, Option<Vec<u8>>)> {
        match self.node.reader().get(Cf::Sys, REWRAP_KEY)? {
            None => Ok((None, None)),
            Some(raw) => {
                let s = serde_json::from_slice(&raw)
                    .map_err(|e| Error::Corrupt { path: "sys/keyring/rewrap".into(), reason: e.to_string() })?;
                Ok((Some(s), Some(raw)))
            }
        }
    }

    /// Adds a keyring term (new writes use it on every node once applied) and starts the rewrap.
    pub(crate) async fn keyring_rotate(&self) -> Result<u32> {
        let root = self.root_key()?;
        let raw = self.node.reader().get(Cf::Sys, INIT_KEY)?.ok_or(Error::NotInitialized)?;
        let init = InitRecord::parse(&raw)?;
        // The stored keyring, not this node's copy: a term another node just added is kept.
        let mut keyring = Keyring::unseal(&root, &init.sealed_keyring).map_err(|_| Error::Sealed)?;
        keyring = load_terms(self.node.reader(), &keyring)?.unwrap_or(keyring);
        let term = keyring.rotate().map_err(|e| Error::Internal(e.to_string()))?;
        let record = init.reseal(&keyring, &root)?;
        drop(keyring);
        let guards = vec![Guard::unchanged(Cf::Sys, INIT_KEY, Some(&raw))];
        let ops = self.publish_keyring(&record, term)?;
        match self.node.write(Command::Txn { guards, ops }).await?.result {
            CommandResult::Applied => {
                info!(term, "keyring rotated; rewrap of older records started");
                Ok(term)
            }
            _ => Err(Error::Conflict),
        }
    }

    /// The writes that store a new sealed keyring whose active term is `term`: the init
    /// record, a rewrap to `term`, and the deletion of any legacy term chain.
    fn publish_keyring(&self, record: &InitRecord, term: u32) -> Result<Vec<Op>> {
        let internal = |e: serde_json::Error| Error::Internal(e.to_string());
        let rewrap = RewrapState { target_term: term, started_ms: now_ms(), ..Default::default() };
        let mut ops = vec![
            Op::Put { cf: Cf::Sys, key: INIT_KEY.to_vec(), value: serde_json::to_vec(record).map_err(internal)? },
            Op::Put { cf: Cf::Sys, key: REWRAP_KEY.to_vec(), value: serde_json::to_vec(&rewrap).map_err(internal)? },
        ];
        for (key, _) in self.node.reader().scan_prefix(Cf::Sys, TERM_PREFIX, 100_000)? {
            ops.push(Op::Delete { cf: Cf::Sys, key });
        }
        Ok(ops)
    }

    pub(crate) fn keyring_info(&self, keyring: &Keyring) -> Result<KeyringInfo> {
        let active = keyring.active_term();
        Ok(KeyringInfo {
            terms: keyring.terms().collect(),
            active_term: active,
            rewrap: self.rewrap_state()?.0,
            records_on_old_terms: self.count_stale(keyring, active)?,
            active_since_ms: self.init_record()?.map(|r| r.active_term_since_ms).filter(|ms| *ms > 0),
        })
    }

    /// Records (outside the audit log and the term chain) under a term older than `target`.
    fn count_stale(&self, keyring: &Keyring, target: u32) -> Result<u64> {
        let mut old = 0;
        for cf in REWRAP_FAMILIES {
            let mut start = Vec::new();
            loop {
                let page = self.node.reader().scan_from(cf, &start, b"", 4096)?;
                old += page.iter().filter(|(k, v)| stale(keyring, cf, k, v, target).is_some()).count() as u64;
                match page.last() {
                    Some((k, _)) if page.len() == 4096 => start = [k.as_slice(), b"\0"].concat(),
                    _ => break,
                }
            }
        }
        Ok(old)
    }

    /// Leader only: rewraps the next batch, if a rewrap is under way. Returns how many records.
    pub(crate) async fn rewrap_step(&self, keyring: &Keyring) -> Result<usize> {
        let (Some(mut state), raw) = self.rewrap_state()? else { return Ok(0) };
        if state.done || keyring.active_term() < state.target_term {
            return Ok(0);
        }
        let cf = REWRAP_FAMILIES[state.family];
        let start = if state.after.is_empty() { Vec::new() } else { [state.after.as_slice(), b"\0"].concat() };
        let page = self.node.reader().scan_from(cf, &start, b"", REWRAP_BATCH)?;
        let (mut guards, mut ops) = (vec![Guard::unchanged(Cf::Sys, REWRAP_KEY, raw.as_deref())], Vec::new());
        for (k, v) in &page {
            let Some(aad) = stale(keyring, cf, k, v, state.target_term) else { continue };
            let plain = keyring.decrypt(&aad, v).map_err(|e| Error::Internal(e.to_string()))?;
            let value = keyring.encrypt(&aad, &plain).map_err(|e| Error::Internal(e.to_string()))?;
            guards.push(Guard::unchanged(cf, k.clone(), Some(v)));
            ops.push(Op::Put { cf, key: k.clone(), value });
        }
        let count = ops.len();
        state.rewrapped += count as u64;
        if page.len() < REWRAP_BATCH {
            state.family += 1;
            state.after.clear();
            if state.family == REWRAP_FAMILIES.len() {
                // A write that took its keyring just before the new term was loaded may have
                // landed behind the cursor under the old term: another pass catches it.
                if self.count_stale(keyring, state.target_term)? > count as u64 {
                    state.family = 0;
                } else {
                    state.done = true;
                    state.finished_ms = Some(now_ms());
                }
            }
        } else {
            state.after = page.last().map(|(k, _)| k.clone()).unwrap_or_default();
        }
        let value = serde_json::to_vec(&state).map_err(|e| Error::Internal(e.to_string()))?;
        ops.push(Op::Put { cf: Cf::Sys, key: REWRAP_KEY.to_vec(), value });
        // A guard that fails means a concurrent write (already under the new term) or another
        // leader: nothing is written, and the next tick scans the same batch again.
        if self.node.write(Command::Txn { guards, ops }).await?.result == CommandResult::Applied {
            if state.done {
                info!(term = state.target_term, rewrapped = state.rewrapped, "rewrap finished");
            }
            return Ok(count);
        }
        Ok(0)
    }

    /// One step of this node's rekey ceremony; its completion makes a new root key, a fresh
    /// term and the share set fixed at the start.
    pub(crate) async fn rekey(&self, step: CeremonyStep<RekeyParams>) -> Result<Reply> {
        let raw = self.node.reader().get(Cf::Sys, INIT_KEY)?.ok_or(Error::NotInitialized)?;
        let init = InitRecord::parse(&raw)?;
        let (params, old_root, status) = match ceremony::step(&self.rekey_progress, &init, "rekey", step)? {
            Stepped::Status(status) => return Ok(Reply::Rekey { status, shares: vec![] }),
            Stepped::Done { params, root, status } => (params, root, status),
        };
        // The shares proved the old root: it opens the stored keyring.
        let mut keyring = Keyring::unseal(&old_root, &init.sealed_keyring).map_err(Error::Share)?;
        drop(old_root);
        keyring = load_terms(self.node.reader(), &keyring)?.unwrap_or(keyring);
        let term = keyring.rotate().map_err(|e| Error::Internal(e.to_string()))?;
        let (record, split, new_root) =
            InitRecord::new_root_kept(&keyring, params.shares, params.threshold, Some(init.cluster_id()))?;
        drop(keyring);
        let shares = params.hand_out(&split.iter().map(|s| s.encode()).collect::<Vec<_>>())?;
        let ops = self.publish_keyring(&record, term)?;
        let guards = vec![Guard::unchanged(Cf::Sys, INIT_KEY, Some(&raw))];
        // Set before the write: when it applies here, the observer moves this node to the new
        // root instead of sealing it.
        *self.pending_root.lock().expect("pending root lock") = Some((record.share_set, Arc::new(new_root)));
        let applied = match self.node.write(Command::Txn { guards, ops }).await {
            Ok(resp) => resp.result == CommandResult::Applied,
            // The reply was lost, not necessarily the write: the shares exist only here, so
            // look before dropping them.
            Err(_) => {
                let _ = self.node.read_barrier().await;
                let stored = self.node.reader().get(Cf::Sys, INIT_KEY)?;
                stored.and_then(|raw| InitRecord::parse(&raw).ok()).is_some_and(|i| i.share_set == record.share_set)
            }
        };
        self.pending_root.lock().expect("pending root lock").take();
        if !applied {
            return Err(Error::Conflict);
        }
        warn!(
            shares = params.shares,
            threshold = params.threshold,
            pgp = !params.pgp_keys.is_empty(),
            term,
            "rekeyed: a new root key, share set and keyring term; the old shares no longer unseal, and every other node sealed itself"
        );
        Ok(Reply::Rekey { status, shares })
    }
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
