//! Authorization: default deny. A token's policies must grant, on the operation's logical
//! path, the capability its row of the operation table (`Operation::spec`) names; operations
//! that make the vault act later on the caller's behalf (rotation) need every grant that
//! later action uses as well (invariant 7).

use crate::audit::AuditContext;
use crate::policy::{Capability, Caps};
use crate::request::{Need, OpClass};
use crate::token::Caller;
use crate::{Core, Error, Operation, Result};

impl Core {
    pub(crate) fn capabilities(&self, policies: &[String], path: &str) -> Caps {
        self.policies.read().expect("policy lock").capabilities(policies.iter().map(String::as_str), path)
    }

    /// The first of `needs` (a path and the capabilities it needs, all of them) that
    /// `policies` do not grant, as the path and the missing capability.
    pub(crate) fn missing_grant(
        &self,
        policies: &[String],
        needs: &[(String, &'static [Capability])],
    ) -> Option<(String, Capability)> {
        needs.iter().find_map(|(path, caps)| {
            let granted = self.capabilities(policies, path);
            caps.iter().find(|c| !granted.has(**c)).map(|c| (path.clone(), *c))
        })
    }

    /// Default deny: the caller's policies must grant `n` (the operation's row in the
    /// table, `Operation::spec`) on its `path`. The error names the path and the capability,
    /// never the policies' contents.
    pub(crate) fn authorize(
        &self,
        caller: &Caller,
        op: &Operation,
        path: &str,
        n: Need,
        ctx: &mut AuditContext,
    ) -> Result<()> {
        ctx.capability = n.describe();
        let caps = self.capabilities(&caller.info.policies, path);
        let missing = if !n.any.iter().any(|c| caps.has(*c)) {
            Some(n.any.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(" or "))
        } else if n.sudo && !caps.has(Capability::Sudo) {
            Some("'sudo'".into())
        } else {
            None
        };
        if let Some(cap) = missing {
            ctx.decision = "denied".into();
            return Err(Error::PermissionDenied(format!("{path} requires {cap}, which this token lacks")));
        }
        // Operations that make the vault act later on the caller's behalf need, besides their
        // own path, every grant that later action uses (invariant 7).
        let acts_on = match op {
            Operation::RotationSet(config) => crate::rotation::grants_needed(config),
            Operation::RotationNow { path } | Operation::RotationDisable { path } => {
                crate::rotation::target_grants(path)
            }
            _ => Vec::new(),
        };
        if let Some((on, cap)) = self.missing_grant(&caller.info.policies, &acts_on) {
            ctx.decision = "denied".into();
            ctx.capability = format!("{cap} on {on}");
            return Err(Error::PermissionDenied(format!(
                "{path} also requires '{cap}' on {on} (the rotation reads or writes it), which this token lacks"
            )));
        }
        ctx.decision = "allowed".into();
        Ok(())
    }

    /// [`Core::authorize`] on the operation's own row of the table. An operation that is not
    /// token-bearing has no grant to check, so no token allows it here (fail closed).
    pub(crate) fn authorize_op(&self, caller: &Caller, op: &Operation, ctx: &mut AuditContext) -> Result<()> {
        let spec = op.spec();
        match spec.class {
            OpClass::Token(need) => self.authorize(caller, op, &spec.path, need, ctx),
            OpClass::Unaudited | OpClass::Credentials => {
                Err(Error::PermissionDenied(format!("{} is not authorized by a token's policies", spec.path)))
            }
        }
    }
}
