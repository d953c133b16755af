//! The vault's own keys: `operator rotate` (a new keyring term, then a leader-driven rewrap of
//! every record under older terms) and `operator rekey` (a new root key and share set).
//!
//! * **Terms.** The root-sealed keyring in the init record holds the terms that existed at
//!   init (or at the last rekey). A term added later is stored in `sys` as
//!   `keyring/term/<n>`, its key encrypted under the term that was active when it was made.
//!   Every unsealed node holds that term, so each loads the new one from the replicated record
//!   at apply time (a storage observer) — no node needs the root key, which followers do not
//!   keep after unsealing. A node unsealing later reads the base keyring with the root key and
//!   then follows the chain of term records.
//! * **Rewrap.** `keyring/rewrap` (clear JSON: paths are not secret) holds the target term and a
//!   cursor over the `kv`, `tokens` and `sys` families. The leader rewraps a bounded batch per
//!   tick, each batch one command guarded on every record it read and on the cursor, so it is
//!   rate-limited, resumable by any later leader, and never overwrites a concurrent write. A
//!   record counts as encrypted only if it decrypts (AEAD) under its path; cleartext entries
//!   (the init record) are skipped by that test, not by a list that could go stale.
//!   Audit records keep their term: they are hash-chained over their ciphertext, and the chain
//!   is the tamper evidence. Term records are never rewrapped (each is the link to the next).
//! * **Rekey** takes a threshold of current shares, checks that they reconstruct the root key,
//!   then seals this node's whole keyring (every term) under a fresh root key, split into a
//!   new share set; the new init record is guarded on the old one, and the old shares no longer
//!   match its share set.

use std::sync::{Arc, Mutex};

use arca_crypto::shamir::ShareCollector;
use arca_crypto::Keyring;
use arca_raft::{Command, CommandResult, Guard, Op};
use arca_storage::{Applied, Cf, StateReader};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::seal::{InitRecord, Seal, INIT_KEY};
use crate::{kv, now_ms, Core, Error, Reply, Result};

const TERM_PREFIX: &[u8] = b"keyring/term/";
const REWRAP_KEY: &[u8] = b"keyring/rewrap";
/// Records rewrapped per leader tick (the rate limit: a few thousand per second at most).
const REWRAP_BATCH: usize = 256;
/// The families rewrap walks, in order.
const REWRAP_FAMILIES: [Cf; 3] = [Cf::Kv, Cf::Tokens, Cf::Sys];

fn term_key(term: u32) -> Vec<u8> {
    [TERM_PREFIX, format!("{term:010}").as_bytes()].concat()
}

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

/// Keeps an unsealed node's keyring current with the replicated term records.
pub(crate) fn follow_terms(reader: &StateReader, seal: Arc<Mutex<Seal>>) {
    reader.observe(Arc::new(move |r: &StateReader, applied: &Applied<'_>| {
        let touched = match applied {
            Applied::Everything { .. } => true,
            Applied::Keys { keys, .. } => keys.iter().any(|c| c.cf == Cf::Sys && c.key.starts_with(TERM_PREFIX)),
        };
        if !touched {
            return;
        }
        let mut seal = seal.lock().expect("seal lock");
        if let Seal::Unsealed(keyring) = &*seal {
            match load_terms(r, keyring) {
                Ok(Some(grown)) => {
                    info!(active_term = grown.active_term(), "keyring term loaded");
                    *seal = Seal::Unsealed(Arc::new(grown));
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "a keyring term record could not be loaded"),
            }
        }
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
    pub(crate) async fn keyring_rotate(&self, keyring: &Keyring) -> Result<u32> {
        let next = keyring.active_term() + 1;
        let key = term_key(next);
        let (term, record) = keyring.next_term(&key).map_err(|e| Error::Internal(e.to_string()))?;
        debug_assert_eq!(term, next);
        let rewrap = RewrapState { target_term: term, started_ms: now_ms(), ..Default::default() };
        let ops = vec![
            Op::Put { cf: Cf::Sys, key: key.clone(), value: record },
            Op::Put {
                cf: Cf::Sys,
                key: REWRAP_KEY.to_vec(),
                value: serde_json::to_vec(&rewrap).map_err(|e| Error::Internal(e.to_string()))?,
            },
        ];
        let guards = vec![Guard::unchanged(Cf::Sys, key, None)];
        match self.node.write(Command::Txn { guards, ops }).await?.result {
            CommandResult::Applied => {
                info!(term, "keyring rotated; rewrap of older records started");
                Ok(term)
            }
            _ => Err(Error::Conflict),
        }
    }

    pub(crate) fn keyring_info(&self, keyring: &Keyring) -> Result<KeyringInfo> {
        let active = keyring.active_term();
        Ok(KeyringInfo {
            terms: keyring.terms().collect(),
            active_term: active,
            rewrap: self.rewrap_state()?.0,
            records_on_old_terms: self.count_stale(keyring, active)?,
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

    /// Adds one current share towards a rekey; at the threshold, a new root key and share set.
    pub(crate) async fn rekey(
        &self,
        keyring: &Keyring,
        share: &str,
        shares: u8,
        threshold: u8,
        reset: bool,
    ) -> Result<Reply> {
        let raw = self.node.reader().get(Cf::Sys, INIT_KEY)?.ok_or(Error::NotInitialized)?;
        let init = self.init_record()?.ok_or(Error::NotInitialized)?;
        let old_threshold = init.threshold;
        {
            let mut slot = self.rekey_progress.lock().expect("rekey lock");
            if reset {
                *slot = None;
                return Ok(Reply::Rekey { progress: 0, threshold: old_threshold, shares: vec![] });
            }
            let collector = slot.get_or_insert_with(|| ShareCollector::new(init.share_config()));
            collector.add(share).map_err(Error::Share)?;
            if !collector.is_complete() {
                let progress = collector.progress().provided as u8;
                return Ok(Reply::Rekey { progress, threshold: old_threshold, shares: vec![] });
            }
            let mut c = slot.take().expect("collector present");
            // Proves the shares: the old root must open the stored keyring.
            c.recover(&init.sealed_keyring).map_err(Error::Share)?;
        }
        let (record, split) = InitRecord::new_root(keyring, shares, threshold)?;
        let value = serde_json::to_vec(&record).map_err(|e| Error::Internal(e.to_string()))?;
        let guards = vec![Guard::unchanged(Cf::Sys, INIT_KEY, Some(&raw))];
        let ops = vec![Op::Put { cf: Cf::Sys, key: INIT_KEY.to_vec(), value }];
        if self.node.write(Command::Txn { guards, ops }).await?.result != CommandResult::Applied {
            return Err(Error::Conflict);
        }
        warn!(shares, threshold, "rekeyed: a new root key and share set; the old shares no longer unseal");
        let shares: Vec<Zeroizing<String>> = split.iter().map(|s| s.encode()).collect();
        Ok(Reply::Rekey { progress: old_threshold, threshold: old_threshold, shares })
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
        assert!(never_rewrapped(Cf::Sys, &term_key(2)) && !never_rewrapped(Cf::Kv, &term_key(2)));
    }
}
