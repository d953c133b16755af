//! The `Core`'s keyring operations: rotate (a new term), the leader's rewrap of old records, rekey, and the keyring's status.

use super::*;
use crate::{Core, Reply};

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
        let ours = serde_json::to_vec(&record).map_err(|e| Error::Internal(e.to_string()))?;
        let applied = match self.node.write(Command::Txn { guards, ops }).await?.result {
            CommandResult::Applied => true,
            // A forward resent after a lost reply fails its guard when its first copy applied.
            // The stored record is then exactly ours (the keyring was sealed with a fresh
            // nonce), and the rotation did happen: say so rather than report a conflict.
            _ => self.landed(Cf::Sys, INIT_KEY, &ours).await?,
        };
        if !applied {
            return Err(Error::Conflict);
        }
        info!(term, "keyring rotated; rewrap of older records started");
        Ok(term)
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
            Ok(resp) if resp.result == CommandResult::Applied => true,
            // The reply was lost, not necessarily the write, or a forward resent after a lost
            // reply failed its guard because its first copy applied: the shares exist only
            // here, so look before dropping them (the share set is random per split).
            _ => {
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
