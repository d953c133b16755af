//! Reading the committed trail: listings, the chain head, and the cluster audit key that
//! HMACs sensitive fields.

use std::sync::Arc;

use arca_crypto::{AuditHasher, Keyring, SecretKey};
use arca_raft::{Command, Guard, Op};
use arca_storage::Cf;
use zeroize::Zeroizing;

use crate::audit::{AuditFilter, AuditRecord, AUDIT_KEY};
use crate::{Core, Error, Operation, Result};

impl Core {
    /// Committed audit records for a following tail: re-checks the caller's token first.
    pub fn audit_records_after_authorization(
        &self,
        token: Option<&Zeroizing<String>>,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRecord>> {
        self.still_allowed(token, Operation::AuditList(filter.clone()))?;
        self.audit_list(&*self.keyring()?, filter)
    }

    /// The sequence number of the newest committed audit record on this node.
    pub fn audit_head(&self) -> u64 {
        arca_raft::audit_log::head(self.node.reader()).seq
    }

    /// Decrypts and filters committed audit records, oldest first, from `filter.from_seq`.
    pub(crate) fn audit_list(&self, keyring: &Keyring, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        const PAGE: usize = 2048;
        let mut out = Vec::new();
        let mut from = filter.from_seq;
        loop {
            let page = arca_raft::audit_log::read(self.node.reader(), from, PAGE)?;
            let done = page.len() < PAGE;
            for (seq, raw) in page {
                from = seq + 1;
                // One record this keyring cannot open (written under another cluster's keys by a
                // request that raced a restore) must not hide the rest of the trail.
                let record = AuditRecord::open_with_outcome(keyring, self.node.reader(), seq, &raw)
                    .unwrap_or_else(|e| AuditRecord::unreadable(seq, &e));
                if filter.matches(&record) {
                    out.push(record);
                    if out.len() >= filter.limit() {
                        return Ok(out);
                    }
                }
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// The cluster audit key, created (once, guarded) on first use if the cluster predates it.
    pub(crate) async fn audit_hasher(&self, keyring: &Keyring) -> Result<Arc<AuditHasher>> {
        if let Some(h) = self.audit_hasher.lock().expect("audit key lock").clone() {
            return Ok(h);
        }
        let raw = match self.node.reader().get(Cf::Sys, AUDIT_KEY)? {
            Some(raw) => raw,
            None => {
                let fresh = SecretKey::generate().map_err(|e| Error::Internal(e.to_string()))?;
                let sealed = keyring.encrypt(AUDIT_KEY, fresh.expose()).map_err(|e| Error::Internal(e.to_string()))?;
                let guards = vec![Guard::unchanged(Cf::Sys, AUDIT_KEY, None)];
                let ops = vec![Op::Put { cf: Cf::Sys, key: AUDIT_KEY.to_vec(), value: sealed }];
                self.node.write(Command::Txn { guards, ops }).await.map_err(|_| Error::AuditUnavailable)?;
                self.node.reader().get(Cf::Sys, AUDIT_KEY)?.ok_or(Error::AuditUnavailable)?
            }
        };
        let corrupt = |reason: String| Error::Corrupt { path: "sys/audit/key".into(), reason };
        let plain = keyring.decrypt(AUDIT_KEY, &raw).map_err(|e| corrupt(e.to_string()))?;
        let key = SecretKey::from_slice(&plain).ok_or_else(|| corrupt("the audit key has the wrong length".into()))?;
        let hasher = Arc::new(AuditHasher::new(key));
        *self.audit_hasher.lock().expect("audit key lock") = Some(hasher.clone());
        Ok(hasher)
    }
}
