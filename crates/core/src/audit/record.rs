//! Audit records and outcomes: what is recorded, how it is sealed and opened, and how a
//! listing filters them.

use std::collections::BTreeMap;

use arca_crypto::Keyring;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, TokenInfo};

/// AAD of every audit record's ciphertext.
pub(crate) const RECORD_AAD: &[u8] = b"sys/audit/record";
/// Sys key of the audit HMAC key (barrier-encrypted, created at init).
pub(crate) const AUDIT_KEY: &[u8] = b"audit/key";

/// Who made a request: empty for requests without a valid token.
///
/// Records and outcomes leave empty fields out when serialised: every byte of them is written
/// to the Raft log and the audit column family on every member, so their size is what audited
/// throughput pays for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditCaller {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub auth_method: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub accessor: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub identity: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

/// A new request id: 48 bits of milliseconds, then 80 random bits, hex (the layout of a
/// UUIDv7). Outcomes are stored under their request id, so ids that grow with time make those
/// inserts nearly sequential; random ids made RocksDB's memtable re-search its skip list on
/// every insert, a tenth of the audit pipeline's CPU.
pub fn request_id() -> String {
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&crate::now_ms().to_be_bytes()[2..]);
    arca_crypto::random_id_bytes(&mut id[6..]);
    arca_crypto::to_hex(&id)
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl AuditCaller {
    fn is_empty(&self) -> bool {
        self.accessor.is_empty() && self.identity.is_empty() && self.auth_method.is_empty() && self.policies.is_empty()
    }

    pub fn of(info: &TokenInfo) -> AuditCaller {
        AuditCaller {
            auth_method: info.auth.method.clone(),
            accessor: info.accessor.clone(),
            identity: if info.auth.identity.is_empty() {
                info.display_name.clone()
            } else {
                info.auth.identity.clone()
            },
            policies: info.policies.clone(),
        }
    }
}

/// One audit record, as stored (encrypted) and as listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditRecord {
    /// Sequence number in the cluster-wide chain (assigned at apply; 0 before).
    #[serde(skip_serializing_if = "is_zero")]
    pub seq: u64,
    pub time_ms: i64,
    pub request_id: String,
    pub node: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote: String,
    pub operation: String,
    pub path: String,
    #[serde(flatten)]
    pub caller: AuditCaller,
    /// `allowed`, `denied`, `unauthenticated`, or `none` (no token needed: logins, generate-root).
    pub decision: String,
    /// The capability that was required (on allowed and denied requests).
    pub capability: String,
    /// `ok` or the error kind (`permission_denied`, `invalid_argument`, …).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub outcome: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub duration_us: u64,
    /// Sensitive request values by name, as HMACs.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub request_hmacs: BTreeMap<String, String>,
    /// Sensitive reply values by name, as HMACs.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub response_hmacs: BTreeMap<String, String>,
    /// On an aggregated `RateLimited` record: how many requests of its source and class were
    /// refused in its interval (each without a record of its own).
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// Non-secret facts about an event the cluster recorded itself (a restore: the backup and
    /// the trail it replaced).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// What happened after a record was committed: attached to it by request id. Fields equal to
/// the record's own (decision, caller) are left empty and taken from the record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditOutcome {
    pub request_id: String,
    /// The decision on the current state (after the barrier); normally the record's own.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub decision: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub capability: String,
    pub outcome: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    pub duration_us: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub response_hmacs: BTreeMap<String, String>,
    /// Who the request turned out to be (a login's new identity), when the record did not know.
    #[serde(skip_serializing_if = "AuditCaller::is_empty")]
    pub caller: AuditCaller,
}

/// AAD of outcome ciphertexts.
pub(crate) const OUTCOME_AAD: &[u8] = b"sys/audit/outcome";

fn outcome_aad(request_id: &str) -> Vec<u8> {
    [OUTCOME_AAD, b"/", request_id.as_bytes()].concat()
}

impl AuditOutcome {
    /// Sealed with its request id in the AAD: an outcome moved to another record's slot does
    /// not open there.
    pub(crate) fn seal(&self, keyring: &Keyring) -> Result<Vec<u8>> {
        crate::codec::encrypt_json(keyring, &outcome_aad(&self.request_id), self)
    }

    /// Opens the outcome stored for `request_id`, and refuses one that belongs to another
    /// request. Outcomes written before the AAD named the request open with the old AAD, and
    /// the id inside them must still match.
    fn open(keyring: &Keyring, request_id: &str, raw: &[u8]) -> Result<AuditOutcome> {
        let o: AuditOutcome = crate::codec::decrypt_json(keyring, &outcome_aad(request_id), raw)
            .or_else(|_| crate::codec::decrypt_json(keyring, OUTCOME_AAD, raw))?;
        if o.request_id != request_id {
            return Err(Error::Corrupt {
                path: format!("sys/audit/outcome/{request_id}"),
                reason: "the stored outcome belongs to another request".into(),
            });
        }
        Ok(o)
    }

    /// Writes this outcome into its record.
    pub(crate) fn merge_into(self, r: &mut AuditRecord) {
        if !self.decision.is_empty() {
            r.decision = self.decision;
            r.capability = self.capability;
        }
        if r.caller.accessor.is_empty() && !self.caller.accessor.is_empty() {
            r.caller = self.caller;
        }
        r.outcome = self.outcome;
        r.error = self.error;
        r.duration_us = self.duration_us;
        r.response_hmacs = self.response_hmacs;
    }
}

impl AuditRecord {
    pub(crate) fn seal(&self, keyring: &Keyring) -> Result<Vec<u8>> {
        crate::codec::encrypt_json(keyring, RECORD_AAD, self)
    }

    pub(crate) fn open(keyring: &Keyring, seq: u64, ciphertext: &[u8]) -> Result<AuditRecord> {
        let mut r: AuditRecord = match system_record(ciphertext) {
            Some(record) => record?,
            None => crate::codec::decrypt_json(keyring, RECORD_AAD, ciphertext)?,
        };
        r.seq = seq;
        Ok(r)
    }

    /// What a listing shows for a record this keyring cannot open.
    pub(crate) fn unreadable(seq: u64, e: &Error) -> AuditRecord {
        AuditRecord {
            seq,
            operation: "unreadable".into(),
            outcome: "invalid".into(),
            error: format!("this record does not open under the cluster's keyring: {e}"),
            ..Default::default()
        }
    }

    /// Opens a record and merges its outcome, if that has arrived (`unknown` otherwise: the
    /// serving node may have died between the record and the outcome).
    pub(crate) fn open_with_outcome(
        keyring: &Keyring,
        reader: &arca_storage::StateReader,
        seq: u64,
        ciphertext: &[u8],
    ) -> Result<AuditRecord> {
        let mut r = AuditRecord::open(keyring, seq, ciphertext)?;
        match arca_raft::audit_log::outcome(reader, &r.request_id)? {
            Some(raw) => match AuditOutcome::open(keyring, &r.request_id, &raw) {
                Ok(o) => o.merge_into(&mut r),
                // One bad outcome must not hide the rest of the trail: the record says so.
                Err(e) => {
                    r.outcome = "invalid".into();
                    r.error = format!("its stored outcome is not this request's: {e}");
                }
            },
            None if r.outcome.is_empty() => r.outcome = "unknown".into(),
            None => {}
        }
        Ok(r)
    }
}

/// The error kind of a failed request, for the record's outcome.
pub(crate) fn outcome(e: &Error) -> &'static str {
    match e {
        Error::Sealed => "sealed",
        Error::NotInitialized => "not_initialized",
        Error::AlreadyInitialized => "already_exists",
        Error::InvalidArgument(_) | Error::Share(_) => "invalid_argument",
        Error::MissingToken | Error::BadToken | Error::LoginFailed(_) => "unauthenticated",
        Error::PermissionDenied(_) => "permission_denied",
        Error::NotFound(_) => "not_found",
        Error::CasMismatch { .. } | Error::Rotation(_) | Error::FailedPrecondition(_) => "failed_precondition",
        Error::Conflict => "aborted",
        Error::Cluster(_) | Error::JoinFailed { .. } | Error::AuditUnavailable => "unavailable",
        Error::WriteUnconfirmed => "unconfirmed",
        Error::Storage(_) | Error::Corrupt { .. } | Error::Internal(_) => "internal",
        Error::RateLimited { .. } => "rate_limited",
    }
}

/// Which records `AuditList` returns. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Records with a sequence number at or after this.
    pub from_seq: u64,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Logical path prefix, e.g. `secret/data/app/`.
    pub path_prefix: String,
    pub accessor: String,
    pub identity: String,
    /// An outcome (`ok`, `permission_denied`, …) or a decision (`allowed`, `denied`).
    pub outcome: String,
    /// 0: the default (1 000); at most 10 000.
    pub limit: usize,
}

impl AuditFilter {
    pub fn matches(&self, r: &AuditRecord) -> bool {
        self.since_ms.is_none_or(|t| r.time_ms >= t)
            && self.until_ms.is_none_or(|t| r.time_ms < t)
            && r.path.starts_with(&self.path_prefix)
            && (self.accessor.is_empty() || r.caller.accessor == self.accessor)
            && (self.identity.is_empty() || r.caller.identity == self.identity)
            && (self.outcome.is_empty() || r.outcome == self.outcome || r.decision == self.outcome)
    }

    pub fn limit(&self) -> usize {
        match self.limit {
            0 => 1000,
            n => n.min(10_000),
        }
    }
}

/// What request handling learned about the caller, for the record.
#[derive(Debug, Default)]
pub(crate) struct AuditContext {
    pub caller: AuditCaller,
    pub decision: String,
    pub capability: String,
    /// The token record the pre-barrier check decrypted (raw bytes and contents).
    pub known: Option<(Vec<u8>, TokenInfo)>,
    /// The request is handled before its record is committed (its record rides its write, or
    /// follows its read): nothing may be written for it first, so a token that turns out to
    /// have a use limit (taking a use is a write) is refused, to be retried and recorded first.
    pub unrecorded: bool,
}

impl AuditContext {
    pub fn caller(&mut self, info: &TokenInfo) {
        self.caller = AuditCaller::of(info);
    }

    pub fn fill(self, record: &mut AuditRecord) {
        record.caller = self.caller;
        record.decision = if self.decision.is_empty() { "none".into() } else { self.decision };
        record.capability = self.capability;
    }
}

/// The prefix that marks a cleartext audit record written by the cluster itself (see
/// `arca_raft`'s restore module); barrier ciphertext never starts with it.
pub(crate) const SYSTEM_RECORD_PREFIX: &[u8] = b"arca-system-record/1\n";

/// A record the cluster wrote itself (cleartext), if `raw` is one.
pub(crate) fn system_record(raw: &[u8]) -> Option<Result<AuditRecord>> {
    let json = raw.strip_prefix(SYSTEM_RECORD_PREFIX)?;
    Some(serde_json::from_slice(json).map_err(|e| Error::Corrupt { path: "sys/audit".into(), reason: e.to_string() }))
}
