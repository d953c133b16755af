//! Restoring a backup through Raft, so every member replaces its data at the same log index.
//!
//! A backup can be far larger than one Raft entry, and a member may be down or catch up by
//! snapshot in the middle, so a restore is three kinds of command:
//!
//! 1. `RestoreBegin` empties the `staging` family and records the restore's id;
//! 2. `RestoreChunk`s stage the backup's records (the ciphertext the backup holds) under the
//!    `r` prefix, keyed by family and key, as long as the id is still the current one;
//! 3. `RestoreCommit` checks that the staged records are exactly the backup's (their count and
//!    SHA-256 over the backup's framing, which the proposer took from a verified file) and
//!    only then, in the same entry, replaces the data families with them.
//!
//! The staging family is part of the replicated state (Raft snapshots carry it), so a member
//! that catches up by snapshot halfway through still commits the same records. A restore that
//! dies halfway leaves staged records and nothing else; the next restore's `RestoreBegin`
//! empties them.
//!
//! The commit also appends one record to the *restored* audit chain, so the trail itself
//! says that, when and from what it was restored, and which trail it replaced: a rollback
//! cannot silently erase history. That record is cleartext JSON (it names no secret, token or
//! key) because the keyring that will read the trail is the backup's, which the proposer does
//! not have.

use arca_storage::backup::{Record, RecordDigest};
use arca_storage::{Cf, Transaction, DATA_CFS};

use crate::CommandResult;

const ID_KEY: &[u8] = b"id";
/// The id of the last restore that committed, so a commit resent after a lost reply is
/// answered as done instead of refused.
const DONE_KEY: &[u8] = b"done";
const RECORD_PREFIX: u8 = b'r';

fn staged_key(cf: Cf, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 2);
    k.push(RECORD_PREFIX);
    k.push(cf as u8);
    k.extend_from_slice(key);
    k
}

fn refused(reason: impl Into<String>) -> CommandResult {
    CommandResult::RestoreRefused { reason: reason.into() }
}

fn is_current(tx: &Transaction<'_>, restore_id: &str) -> bool {
    matches!(tx.get(Cf::Staging, ID_KEY), Ok(Some(id)) if id == restore_id.as_bytes())
}

pub(crate) fn begin(tx: &mut Transaction<'_>, restore_id: &str) -> CommandResult {
    tx.clear(Cf::Staging);
    tx.put(Cf::Staging, ID_KEY, restore_id.as_bytes());
    CommandResult::Restored { records: 0 }
}

pub(crate) fn stage(tx: &mut Transaction<'_>, restore_id: &str, records: &[Record]) -> CommandResult {
    if !is_current(tx, restore_id) {
        return refused("another restore started since this one: its records were not staged");
    }
    if let Some((cf, _, _)) = records.iter().find(|(cf, _, _)| !DATA_CFS.contains(cf)) {
        return refused(format!("a staged record names the {} family, which a backup does not hold", cf.name()));
    }
    for (cf, key, value) in records {
        tx.put(Cf::Staging, staged_key(*cf, key), value.as_slice());
    }
    CommandResult::Restored { records: records.len() as u64 }
}

pub(crate) fn commit(
    tx: &mut Transaction<'_>,
    restore_id: &str,
    records: u64,
    sha256: &[u8; 32],
    audit_record: &[u8],
) -> CommandResult {
    if !is_current(tx, restore_id) {
        if matches!(tx.get(Cf::Staging, DONE_KEY), Ok(Some(done)) if done == restore_id.as_bytes()) {
            return CommandResult::Restored { records };
        }
        return refused("another restore started since this one; nothing was replaced");
    }
    // A read fault here refuses on this node alone; the proposer's node reports it, and the
    // data stays as it was (the others may have restored: `arca operator raft` shows the
    // digest differ, and the node is rebuilt by removing and re-adding it).
    let staged = match tx.scan(Cf::Staging, &[RECORD_PREFIX]) {
        Ok(staged) => staged,
        Err(e) => return refused(format!("reading the staged records failed: {e}")),
    };
    tx.clear(Cf::Staging);
    let mut digest = RecordDigest::default();
    let mut parsed = Vec::with_capacity(staged.len());
    for (key, value) in staged {
        let Some(cf) = key.get(1).and_then(|b| Cf::from_u8(*b)) else {
            return refused("a staged record has a malformed key; nothing was replaced");
        };
        digest.add(cf, &key[2..], &value);
        parsed.push((cf, key, value));
    }
    let staged_count = digest.records;
    if staged_count != records || &digest.finish() != sha256 {
        return refused(format!(
            "{staged_count} records were staged but the backup has {records}, or their checksum differs: a chunk was \
             lost; nothing was replaced"
        ));
    }
    for cf in DATA_CFS {
        tx.clear(cf);
    }
    for (cf, key, value) in parsed {
        tx.put(cf, &key[2..], value);
    }
    crate::audit_log::append(tx, &format!("restore/{restore_id}"), &[audit_record.to_vec()]);
    tx.put(Cf::Staging, DONE_KEY, restore_id.as_bytes());
    tx.replaced_everything();
    CommandResult::Restored { records }
}

pub(crate) fn abort(tx: &mut Transaction<'_>, restore_id: &str) -> CommandResult {
    if !is_current(tx, restore_id) {
        return refused("not the current restore");
    }
    tx.clear(Cf::Staging);
    CommandResult::Restored { records: 0 }
}
