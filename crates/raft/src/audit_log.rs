//! The replicated audit log: records numbered and hash-chained at apply time.
//!
//! Records arrive as opaque bytes (barrier ciphertext made by the proposer: this layer never sees
//! a record in clear). Apply gives each the next global sequence number and extends the chain
//! `h_i = SHA-256(h_{i-1} ‖ i ‖ record_i)`; every node applies the same entries, so every node
//! holds the same chain. The chain covers the stored bytes, so it can be verified without the
//! keys, on a sealed node too.
//!
//! Layout in the `audit` family: `h` → head (`seq u64 BE ‖ hash`), `c` → checkpoint (the same
//! shape: where the retained chain starts), `r/<seq u64 BE>` → `hash_i ‖ record_i`,
//! `b/<batch id>` → the first sequence number of that batch (and, for a batch that carries
//! writes, one byte per write: whether it applied), `o/<request id>` → the
//! outcome of that request's record (ciphertext; not chained). Request ids and batch ids begin
//! with their proposer's clock (milliseconds, 12 hex digits), so retention can drop the outcomes
//! and markers of the records it trims by key range (`forget_before`).

use arca_storage::{Cf, StateReader, Transaction};
use sha2::{Digest, Sha256};

const HEAD: &[u8] = b"h";
const CHECKPOINT: &[u8] = b"c";
const RECORD_PREFIX: &[u8] = b"r/";
const BATCH_PREFIX: &[u8] = b"b/";
const OUTCOME_PREFIX: &[u8] = b"o/";

/// A position in the chain: the sequence number of a record and the chain hash through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ChainPoint {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl ChainPoint {
    fn encode(&self) -> Vec<u8> {
        [&self.seq.to_be_bytes()[..], &self.hash[..]].concat()
    }

    fn decode(raw: &[u8]) -> Option<ChainPoint> {
        let seq = u64::from_be_bytes(raw.get(..8)?.try_into().ok()?);
        let hash = raw.get(8..40)?.try_into().ok()?;
        Some(ChainPoint { seq, hash })
    }
}

pub fn record_key(seq: u64) -> Vec<u8> {
    [RECORD_PREFIX, &seq.to_be_bytes()[..]].concat()
}

fn link(prev: &[u8; 32], seq: u64, record: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(record);
    h.finalize().into()
}

/// Appends `records` in order; returns the sequence number of the first. A batch id seen before
/// (a forwarded proposal resent after a lost reply) appends nothing the second time.
pub(crate) fn append(tx: &mut Transaction<'_>, batch_id: &str, records: &[Vec<u8>]) -> u64 {
    if let Some((first, _)) = seen_batch(tx, batch_id) {
        return first;
    }
    let first = append_unseen(tx, records);
    remember_batch(tx, batch_id, first, &[]);
    first
}

/// Appends `records` of a batch the caller has found unseen (`seen_batch`) and will
/// remember (`remember_batch`); returns the sequence number of the first.
pub(crate) fn append_unseen(tx: &mut Transaction<'_>, records: &[Vec<u8>]) -> u64 {
    // A read fault here would fork this node's chain from the others'; `verify` would then name
    // it. Starting from an empty head is the only deterministic fallback.
    let mut head = tx.get(Cf::Audit, HEAD).ok().flatten().and_then(|r| ChainPoint::decode(&r)).unwrap_or_default();
    let first = head.seq + 1;
    for record in records {
        let seq = head.seq + 1;
        let hash = link(&head.hash, seq, record);
        tx.put(Cf::Audit, record_key(seq), [&hash[..], record].concat());
        head = ChainPoint { seq, hash };
    }
    tx.put(Cf::Audit, HEAD, head.encode());
    first
}

fn batch_key(batch_id: &str) -> Vec<u8> {
    [BATCH_PREFIX, batch_id.as_bytes()].concat()
}

/// The results of an `AuditBatch` applied before under `batch_id`: its first sequence number
/// and which of its writes applied (a resend is answered with them, not applied again).
pub(crate) fn seen_batch(tx: &Transaction<'_>, batch_id: &str) -> Option<(u64, Vec<bool>)> {
    let seen = tx.get(Cf::Audit, &batch_key(batch_id)).ok()??;
    let first = u64::from_be_bytes(seen.get(..8)?.try_into().ok()?);
    Some((first, seen[8..].iter().map(|b| *b == 1).collect()))
}

/// Keeps an `AuditBatch`'s results under its id, after the first sequence number `append`
/// stored there: one byte per write, 1 if it applied.
pub(crate) fn remember_batch(tx: &mut Transaction<'_>, batch_id: &str, first_seq: u64, applied: &[bool]) {
    let mut value = first_seq.to_be_bytes().to_vec();
    value.extend(applied.iter().map(|a| u8::from(*a)));
    tx.put(Cf::Audit, batch_key(batch_id), value);
}

/// Drops every record up to and including `through` and records the checkpoint the remaining
/// chain continues from. Deterministic: it only reads the replicated state.
pub(crate) fn trim(tx: &mut Transaction<'_>, through: u64) -> u64 {
    let start =
        tx.get(Cf::Audit, CHECKPOINT).ok().flatten().and_then(|r| ChainPoint::decode(&r)).unwrap_or_default().seq + 1;
    let mut removed = 0;
    let mut point = None;
    for seq in start..=through {
        let Ok(Some(raw)) = tx.get(Cf::Audit, &record_key(seq)) else { break };
        if let Some(hash) = raw.get(..32).and_then(|h| <[u8; 32]>::try_from(h).ok()) {
            point = Some(ChainPoint { seq, hash });
        }
        tx.delete(Cf::Audit, record_key(seq));
        removed += 1;
    }
    if let Some(p) = point {
        tx.put(Cf::Audit, CHECKPOINT, p.encode());
    }
    removed
}

/// Most outcomes and batch markers one trim drops, each: one entry's apply stays bounded, and
/// the next retention round takes the rest.
const FORGET_LIMIT: usize = 100_000;

/// The key in `prefix` that ids made at `ms` start at (ids begin with 12 hex digits of the
/// proposer's milliseconds).
fn ids_made_at(prefix: &[u8], ms: i64) -> Vec<u8> {
    let ms = ms.clamp(0, (1 << 48) - 1);
    [prefix, format!("{ms:012x}").as_bytes()].concat()
}

/// Drops the outcomes whose ids were made before `before_ms`, and the batch markers made before
/// it whose records all come before `through` (a marker is what makes a resent batch apply
/// once: it goes only with its records); returns how many. Deterministic: it only reads the
/// replicated state. (Markers of batches proposed before batch ids carried a time are random:
/// those that sort below the bound go too, with their records.)
pub(crate) fn forget_before(tx: &mut Transaction<'_>, before_ms: i64, through: u64) -> usize {
    let records_trimmed =
        |v: &[u8]| v.get(..8).is_some_and(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()) <= through);
    let outcomes =
        tx.delete_between(Cf::Audit, OUTCOME_PREFIX, &ids_made_at(OUTCOME_PREFIX, before_ms), FORGET_LIMIT, |_| true);
    let markers = tx.delete_between(
        Cf::Audit,
        BATCH_PREFIX,
        &ids_made_at(BATCH_PREFIX, before_ms),
        FORGET_LIMIT,
        records_trimmed,
    );
    [outcomes, markers]
        .into_iter()
        .map(|r| {
            // A local disk fault: this node keeps keys the others drop (its state digest now
            // differs from theirs); its disk needs looking at.
            r.unwrap_or_else(|e| {
                tracing::error!(error = %e, "audit retention could not read the outcomes or batch markers to drop");
                0
            })
        })
        .sum()
}

/// Stores the outcome of each request (by request id). Outcomes follow their records, outside
/// the reply path, and are not part of the chain.
pub(crate) fn attach_outcomes(tx: &mut Transaction<'_>, outcomes: &[(String, Vec<u8>)]) {
    for (request_id, outcome) in outcomes {
        tx.put(Cf::Audit, [OUTCOME_PREFIX, request_id.as_bytes()].concat(), outcome.clone());
    }
}

/// The stored outcome of a request, if it has arrived.
pub fn outcome(reader: &StateReader, request_id: &str) -> arca_storage::Result<Option<Vec<u8>>> {
    reader.get(Cf::Audit, &[OUTCOME_PREFIX, request_id.as_bytes()].concat())
}

pub fn head(reader: &StateReader) -> ChainPoint {
    reader.get(Cf::Audit, HEAD).ok().flatten().and_then(|r| ChainPoint::decode(&r)).unwrap_or_default()
}

pub fn checkpoint(reader: &StateReader) -> ChainPoint {
    reader.get(Cf::Audit, CHECKPOINT).ok().flatten().and_then(|r| ChainPoint::decode(&r)).unwrap_or_default()
}

/// Records from sequence `from` on, at most `limit`: `(seq, record bytes)`.
pub fn read(reader: &StateReader, from: u64, limit: usize) -> arca_storage::Result<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    let start = from.max(checkpoint(reader).seq + 1);
    for (key, value) in reader.scan_from(Cf::Audit, &record_key(start), RECORD_PREFIX, limit)? {
        let seq = u64::from_be_bytes(key[RECORD_PREFIX.len()..].try_into().unwrap_or_default());
        out.push((seq, value.get(32..).unwrap_or_default().to_vec()));
    }
    Ok(out)
}

/// The outcome of recomputing the chain on one node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verification {
    /// The stored head.
    pub head: ChainPoint,
    /// Records checked (from the checkpoint to the head).
    pub checked: u64,
    /// The first sequence whose stored bytes do not extend the chain (or that is missing).
    pub first_bad: Option<u64>,
}

/// Recomputes the chain from the checkpoint through the head, or through `upto` if that is
/// earlier (so nodes can be compared at one sequence number while new records keep arriving);
/// the reported head is then the point at `upto`.
pub fn verify(reader: &StateReader, upto: Option<u64>) -> arca_storage::Result<Verification> {
    let mut head = head(reader);
    let upto = upto.unwrap_or(head.seq).min(head.seq);
    let mut prev = checkpoint(reader);
    let mut checked = 0;
    const PAGE: usize = 4096;
    loop {
        let page = reader.scan_from(Cf::Audit, &record_key(prev.seq + 1), RECORD_PREFIX, PAGE)?;
        let done = page.len() < PAGE;
        for (key, value) in page {
            let seq = u64::from_be_bytes(key[RECORD_PREFIX.len()..].try_into().unwrap_or_default());
            if seq > upto {
                break;
            }
            let stored: Option<[u8; 32]> = value.get(..32).and_then(|h| h.try_into().ok());
            let record = value.get(32..).unwrap_or_default();
            if seq != prev.seq + 1 || stored != Some(link(&prev.hash, seq, record)) {
                return Ok(Verification { head, checked, first_bad: Some(prev.seq + 1) });
            }
            prev = ChainPoint { seq, hash: stored.unwrap_or_default() };
            checked += 1;
        }
        if done || prev.seq >= upto {
            break;
        }
    }
    if upto < head.seq {
        head = prev;
    }
    let first_bad = (prev != head).then_some(prev.seq + 1);
    Ok(Verification { head, checked, first_bad })
}
