//! What a request produced, and the fixed mount tables replies describe.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::auth::RoleConfig;
use crate::{Error, Result, SecretData, SecretMetadata, TokenInfo, VersionMetadata};

/// What a request produced. `Debug` names the variant only: replies carry tokens and secrets.
pub enum Reply {
    SealStatus(SealStatus),
    Health(HealthInfo),
    /// Prometheus text exposition.
    Metrics(String),
    Autopilot(arca_raft::AutopilotState),
    /// A backup being streamed.
    Snapshot(crate::backup::Download),
    Restored(crate::backup::Restored),
    Init(InitResult),
    Leader {
        leader: Option<Member>,
    },
    Members(Vec<Member>),
    Mounts(Vec<Mount>),
    Done,
    /// A new version, and the secret's custom metadata (Vault returns it with every write).
    KvWritten {
        version: VersionMetadata,
        custom_metadata: BTreeMap<String, String>,
    },
    KvSecret {
        data: SecretData,
        version: VersionMetadata,
        /// The secret's custom metadata labels (Vault returns them with every read).
        custom_metadata: std::collections::BTreeMap<String, String>,
    },
    KvKeys(Vec<String>),
    KvMetadata(SecretMetadata),
    TokenCreated {
        token: Zeroizing<String>,
        info: TokenInfo,
    },
    Token(TokenInfo),
    Accessors(Vec<String>),
    /// Per requested path, the capability names (`["deny"]` for none).
    Capabilities(Vec<(String, Vec<String>)>),
    Policy {
        name: String,
        text: String,
    },
    Names(Vec<String>),
    Role(RoleConfig),
    RoleId(String),
    SecretId {
        secret_id: Zeroizing<String>,
        accessor: String,
        expires_ms: Option<i64>,
    },
    JwtConfig(crate::auth::JwtConfig),
    /// A generate-root ceremony's state; once complete, the new root token XOR the starter's
    /// one-time pad, base64 (see `ceremony`).
    GenerateRoot {
        status: crate::ceremony::CeremonyStatus,
        encoded_token: Option<String>,
    },
    AuditRecords(Vec<crate::audit::AuditRecord>),
    AuditVerification {
        node: u64,
        verification: arca_raft::audit_log::Verification,
    },
    Hash(String),
    Grants(Vec<crate::GrantUse>),
    Rotations(Vec<crate::rotation::RotationStatus>),
    Functions(Vec<(String, String)>),
    /// The term `KeyringRotate` added.
    Term(u32),
    Keyring(crate::keyring::KeyringInfo),
    /// A rekey ceremony's state (progress towards the old threshold); the new shares once it
    /// is reached.
    Rekey {
        status: crate::ceremony::CeremonyStatus,
        shares: Vec<Zeroizing<String>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealStatus {
    pub initialized: bool,
    pub sealed: bool,
    pub threshold: u8,
    pub shares: u8,
    pub progress: u8,
    /// Identifies the current unseal share set (not secret).
    pub share_set: String,
    pub node_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthInfo {
    pub initialized: bool,
    pub sealed: bool,
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub is_leader: bool,
    pub applied_index: u64,
}

pub struct InitResult {
    pub shares: Vec<Zeroizing<String>>,
    pub threshold: u8,
    pub root_token: Zeroizing<String>,
}

impl std::fmt::Debug for InitResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InitResult({} shares, threshold {}, <root token>)", self.shares.len(), self.threshold)
    }
}

/// A secrets engine and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// With the trailing slash, as Vault reports it: `secret/`.
    pub path: String,
    /// Vault's engine type name: `kv`.
    pub kind: String,
    /// The engine's version option (`2` for KV v2).
    pub version: String,
    pub description: String,
}

/// Arca's one secrets engine: versioned KV (Vault's KV v2) at `secret/`.
/// Which of Vault's mount tables: Arca's are fixed, so these are what it has built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountTable {
    /// Secrets engines (`sys/mounts`).
    Secrets,
    /// Auth methods (`sys/auth`).
    Auth,
    /// Audit devices (`sys/audit`).
    Audit,
}

/// The mounts of `table`.
pub fn mounts(table: MountTable) -> Vec<Mount> {
    let mount = |path: &str, kind: &str, description: &str| Mount {
        path: path.into(),
        kind: kind.into(),
        version: String::new(),
        description: description.into(),
    };
    match table {
        MountTable::Secrets => {
            vec![Mount { version: "2".into(), ..mount("secret/", "kv", "versioned key/value secrets (KV v2)") }]
        }
        MountTable::Auth => vec![
            mount("token/", "token", "token based credentials"),
            mount("approle/", "approle", "AppRole: role id and secret id"),
            mount("cert/", "cert", "TLS client certificates from the client CA"),
            mount("jwt/", "jwt", "JWTs signed by the configured key"),
            mount("kubernetes/", "jwt", "Kubernetes service account tokens (the jwt method under Vault's path)"),
        ],
        MountTable::Audit => {
            vec![mount("arca/", "raft", "the replicated, hash-chained audit log (built in, always on)")]
        }
    }
}

/// The mount serving `path` (`secret`, `secret/`, `secret/app/db`), if any.
pub fn mount_serving(path: &str) -> Option<Mount> {
    let path = path.trim_start_matches('/');
    mounts(MountTable::Secrets).into_iter().find(|m| path.starts_with(&m.path) || format!("{path}/") == m.path)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub raft_addr: String,
    pub api_addr: String,
    pub voter: bool,
    pub leader: bool,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Reply::SealStatus(_) => "SealStatus",
            Reply::Health(_) => "Health",
            Reply::Metrics(_) => "Metrics",
            Reply::Autopilot(_) => "Autopilot",
            Reply::Snapshot(_) => "Snapshot",
            Reply::Restored(_) => "Restored",
            Reply::Init(_) => "Init",
            Reply::Leader { .. } => "Leader",
            Reply::Members(_) => "Members",
            Reply::Mounts(_) => "Mounts",
            Reply::Done => "Done",
            Reply::KvWritten { .. } => "KvWritten",
            Reply::KvSecret { .. } => "KvSecret",
            Reply::KvKeys(_) => "KvKeys",
            Reply::KvMetadata(_) => "KvMetadata",
            Reply::TokenCreated { .. } => "TokenCreated",
            Reply::Token(_) => "Token",
            Reply::Accessors(_) => "Accessors",
            Reply::Capabilities(_) => "Capabilities",
            Reply::Policy { .. } => "Policy",
            Reply::Names(_) => "Names",
            Reply::Role(_) => "Role",
            Reply::RoleId(_) => "RoleId",
            Reply::SecretId { .. } => "SecretId",
            Reply::JwtConfig(_) => "JwtConfig",
            Reply::GenerateRoot { .. } => "GenerateRoot",
            Reply::AuditRecords(_) => "AuditRecords",
            Reply::AuditVerification { .. } => "AuditVerification",
            Reply::Hash(_) => "Hash",
            Reply::Grants(_) => "Grants",
            Reply::Rotations(_) => "Rotations",
            Reply::Functions(_) => "Functions",
            Reply::Term(_) => "Term",
            Reply::Keyring(_) => "Keyring",
            Reply::Rekey { .. } => "Rekey",
        };
        write!(f, "Reply::{name}")
    }
}

/// A reply of another kind than the operation gives: a bug in the core or a front, reported as
/// an internal error (never a panic).
fn mismatch(expected: &str, got: &Reply) -> Error {
    Error::Internal(format!("expected a {expected} reply, got {got:?}"))
}

/// `Reply::into_*`: each operation's reply as its own type, so a front takes what it asked for
/// instead of matching on every kind of reply.
macro_rules! accessors {
    ($($name:ident -> $variant:ident($ty:ty);)*) => {
        impl Reply {
            $(
                #[doc = concat!("The value of a `", stringify!($variant), "` reply.")]
                pub fn $name(self) -> Result<$ty> {
                    match self {
                        Reply::$variant(v) => Ok(v),
                        other => Err(mismatch(stringify!($variant), &other)),
                    }
                }
            )*
        }
    };
}

accessors! {
    into_seal_status -> SealStatus(SealStatus);
    into_health -> Health(HealthInfo);
    into_metrics -> Metrics(String);
    into_autopilot -> Autopilot(arca_raft::AutopilotState);
    into_snapshot -> Snapshot(crate::backup::Download);
    into_restored -> Restored(crate::backup::Restored);
    into_init -> Init(InitResult);
    into_members -> Members(Vec<Member>);
    into_mounts -> Mounts(Vec<Mount>);
    into_kv_keys -> KvKeys(Vec<String>);
    into_kv_metadata -> KvMetadata(SecretMetadata);
    into_token -> Token(TokenInfo);
    into_accessors -> Accessors(Vec<String>);
    into_capabilities -> Capabilities(Vec<(String, Vec<String>)>);
    into_names -> Names(Vec<String>);
    into_role -> Role(RoleConfig);
    into_role_id -> RoleId(String);
    into_jwt_config -> JwtConfig(crate::auth::JwtConfig);
    into_audit_records -> AuditRecords(Vec<crate::audit::AuditRecord>);
    into_hash -> Hash(String);
    into_grants -> Grants(Vec<crate::GrantUse>);
    into_rotations -> Rotations(Vec<crate::rotation::RotationStatus>);
    into_functions -> Functions(Vec<(String, String)>);
    into_term -> Term(u32);
    into_keyring -> Keyring(crate::keyring::KeyringInfo);
}

/// A written version, and the secret's custom metadata.
pub struct KvWritten {
    pub version: VersionMetadata,
    pub custom_metadata: BTreeMap<String, String>,
}

/// A secret's value at one version, that version, and the secret's custom metadata.
pub struct KvSecret {
    pub data: SecretData,
    pub version: VersionMetadata,
    pub custom_metadata: BTreeMap<String, String>,
}

/// A new token and what it holds.
pub struct TokenCreated {
    pub token: Zeroizing<String>,
    pub info: TokenInfo,
}

/// A new AppRole secret id.
pub struct SecretIdIssued {
    pub secret_id: Zeroizing<String>,
    pub accessor: String,
    pub expires_ms: Option<i64>,
}

impl Reply {
    /// An operation that answers with nothing but success.
    pub fn into_done(self) -> Result<()> {
        match self {
            Reply::Done => Ok(()),
            other => Err(mismatch("Done", &other)),
        }
    }

    /// The leader, if one is known.
    pub fn into_leader(self) -> Result<Option<Member>> {
        match self {
            Reply::Leader { leader } => Ok(leader),
            other => Err(mismatch("Leader", &other)),
        }
    }

    pub fn into_kv_written(self) -> Result<KvWritten> {
        match self {
            Reply::KvWritten { version, custom_metadata } => Ok(KvWritten { version, custom_metadata }),
            other => Err(mismatch("KvWritten", &other)),
        }
    }

    pub fn into_kv_secret(self) -> Result<KvSecret> {
        match self {
            Reply::KvSecret { data, version, custom_metadata } => Ok(KvSecret { data, version, custom_metadata }),
            other => Err(mismatch("KvSecret", &other)),
        }
    }

    pub fn into_token_created(self) -> Result<TokenCreated> {
        match self {
            Reply::TokenCreated { token, info } => Ok(TokenCreated { token, info }),
            other => Err(mismatch("TokenCreated", &other)),
        }
    }

    /// A policy's name and text.
    pub fn into_policy(self) -> Result<(String, String)> {
        match self {
            Reply::Policy { name, text } => Ok((name, text)),
            other => Err(mismatch("Policy", &other)),
        }
    }

    pub fn into_secret_id(self) -> Result<SecretIdIssued> {
        match self {
            Reply::SecretId { secret_id, accessor, expires_ms } => {
                Ok(SecretIdIssued { secret_id, accessor, expires_ms })
            }
            other => Err(mismatch("SecretId", &other)),
        }
    }

    /// A generate-root ceremony's state, and the encoded token once it completed.
    pub fn into_generate_root(self) -> Result<(crate::ceremony::CeremonyStatus, Option<String>)> {
        match self {
            Reply::GenerateRoot { status, encoded_token } => Ok((status, encoded_token)),
            other => Err(mismatch("GenerateRoot", &other)),
        }
    }

    /// The node that verified its chain, and what it found.
    pub fn into_audit_verification(self) -> Result<(u64, arca_raft::audit_log::Verification)> {
        match self {
            Reply::AuditVerification { node, verification } => Ok((node, verification)),
            other => Err(mismatch("AuditVerification", &other)),
        }
    }

    /// A rekey ceremony's state, and the new shares once it completed.
    pub fn into_rekey(self) -> Result<(crate::ceremony::CeremonyStatus, Vec<Zeroizing<String>>)> {
        match self {
            Reply::Rekey { status, shares } => Ok((status, shares)),
            other => Err(mismatch("Rekey", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_taken_as_another_kind_is_an_internal_error_naming_both() {
        assert_eq!(Reply::Term(3).into_term().unwrap(), 3);
        assert!(Reply::Done.into_done().is_ok());
        let secret_id = Zeroizing::new("must-not-print".to_string());
        let e = Reply::SecretId { secret_id, accessor: "a".into(), expires_ms: None }.into_kv_keys().unwrap_err();
        match e {
            Error::Internal(m) => {
                assert!(m.contains("KvKeys") && m.contains("SecretId"), "{m}");
                assert!(!m.contains("must-not-print"), "the message quotes the reply's secret id: {m}");
            }
            other => panic!("expected an internal error, got {other:?}"),
        }
    }
}
