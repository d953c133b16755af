//! What a request produced, and the fixed mount tables replies describe.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::auth::RoleConfig;
use crate::{SecretData, SecretMetadata, TokenInfo, VersionMetadata};

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
