use std::io::Cursor;

use arca_storage::backup::Record;
use arca_storage::{Cf, StoreConfig, Transaction};
use openraft::LogId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::NodeInfo;

openraft::declare_raft_types!(
    /// Arca's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A replicated state change. Everything a command carries reaches the Raft log on every node,
/// so values are barrier ciphertext *before* they are put in a command (invariant 1), and the
/// proposer fixes any time or random value in the command (apply is deterministic).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Does nothing; commits an entry (leader confirmation, tests, benchmarks).
    Noop,
    /// Stores barrier ciphertext at `path` in the KV family, replacing what was there.
    Put {
        path: String,
        #[serde(with = "serde_bytes")]
        ciphertext: Vec<u8>,
    },
    /// Removes `path` from the KV family.
    Delete { path: String },
    /// Applies `ops` atomically if every guard holds, otherwise nothing.
    ///
    /// Values are encrypted before they are proposed, so the state machine cannot interpret
    /// them (a version number inside encrypted metadata, say). Layers above read the current
    /// state, decide, and propose the result guarded by what they read: if another write got
    /// there first, the guard fails and they decide again (optimistic concurrency, as etcd's
    /// transactions).
    Txn { guards: Vec<Guard>, ops: Vec<Op> },
    /// Appends audit records (barrier ciphertext) to the replicated, hash-chained audit log, and
    /// stores outcomes (ciphertext) of earlier records by request id. `batch_id` (from the
    /// proposer: its clock, then random bits) makes a resent batch apply once.
    Audit {
        batch_id: String,
        #[serde(with = "byte_strings")]
        records: Vec<Vec<u8>>,
        #[serde(with = "keyed_byte_strings")]
        outcomes: Vec<(String, Vec<u8>)>,
    },
    /// Retention: drops the audit records up to `through`, leaving a checkpoint so the rest of
    /// the chain still verifies. `decided_ms` is when the leader decided it (for the record).
    AuditTrim { through: u64, decided_ms: i64 },
    /// Restore, step 1 (see `restore`): empties the staging area and names the restore that
    /// fills it; chunks of any other restore are ignored from here on.
    RestoreBegin { restore_id: String },
    /// Restore, step 2: records of a backup (ciphertext, as the backup holds them), staged.
    RestoreChunk {
        restore_id: String,
        #[serde(with = "staged_records")]
        records: Vec<Record>,
    },
    /// Restore, step 3: if the staging area holds exactly `records` records whose digest is
    /// `sha256`, they replace the data families in this one entry, and `audit_record`
    /// (cleartext, no secrets: see `restore`) is appended to the restored audit chain.
    /// Otherwise nothing is replaced. Either way the staging area is emptied.
    RestoreCommit {
        restore_id: String,
        records: u64,
        sha256: [u8; 32],
        #[serde(with = "serde_bytes")]
        audit_record: Vec<u8>,
    },
    /// A restore that failed halfway: its staged records are dropped, if it is still current.
    RestoreAbort { restore_id: String },
    /// A group commit that also carries writes: `Audit`'s records and outcomes, then each of
    /// `writes` applied on its own guards, in order, as `Txn` would. A write's audit record
    /// travels in the same entry as the write (one replicated commit per write, and the record
    /// and the change it describes land together or not at all). `batch_id` makes a resent
    /// batch apply once, and a resend is answered with the first application's results.
    AuditBatch(AuditBatch),
    /// `AuditBatch` whose writes may name the leader term their request was decided in
    /// (`terms[i]`; `None`: decided after a read index). Such a write applies only in an entry
    /// of that term, besides its guards: its decision read the leader's own state without a
    /// quorum round, which is known to be current only while that leadership lasts (see
    /// `RaftNode::local_barrier`). An entry of term T commits only while a quorum follows the
    /// leader of T, and that leader has every entry committed before it was elected.
    AuditBatchInTerms { batch: AuditBatch, terms: Vec<Option<u64>> },
    /// Retention, as `AuditTrim` (which it replaces; logs may still hold that one), and the
    /// outcomes and batch markers whose ids were made before `ids_before_ms` go too: ids begin
    /// with their proposer's milliseconds, and the leader puts the bound well before the time of
    /// the last record trimmed. `AuditTrim` kept them forever.
    /// (Last of the variants: bincode numbers them, and logs written before it must decode.)
    AuditTrimAll { through: u64, decided_ms: i64, ids_before_ms: i64 },
}

/// The body of [`Command::AuditBatch`] and [`Command::AuditBatchInTerms`]. bincode writes a
/// newtype variant's struct exactly as it wrote the struct variant these fields once were, so
/// logs written before it decode.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditBatch {
    pub batch_id: String,
    #[serde(with = "byte_strings")]
    pub records: Vec<Vec<u8>>,
    #[serde(with = "keyed_byte_strings")]
    pub outcomes: Vec<(String, Vec<u8>)>,
    pub writes: Vec<GuardedWrite>,
}

/// One guarded write of a [`Command::AuditBatch`]: `ops` apply if every guard holds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardedWrite {
    pub guards: Vec<Guard>,
    pub ops: Vec<Op>,
}

impl GuardedWrite {
    /// Bytes this write adds to an entry (keys and values; the framing is small).
    pub fn size(&self) -> usize {
        let guards: usize = self.guards.iter().map(|g| g.key.len() + 33).sum();
        let ops: usize = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, .. } => key.len() + value.len(),
                Op::Delete { key, .. } => key.len(),
            })
            .sum();
        guards + ops
    }
}

/// A precondition on one key: it holds exactly the value with this SHA-256, or is absent.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    pub cf: Cf,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub expect: Option<[u8; 32]>,
}

impl Guard {
    /// A guard that holds while `key` still has the value `current` (`None`: is still absent).
    pub fn unchanged(cf: Cf, key: impl Into<Vec<u8>>, current: Option<&[u8]>) -> Guard {
        Guard { cf, key: key.into(), expect: current.map(|v| Sha256::digest(v).into()) }
    }

    fn holds(&self, tx: &Transaction<'_>) -> bool {
        match tx.get(self.cf, &self.key) {
            Ok(current) => current.map(|v| <[u8; 32]>::from(Sha256::digest(&v))) == self.expect,
            // A local read fault fails the guard: the proposer retries, nothing is written.
            Err(_) => false,
        }
    }
}

// Byte fields are (de)serialised as byte strings: bincode then copies them whole instead of
// visiting every byte as a sequence element (a measurable share of the audit pipeline's CPU).
// The encoding is the same as a `Vec<u8>` sequence's (length, then the bytes), so logs written
// before this change still decode.
mod byte_strings {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| Bytes::new(b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Ok(Vec::<ByteBuf>::deserialize(d)?.into_iter().map(ByteBuf::into_vec).collect())
    }
}

mod keyed_byte_strings {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(v: &[(String, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(k, b)| (k, Bytes::new(b))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
        Ok(Vec::<(String, ByteBuf)>::deserialize(d)?.into_iter().map(|(k, b)| (k, b.into_vec())).collect())
    }
}

mod staged_records {
    use arca_storage::backup::Record;
    use arca_storage::Cf;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(v: &[Record], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(cf, k, b)| (cf, Bytes::new(k), Bytes::new(b))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Record>, D::Error> {
        Ok(Vec::<(Cf, ByteBuf, ByteBuf)>::deserialize(d)?
            .into_iter()
            .map(|(cf, k, b)| (cf, k.into_vec(), b.into_vec()))
            .collect())
    }
}

/// One write of a [`Command::Txn`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        cf: Cf,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        cf: Cf,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Ciphertext is harmless but long; its length is what a log reader wants.
        match self {
            Command::Noop => f.write_str("Noop"),
            Command::Put { path, ciphertext } => write!(f, "Put({path:?}, {} bytes)", ciphertext.len()),
            Command::Delete { path } => write!(f, "Delete({path:?})"),
            Command::Txn { guards, ops } => write!(f, "Txn({} guards, {} ops)", guards.len(), ops.len()),
            Command::Audit { records, .. } => write!(f, "Audit({} records)", records.len()),
            Command::AuditBatch(b) | Command::AuditBatchInTerms { batch: b, .. } => {
                write!(f, "AuditBatch({} records, {} writes)", b.records.len(), b.writes.len())
            }
            Command::AuditTrim { through, .. } => write!(f, "AuditTrim(through {through})"),
            Command::AuditTrimAll { through, ids_before_ms, .. } => {
                write!(f, "AuditTrimAll(through {through}, ids before {ids_before_ms} ms)")
            }
            Command::RestoreBegin { restore_id } => write!(f, "RestoreBegin({restore_id})"),
            Command::RestoreChunk { restore_id, records } => {
                write!(f, "RestoreChunk({restore_id}, {} records)", records.len())
            }
            Command::RestoreCommit { restore_id, records, .. } => {
                write!(f, "RestoreCommit({restore_id}, {records} records)")
            }
            Command::RestoreAbort { restore_id } => write!(f, "RestoreAbort({restore_id})"),
        }
    }
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Done,
    /// A put or delete; `existed` says whether the path held a value before.
    Written {
        existed: bool,
    },
    /// A transaction whose guards held: its writes are applied.
    Applied,
    /// A transaction whose guard at this position failed: nothing was written.
    GuardFailed {
        guard: usize,
    },
    /// Audit records appended; the first got this sequence number.
    Audited {
        first_seq: u64,
    },
    /// An `AuditBatch` applied: its records got sequence numbers from `first_seq`, and
    /// `applied[i]` says whether its write `i`'s guards held (and its ops were applied).
    Batched {
        first_seq: u64,
        applied: Vec<bool>,
    },
    /// Audit records removed by retention.
    Trimmed {
        removed: u64,
    },
    /// A restore step was taken (begin, chunk), or the commit replaced the data: `records` is
    /// the number of records staged or restored.
    Restored {
        records: u64,
    },
    /// A restore step that did nothing, and why (another restore took over, or the staged
    /// records are not the backup's).
    RestoreRefused {
        reason: String,
    },
}

/// The result of a committed entry, with the log index it was applied at: a node that has
/// applied at least this index reflects the write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub index: u64,
    pub result: CommandResult,
}

impl StoreConfig for TypeConfig {
    fn apply(command: &Command, log_id: &LogId<u64>, tx: &mut Transaction<'_>) -> Response {
        let index = log_id.index;
        let result = match command {
            Command::Noop => CommandResult::Done,
            Command::Put { path, ciphertext } => {
                let existed = exists(tx, path);
                tx.put(Cf::Kv, path.as_bytes(), ciphertext.as_slice());
                CommandResult::Written { existed }
            }
            Command::Delete { path } => {
                let existed = exists(tx, path);
                tx.delete(Cf::Kv, path.as_bytes());
                CommandResult::Written { existed }
            }
            Command::Txn { guards, ops } => apply_txn(tx, guards, ops),
            Command::Audit { batch_id, records, outcomes } => {
                crate::audit_log::attach_outcomes(tx, outcomes);
                CommandResult::Audited { first_seq: crate::audit_log::append(tx, batch_id, records) }
            }
            Command::AuditBatch(batch) => apply_batch(tx, batch, |_| true),
            Command::AuditBatchInTerms { batch, terms } => {
                let term = log_id.leader_id.term;
                // A write without its entry in `terms` is refused (fail closed).
                apply_batch(tx, batch, |i| match terms.get(i) {
                    Some(Some(t)) => *t == term,
                    Some(None) => true,
                    None => false,
                })
            }
            Command::AuditTrim { through, .. } => {
                CommandResult::Trimmed { removed: crate::audit_log::trim(tx, *through) }
            }
            Command::AuditTrimAll { through, ids_before_ms, .. } => {
                let removed = crate::audit_log::trim(tx, *through);
                crate::audit_log::forget_before(tx, *ids_before_ms, *through);
                CommandResult::Trimmed { removed }
            }
            Command::RestoreBegin { restore_id } => crate::restore::begin(tx, restore_id),
            Command::RestoreChunk { restore_id, records } => crate::restore::stage(tx, restore_id, records),
            Command::RestoreCommit { restore_id, records, sha256, audit_record } => {
                crate::restore::commit(tx, restore_id, *records, sha256, audit_record)
            }
            Command::RestoreAbort { restore_id } => crate::restore::abort(tx, restore_id),
        };
        Response { index, result }
    }

    fn empty_response(index: u64) -> Response {
        Response { index, result: CommandResult::Done }
    }
}

/// A group commit with writes: outcomes, records, then each write that `in_term` allows (by
/// its position) on its own guards, in order. A resent batch is answered with the first
/// application's results and applies nothing.
fn apply_batch(tx: &mut Transaction<'_>, batch: &AuditBatch, in_term: impl Fn(usize) -> bool) -> CommandResult {
    let AuditBatch { batch_id, records, outcomes, writes } = batch;
    if let Some((first_seq, applied)) = crate::audit_log::seen_batch(tx, batch_id) {
        return CommandResult::Batched { first_seq, applied };
    }
    crate::audit_log::attach_outcomes(tx, outcomes);
    let first_seq = crate::audit_log::append_unseen(tx, records);
    let applied: Vec<bool> = writes
        .iter()
        .enumerate()
        .map(|(i, w)| in_term(i) && apply_txn(tx, &w.guards, &w.ops) == CommandResult::Applied)
        .collect();
    crate::audit_log::remember_batch(tx, batch_id, first_seq, &applied);
    CommandResult::Batched { first_seq, applied }
}

/// `ops` if every guard holds (a later write in the same batch sees the earlier ones), else
/// nothing.
fn apply_txn(tx: &mut Transaction<'_>, guards: &[Guard], ops: &[Op]) -> CommandResult {
    if let Some(guard) = guards.iter().position(|g| !g.holds(tx)) {
        return CommandResult::GuardFailed { guard };
    }
    for op in ops {
        match op {
            Op::Put { cf, key, value } => tx.put(*cf, key.as_slice(), value.as_slice()),
            Op::Delete { cf, key } => tx.delete(*cf, key.as_slice()),
        }
    }
    CommandResult::Applied
}

fn exists(tx: &Transaction<'_>, path: &str) -> bool {
    // A read error here would be a local disk fault; answering "did not exist" only affects the
    // informational flag, never the stored state, which every node writes identically.
    matches!(tx.get(Cf::Kv, path.as_bytes()), Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logs written before byte fields were byte strings must still decode: bincode encodes a
    /// byte string exactly as it encoded the `Vec<u8>` sequence.
    #[test]
    fn byte_fields_keep_the_sequence_encoding() {
        #[derive(Serialize)]
        enum Before {
            _Noop,
            Put { path: String, ciphertext: Vec<u8> },
        }
        let old = bincode::serialize(&Before::Put { path: "p".into(), ciphertext: vec![7, 0, 255] }).unwrap();
        let decoded: Command = bincode::deserialize(&old).unwrap();
        assert!(decoded == Command::Put { path: "p".into(), ciphertext: vec![7, 0, 255] });

        let audit = Command::Audit {
            batch_id: "b".into(),
            records: vec![vec![1, 2], vec![]],
            outcomes: vec![("r".into(), vec![3])],
        };
        let round: Command = bincode::deserialize(&bincode::serialize(&audit).unwrap()).unwrap();
        assert!(round == audit);
    }
}
