//! The operation table: every operation's name, logical path and class, in one place
//! ([`Operation::spec`]). The request pipeline routes on the class and nothing else.

use super::operation::{Operation, TokenRef};
use super::reply::MountTable;
use crate::auth::Method;
use crate::policy::Capability;

/// How the request pipeline treats an operation: the column of the operation table that
/// invariant 3 (every request authenticated, authorized and audited) rests on. `Core::handle`
/// routes on it and nothing else, so an operation cannot skip a step by being left out of a
/// list somewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpClass {
    /// Served without a token and without an audit record: what a sealed node serves (seal
    /// status, health, unseal) and what a node in no cluster serves (init, join), neither of
    /// which has an audit key to record with.
    Unaudited,
    /// Audited, and the request proves itself with what it carries (a login's credentials, a
    /// ceremony's nonce and share) instead of a token.
    Credentials,
    /// Audited, and the caller's token must grant `Need` on the operation's logical path.
    Token(Need),
}

/// What a token-bearing operation needs on its logical path: any one of `any`, plus `sudo` on
/// the operations Vault marks as root-protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    pub any: &'static [Capability],
    pub sudo: bool,
}

impl Need {
    /// The capability as audit records name it (`read`, `create|update`, `update+sudo`).
    pub fn describe(&self) -> String {
        let mut s = self.any.iter().map(|c| c.name()).collect::<Vec<_>>().join("|");
        if self.sudo {
            s.push_str("+sudo");
        }
        s
    }
}

/// One row of the operation table: the name metrics, logs and audit records use, the path
/// policies match and records name (as in Vault, KV v2 mounted at `secret/`, so existing
/// Vault policies carry over), and the class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub path: String,
    pub class: OpClass,
    pub record: Recording,
}

/// When an audited request's record is committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recording {
    /// Before the request is handled; its commit is also the request's read barrier.
    Before,
    /// In the same Raft entry as the request's write (the KV writes, whose guarded write decides
    /// everything they change): one replicated commit for both, and neither lands without the
    /// other. The request has a read barrier of its own first (a leader round trip, no log
    /// write), and one that ends without writing (refused, invalid, not found) commits its
    /// record, with the outcome folded in, before it is answered.
    WithWrite,
    /// After the request is handled, with its outcome folded in, and before the reply leaves:
    /// the pure reads (nothing they do writes), when they are decided on a leader's own state
    /// (`RaftNode::local_barrier`). The record then commits in an entry of that leader's term,
    /// which proves the state was current: one commit and one replicated item per read, where
    /// `Before` needs a record and a later outcome. Elsewhere (a follower, a leader whose first
    /// entry is not committed yet, a token with a use limit) they are recorded `Before`.
    After,
}

const fn token(any: &'static [Capability], sudo: bool) -> OpClass {
    OpClass::Token(Need { any, sudo })
}
const READ: OpClass = token(&[Capability::Read], false);
const READ_SUDO: OpClass = token(&[Capability::Read], true);
const LIST: OpClass = token(&[Capability::List], false);
const LIST_SUDO: OpClass = token(&[Capability::List], true);
const LIST_OR_READ: OpClass = token(&[Capability::List, Capability::Read], false);
const UPDATE: OpClass = token(&[Capability::Update], false);
const UPDATE_SUDO: OpClass = token(&[Capability::Update], true);
const DELETE: OpClass = token(&[Capability::Delete], false);
/// Vault: create for a new entry, update for an existing one. Which one applies to a secret is
/// decided where its write is guarded (`kv_put`), not from a read that may be stale.
const CREATE_OR_UPDATE: OpClass = token(&[Capability::Create, Capability::Update], false);

impl Operation {
    /// The operation table: every operation's name, logical path and class, in one place.
    /// Adding an operation is a row here and its handler (CONTRIBUTING.md shows one).
    pub fn spec(&self) -> Spec {
        use OpClass::{Credentials, Unaudited};
        let (name, path, class): (&'static str, String, OpClass) = match self {
            Operation::SealStatus => ("SealStatus", "sys/seal-status".into(), Unaudited),
            Operation::Health => ("Health", "sys/health".into(), Unaudited),
            Operation::Unseal { .. } => ("Unseal", "sys/unseal".into(), Unaudited),
            Operation::Init { .. } => ("Init", "sys/init".into(), Unaudited),
            Operation::Join { .. } => ("Join", "sys/storage/raft/join".into(), Unaudited),
            Operation::Seal => ("Seal", "sys/seal".into(), UPDATE_SUDO),
            Operation::Leader => ("Leader", "sys/leader".into(), READ),
            // Vault: listing audit devices needs sudo.
            Operation::Mounts { table: MountTable::Audit, .. } => ("Mounts", "sys/audit".into(), READ_SUDO),
            Operation::Mounts { table: MountTable::Auth, .. } => ("Mounts", "sys/auth".into(), READ),
            Operation::Mounts { path: None, .. } => ("Mounts", "sys/mounts".into(), READ),
            Operation::Mounts { path: Some(p), .. } => ("Mounts", format!("sys/internal/ui/mounts/{p}"), READ),
            Operation::Members => ("Members", "sys/storage/raft/configuration".into(), READ_SUDO),
            Operation::RemovePeer { .. } => ("RemovePeer", "sys/storage/raft/remove-peer".into(), UPDATE_SUDO),
            Operation::KvPut { path, .. } => ("KvPut", format!("secret/data/{path}"), CREATE_OR_UPDATE),
            Operation::KvPatch { path, .. } => ("KvPatch", format!("secret/data/{path}"), UPDATE),
            Operation::KvGet { path, .. } => ("KvGet", format!("secret/data/{path}"), READ),
            Operation::KvGetStage { path, .. } => ("KvGetStage", format!("secret/data/{path}"), READ),
            Operation::KvList { prefix } => ("KvList", format!("secret/metadata/{prefix}"), LIST),
            Operation::Watch { prefix } => ("Watch", format!("secret/data/{prefix}"), READ),
            // Deleting the latest version is a DELETE on the data path in Vault; named versions
            // go through `delete/`, with update.
            Operation::KvDelete { path, versions } if versions.is_empty() => {
                ("KvDelete", format!("secret/data/{path}"), DELETE)
            }
            Operation::KvDelete { path, .. } => ("KvDelete", format!("secret/delete/{path}"), UPDATE),
            Operation::KvUndelete { path, .. } => ("KvUndelete", format!("secret/undelete/{path}"), UPDATE),
            Operation::KvDestroy { path, .. } => ("KvDestroy", format!("secret/destroy/{path}"), UPDATE),
            Operation::KvMetadata { path } => ("KvMetadata", format!("secret/metadata/{path}"), READ),
            Operation::KvSetMetadata { path, .. } => ("KvSetMetadata", format!("secret/metadata/{path}"), UPDATE),
            Operation::KvDeleteMetadata { path } => ("KvDeleteMetadata", format!("secret/metadata/{path}"), DELETE),
            Operation::TokenCreate(c) if c.orphan => ("TokenCreate", "auth/token/create-orphan".into(), UPDATE),
            Operation::TokenCreate(_) => ("TokenCreate", "auth/token/create".into(), UPDATE),
            Operation::TokenLookup(t @ TokenRef::SelfToken) => ("TokenLookup", token_path("lookup", t), READ),
            Operation::TokenLookup(t) => ("TokenLookup", token_path("lookup", t), UPDATE),
            Operation::TokenRenew { target, .. } => ("TokenRenew", token_path("renew", target), UPDATE),
            Operation::TokenRevoke(t) => ("TokenRevoke", token_path("revoke", t), UPDATE),
            // Vault: orphaning a token's children takes it out of its tree's accounting.
            Operation::TokenRevokeOrphan(_) => ("TokenRevokeOrphan", "auth/token/revoke-orphan".into(), UPDATE_SUDO),
            Operation::TokenListAccessors => ("TokenListAccessors", "auth/token/accessors".into(), LIST_SUDO),
            Operation::Metrics => ("Metrics", "sys/metrics".into(), READ),
            Operation::AutopilotState => ("AutopilotState", "sys/storage/raft/autopilot/state".into(), READ_SUDO),
            Operation::SnapshotSave => ("SnapshotSave", "sys/storage/raft/snapshot".into(), READ_SUDO),
            // Replaces everything, keys included: sudo, as in Vault.
            Operation::SnapshotRestore { force: false, .. } => {
                ("SnapshotRestore", "sys/storage/raft/snapshot".into(), UPDATE_SUDO)
            }
            Operation::SnapshotRestore { force: true, .. } => {
                ("SnapshotRestore", "sys/storage/raft/snapshot-force".into(), UPDATE_SUDO)
            }
            Operation::Capabilities { target, .. } => {
                let path = match target {
                    TokenRef::SelfToken => "sys/capabilities-self",
                    TokenRef::Accessor(_) => "sys/capabilities-accessor",
                    TokenRef::Token(_) => "sys/capabilities",
                };
                ("Capabilities", path.into(), UPDATE)
            }
            Operation::PolicyWrite { name, .. } => ("PolicyWrite", format!("sys/policy/{name}"), CREATE_OR_UPDATE),
            Operation::PolicyRead { name } => ("PolicyRead", format!("sys/policy/{name}"), READ),
            Operation::PolicyList => ("PolicyList", "sys/policy".into(), LIST),
            Operation::PolicyDelete { name } => ("PolicyDelete", format!("sys/policy/{name}"), DELETE),
            Operation::RoleWrite(role) => ("RoleWrite", role.method().role_path(role.name()), CREATE_OR_UPDATE),
            Operation::RoleRead { method, name } => ("RoleRead", method.role_path(name), READ),
            Operation::RoleList { method } => ("RoleList", method.roles_path(), LIST),
            Operation::RoleDelete { method, name } => ("RoleDelete", method.role_path(name), DELETE),
            Operation::AppRoleRoleId { name } => {
                ("AppRoleRoleId", format!("{}/role-id", Method::AppRole.role_path(name)), READ)
            }
            Operation::AppRoleSecretId { name } => {
                ("AppRoleSecretId", format!("{}/secret-id", Method::AppRole.role_path(name)), UPDATE)
            }
            Operation::JwtConfigWrite(_) => ("JwtConfigWrite", "auth/jwt/config".into(), UPDATE),
            Operation::JwtConfigRead => ("JwtConfigRead", "auth/jwt/config".into(), READ),
            Operation::Login(c) => ("Login", format!("auth/{}/login", c.method().name()), Credentials),
            Operation::GenerateRoot(step) => {
                ("GenerateRoot", format!("sys/generate-root/{}", step.name()), Credentials)
            }
            Operation::Rekey(step) => ("Rekey", format!("sys/rekey/{}", step.name()), Credentials),
            Operation::AuditList(_) => ("AuditList", "sys/audit/list".into(), READ_SUDO),
            Operation::AuditVerify { .. } => ("AuditVerify", "sys/audit/verify".into(), READ_SUDO),
            Operation::AuditHash { .. } => ("AuditHash", "sys/audit/hash".into(), UPDATE_SUDO),
            Operation::AuditUnusedGrants { .. } => ("AuditUnusedGrants", "sys/audit/unused-grants".into(), READ_SUDO),
            // Setting, disabling or triggering a rotation also needs every grant the rotation
            // itself will use (invariant 7): `Core::authorize` checks those beyond this row.
            Operation::RotationSet(c) => ("RotationSet", format!("sys/rotation/config/{}", c.path), CREATE_OR_UPDATE),
            Operation::RotationDisable { path } => {
                ("RotationDisable", format!("sys/rotation/config/{path}"), CREATE_OR_UPDATE)
            }
            Operation::RotationNow { path } => ("RotationNow", format!("sys/rotation/rotate/{path}"), CREATE_OR_UPDATE),
            Operation::RotationStatus { path: Some(path) } => {
                ("RotationStatus", format!("sys/rotation/status/{path}"), READ)
            }
            Operation::RotationStatus { path: None } => ("RotationStatus", "sys/rotation/status".into(), LIST_OR_READ),
            // Registering code that the nodes will run: sudo.
            Operation::RotationFunctionRegister { name, .. } => {
                ("RotationFunctionRegister", format!("sys/rotation/function/{name}"), UPDATE_SUDO)
            }
            Operation::RotationFunctionList => ("RotationFunctionList", "sys/rotation/function".into(), LIST_OR_READ),
            Operation::KeyringRotate => ("KeyringRotate", "sys/rotate".into(), UPDATE_SUDO),
            Operation::KeyringStatus => ("KeyringStatus", "sys/key-status".into(), READ),
        };
        let record = match self {
            Operation::KvPut { .. }
            | Operation::KvPatch { .. }
            | Operation::KvDelete { .. }
            | Operation::KvUndelete { .. }
            | Operation::KvDestroy { .. }
            | Operation::KvSetMetadata { .. }
            | Operation::KvDeleteMetadata { .. } => Recording::WithWrite,
            // Reads of local state only: a token with a use limit never takes this path.
            Operation::KvGet { .. }
            | Operation::KvGetStage { .. }
            | Operation::KvList { .. }
            | Operation::KvMetadata { .. }
            | Operation::PolicyRead { .. }
            | Operation::PolicyList => Recording::After,
            _ => Recording::Before,
        };
        Spec { name, path, class, record }
    }

    /// The operation's name in metrics, logs and audit records (its table row's).
    pub fn name(&self) -> &'static str {
        self.spec().name
    }

    /// The path policies and audit records name this operation by (its table row's).
    pub fn logical_path(&self) -> String {
        self.spec().path
    }

    /// Whether a `Credentials` request carries credentials (a login, an unseal share or a
    /// ceremony's nonce): no token is checked, and it is charged as a login attempt. A
    /// ceremony's status or start carries none: it is an unauthenticated request like any other.
    pub fn checks_credentials(&self) -> bool {
        match self {
            Operation::Login(_) => true,
            Operation::GenerateRoot(step) => step.nonce().is_some(),
            Operation::Rekey(step) => step.nonce().is_some(),
            _ => false,
        }
    }
}

fn token_path(action: &str, target: &TokenRef) -> String {
    match target {
        TokenRef::SelfToken => format!("auth/token/{action}-self"),
        TokenRef::Token(_) => format!("auth/token/{action}"),
        TokenRef::Accessor(_) => format!("auth/token/{action}-accessor"),
    }
}

#[cfg(test)]
mod tests {
    //! The operation table's decisions, checked for every operation: a new operation that is
    //! missing from them fails to compile (`variant`) or fails here (`ROWS`, the samples).

    use std::collections::{BTreeMap, BTreeSet};

    use zeroize::Zeroizing;

    use super::*;
    use crate::auth::{AppRole, CertRole, JwtConfig, JwtRole};
    use crate::auth::{Credentials, RoleConfig};
    use crate::ceremony::{CeremonyStep, GenerateRootParams, RekeyParams};
    use crate::kv::SecretData;
    use crate::request::{MountTable, TokenCreate};
    use crate::rotation::{RotationConfig, RotatorKind, Schedule};

    /// What the samples carry where a secret goes: it must never show in `Debug`.
    const SECRET: &str = "s3cr3t-must-not-print";

    /// Every operation's variant name. Exhaustive on purpose: a new operation does not compile
    /// until it is listed here, counted in `ROWS` and given a sample below.
    fn variant(op: &Operation) -> &'static str {
        match op {
            Operation::SealStatus => "SealStatus",
            Operation::Health => "Health",
            Operation::Unseal { .. } => "Unseal",
            Operation::Init { .. } => "Init",
            Operation::Seal => "Seal",
            Operation::Leader => "Leader",
            Operation::Members => "Members",
            Operation::Mounts { .. } => "Mounts",
            Operation::Join { .. } => "Join",
            Operation::RemovePeer { .. } => "RemovePeer",
            Operation::KvPut { .. } => "KvPut",
            Operation::KvPatch { .. } => "KvPatch",
            Operation::KvGet { .. } => "KvGet",
            Operation::KvGetStage { .. } => "KvGetStage",
            Operation::KvList { .. } => "KvList",
            Operation::Watch { .. } => "Watch",
            Operation::KvDelete { .. } => "KvDelete",
            Operation::KvUndelete { .. } => "KvUndelete",
            Operation::KvDestroy { .. } => "KvDestroy",
            Operation::KvMetadata { .. } => "KvMetadata",
            Operation::KvSetMetadata { .. } => "KvSetMetadata",
            Operation::KvDeleteMetadata { .. } => "KvDeleteMetadata",
            Operation::TokenCreate(_) => "TokenCreate",
            Operation::TokenLookup(_) => "TokenLookup",
            Operation::TokenRenew { .. } => "TokenRenew",
            Operation::TokenRevoke(_) => "TokenRevoke",
            Operation::TokenRevokeOrphan(_) => "TokenRevokeOrphan",
            Operation::TokenListAccessors => "TokenListAccessors",
            Operation::Metrics => "Metrics",
            Operation::AutopilotState => "AutopilotState",
            Operation::SnapshotSave => "SnapshotSave",
            Operation::SnapshotRestore { .. } => "SnapshotRestore",
            Operation::Capabilities { .. } => "Capabilities",
            Operation::PolicyWrite { .. } => "PolicyWrite",
            Operation::PolicyRead { .. } => "PolicyRead",
            Operation::PolicyList => "PolicyList",
            Operation::PolicyDelete { .. } => "PolicyDelete",
            Operation::RoleWrite(_) => "RoleWrite",
            Operation::RoleRead { .. } => "RoleRead",
            Operation::RoleList { .. } => "RoleList",
            Operation::RoleDelete { .. } => "RoleDelete",
            Operation::AppRoleRoleId { .. } => "AppRoleRoleId",
            Operation::AppRoleSecretId { .. } => "AppRoleSecretId",
            Operation::JwtConfigWrite(_) => "JwtConfigWrite",
            Operation::JwtConfigRead => "JwtConfigRead",
            Operation::Login(_) => "Login",
            Operation::GenerateRoot(_) => "GenerateRoot",
            Operation::AuditList(_) => "AuditList",
            Operation::AuditVerify { .. } => "AuditVerify",
            Operation::AuditHash { .. } => "AuditHash",
            Operation::AuditUnusedGrants { .. } => "AuditUnusedGrants",
            Operation::RotationSet(_) => "RotationSet",
            Operation::RotationDisable { .. } => "RotationDisable",
            Operation::RotationNow { .. } => "RotationNow",
            Operation::RotationStatus { .. } => "RotationStatus",
            Operation::RotationFunctionRegister { .. } => "RotationFunctionRegister",
            Operation::RotationFunctionList => "RotationFunctionList",
            Operation::KeyringRotate => "KeyringRotate",
            Operation::KeyringStatus => "KeyringStatus",
            Operation::Rekey(_) => "Rekey",
        }
    }
    /// The number of arms in `variant`.
    const ROWS: usize = 60;

    fn secret() -> Zeroizing<String> {
        Zeroizing::new(SECRET.into())
    }

    fn data() -> SecretData {
        SecretData([("password".to_string(), SECRET.to_string())].into())
    }

    /// At least one operation of every variant, and one of each shape the table treats apart.
    fn samples() -> Vec<Operation> {
        let path = || "app/db".to_string();
        let rotation = RotationConfig {
            path: path(),
            rotator: RotatorKind::Random,
            params: BTreeMap::new(),
            schedule: Schedule::Every { ms: 60_000 },
            window: None,
            max_attempts: 3,
            backoff_ms: 1_000,
            enabled: true,
            configured_by: String::new(),
        };
        let empty_upload = crate::backup::Upload(Box::pin(futures::stream::empty()));
        vec![
            Operation::SealStatus,
            Operation::Health,
            Operation::Unseal { share: secret(), reset: false },
            Operation::Init { shares: 5, threshold: 3 },
            Operation::Seal,
            Operation::Leader,
            Operation::Members,
            Operation::Mounts { path: None, table: MountTable::Secrets },
            Operation::Mounts { path: Some("secret/".into()), table: MountTable::Secrets },
            Operation::Mounts { path: None, table: MountTable::Auth },
            Operation::Mounts { path: None, table: MountTable::Audit },
            Operation::Join { peer: "127.0.0.1:8201".into(), non_voter: false },
            Operation::RemovePeer { id: 3 },
            Operation::KvPut { path: path(), data: data(), cas: None },
            Operation::KvPatch { path: path(), set: data(), remove: vec![], cas: Some(1) },
            Operation::KvGet { path: path(), version: None },
            Operation::KvGetStage { path: path(), stage: crate::kv::Stage::Current },
            Operation::KvList { prefix: "app/".into() },
            Operation::Watch { prefix: "app/".into() },
            Operation::KvDelete { path: path(), versions: vec![] },
            Operation::KvDelete { path: path(), versions: vec![1] },
            Operation::KvUndelete { path: path(), versions: vec![1] },
            Operation::KvDestroy { path: path(), versions: vec![1] },
            Operation::KvMetadata { path: path() },
            Operation::KvSetMetadata { path: path(), settings: Default::default() },
            Operation::KvDeleteMetadata { path: path() },
            Operation::TokenCreate(TokenCreate::default()),
            Operation::TokenCreate(TokenCreate { orphan: true, ..Default::default() }),
            Operation::TokenLookup(TokenRef::SelfToken),
            Operation::TokenLookup(TokenRef::Token(secret())),
            Operation::TokenLookup(TokenRef::Accessor("acc".into())),
            Operation::TokenRenew { target: TokenRef::Token(secret()), increment: None },
            Operation::TokenRevoke(TokenRef::Token(secret())),
            Operation::TokenRevokeOrphan(TokenRef::Token(secret())),
            Operation::TokenListAccessors,
            Operation::Metrics,
            Operation::AutopilotState,
            Operation::SnapshotSave,
            Operation::SnapshotRestore { upload: empty_upload, force: true },
            Operation::Capabilities { target: TokenRef::SelfToken, paths: vec![] },
            Operation::Capabilities { target: TokenRef::Token(secret()), paths: vec![] },
            Operation::PolicyWrite { name: "app".into(), text: String::new() },
            Operation::PolicyRead { name: "app".into() },
            Operation::PolicyList,
            Operation::PolicyDelete { name: "app".into() },
            Operation::RoleWrite(RoleConfig::AppRole(AppRole { name: "ci".into(), ..Default::default() })),
            Operation::RoleWrite(RoleConfig::Cert(CertRole::default())),
            Operation::RoleWrite(RoleConfig::Jwt(JwtRole::default())),
            Operation::RoleRead { method: Method::Cert, name: "web".into() },
            Operation::RoleList { method: Method::Jwt },
            Operation::RoleDelete { method: Method::AppRole, name: "ci".into() },
            Operation::AppRoleRoleId { name: "ci".into() },
            Operation::AppRoleSecretId { name: "ci".into() },
            Operation::JwtConfigWrite(JwtConfig::default()),
            Operation::JwtConfigRead,
            Operation::Login(Credentials::AppRole { role_id: "r".into(), secret_id: secret() }),
            Operation::Login(Credentials::Jwt { role: "svc".into(), jwt: secret() }),
            Operation::Login(Credentials::Cert { role: None }),
            Operation::GenerateRoot(CeremonyStep::<GenerateRootParams>::Status),
            Operation::GenerateRoot(CeremonyStep::Submit { nonce: secret(), share: secret() }),
            Operation::AuditList(Default::default()),
            Operation::AuditVerify { upto: None },
            Operation::AuditHash { value: secret() },
            Operation::AuditUnusedGrants { since_ms: 0 },
            Operation::RotationSet(rotation),
            Operation::RotationDisable { path: path() },
            Operation::RotationNow { path: path() },
            Operation::RotationStatus { path: Some(path()) },
            Operation::RotationStatus { path: None },
            Operation::RotationFunctionRegister { name: "f".into(), sha256: "00".into() },
            Operation::RotationFunctionList,
            Operation::KeyringRotate,
            Operation::KeyringStatus,
            Operation::Rekey(CeremonyStep::<RekeyParams>::Status),
            Operation::Rekey(CeremonyStep::Cancel { nonce: secret() }),
        ]
    }

    #[test]
    fn every_operation_has_a_consistent_row() {
        // What a sealed node or one in no cluster serves: the only operations with no record.
        let unaudited: BTreeSet<&str> = ["SealStatus", "Health", "Unseal", "Init", "Join"].into();
        // The only operations whose request is its own proof.
        let credentials: BTreeSet<&str> = ["Login", "GenerateRoot", "Rekey"].into();
        let mut seen = BTreeSet::new();
        for op in samples() {
            let spec = op.spec();
            let shown = format!("{op:?}");
            assert_eq!(spec.name, variant(&op), "{shown}: the table names it after another operation");
            assert_eq!(op.name(), spec.name);
            assert_eq!(op.logical_path(), spec.path);
            seen.insert(spec.name);
            let roots = ["sys/", "secret/", "auth/"];
            assert!(
                roots.iter().any(|r| spec.path.starts_with(r)),
                "{shown}: path {:?} outside sys/, secret/, auth/",
                spec.path
            );
            assert!(
                !spec.path.contains("//") && !spec.path.starts_with('/'),
                "{shown}: malformed path {:?}",
                spec.path
            );
            assert!(!shown.contains(SECRET), "Debug of {} prints a secret: {shown}", spec.name);
            assert_eq!(spec.class == OpClass::Unaudited, unaudited.contains(spec.name), "{shown}: audited or not");
            assert_eq!(
                spec.class == OpClass::Credentials,
                credentials.contains(spec.name),
                "{shown}: self-authenticating or not"
            );
            if op.checks_credentials() {
                assert_eq!(spec.class, OpClass::Credentials, "{shown} is charged as a login but checks a token");
            }
            if let OpClass::Token(need) = spec.class {
                assert!(!need.any.is_empty(), "{shown}: a token-bearing operation that needs nothing");
                assert!(
                    !need.any.contains(&Capability::Sudo) && !need.any.contains(&Capability::Deny),
                    "{shown}: sudo is a flag, deny no grant"
                );
                assert!(!(need.sudo && spec.path.starts_with("secret/")), "{shown}: sudo on a secret's path");
                assert!(!need.describe().is_empty());
            }
        }
        assert_eq!(seen.len(), ROWS, "an operation has no sample: {seen:?}");
    }

    #[test]
    fn writes_need_more_than_read_and_admin_operations_need_sudo() {
        let sudo: BTreeSet<&str> = [
            "Seal",
            "Members",
            "RemovePeer",
            "TokenRevokeOrphan",
            "TokenListAccessors",
            "AutopilotState",
            "SnapshotSave",
            "SnapshotRestore",
            "AuditList",
            "AuditVerify",
            "AuditHash",
            "AuditUnusedGrants",
            "RotationFunctionRegister",
            "KeyringRotate",
        ]
        .into();
        for op in samples() {
            let spec = op.spec();
            let OpClass::Token(need) = spec.class else { continue };
            let audit_devices = matches!(op, Operation::Mounts { table: MountTable::Audit, .. });
            assert_eq!(need.sudo, sudo.contains(spec.name) || audit_devices, "{op:?}: sudo or not");
            let writes =
                ["Put", "Patch", "Write", "Delete", "Destroy", "Create", "Revoke", "Set", "Rotate", "Register"];
            if writes.iter().any(|w| spec.name.contains(w)) {
                assert!(
                    !need.any.contains(&Capability::Read) && !need.any.contains(&Capability::List),
                    "{op:?}: a write allowed by read or list"
                );
            }
        }
    }
}
