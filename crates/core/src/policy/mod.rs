//! Path policies: the language (`lang`: Vault's HCL, compiled to a matcher that decides every
//! request) and the replicated store (`store`: policy records behind the barrier, compiled on
//! every node at apply time). Authorization, which puts a policy set and an operation's row of
//! the table together, is `crate::authz`.

/// The `sys/policy` operations.
mod admin;
mod lang;
pub(crate) mod store;

pub use lang::*;
