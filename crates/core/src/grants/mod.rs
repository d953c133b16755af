//! `arca audit unused-grants`: which policy rules no request used in a window, and who holds
//! them — the report an operator needs to remove stale permissions.

use std::collections::{BTreeMap, BTreeSet};

use arca_crypto::Keyring;
use arca_storage::Cf;

use crate::auth::Method;
use crate::codec::decrypt_json;
use crate::policy::{priority, Capability, ROOT_POLICY};
use crate::token::TokenInfo;
use crate::{AuditFilter, Result};

/// The unused-grants report: policy rules no request used since a time, and who holds them.
mod report;

/// One rule × capability of one policy, and whether any request in the window used it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantUse {
    pub policy: String,
    pub pattern: String,
    pub capability: String,
    pub used: bool,
    /// Token accessors and `<method>/<role>` names holding this policy.
    pub holders: Vec<String>,
}
