//! The `sys/policy` operations: write (parsed first: a policy that does not compile is
//! refused), read, list and delete. Every node compiles the stored text at apply (`store`).

use arca_raft::{Command, Op};
use arca_storage::Cf;

use super::store::policy_key;
use crate::policy::{Policy, DEFAULT_POLICY, ROOT_POLICY};
use crate::{Core, Error, Result};

impl Core {
    pub(crate) async fn write_policy(&self, name: &str, text: &str) -> Result<()> {
        if name == ROOT_POLICY {
            return Err(Error::InvalidArgument("the root policy is built in and cannot be changed".into()));
        }
        Policy::parse(name, text)?;
        let key = policy_key(name);
        let value = self.keyring()?.encrypt(&key, text.as_bytes()).map_err(|e| Error::Internal(e.to_string()))?;
        let ops = vec![Op::Put { cf: Cf::Sys, key, value }];
        self.node.write(Command::Txn { guards: vec![], ops }).await?;
        Ok(())
    }

    pub(crate) fn read_policy(&self, name: &str) -> Result<String> {
        crate::policy::validate_name(name)?;
        if name == ROOT_POLICY {
            return Ok("# Built in: every capability on every path.\n".into());
        }
        let set = self.policies.read().expect("policy lock");
        set.get(name).map(|p| p.text.clone()).ok_or_else(|| Error::NotFound(format!("no policy named {name:?}")))
    }

    pub(crate) fn list_policies(&self) -> Vec<String> {
        let mut names: Vec<String> = self.policies.read().expect("policy lock").names().map(str::to_string).collect();
        names.push(ROOT_POLICY.into());
        names.sort();
        names
    }

    pub(crate) async fn delete_policy(&self, name: &str) -> Result<()> {
        crate::policy::validate_name(name)?;
        if name == ROOT_POLICY || name == DEFAULT_POLICY {
            return Err(Error::InvalidArgument(format!("the {name} policy is built in and cannot be deleted")));
        }
        if self.node.reader().get(Cf::Sys, &policy_key(name))?.is_none() {
            return Err(Error::NotFound(format!("no policy named {name:?}")));
        }
        let ops = vec![Op::Delete { cf: Cf::Sys, key: policy_key(name) }];
        self.node.write(Command::Txn { guards: vec![], ops }).await?;
        Ok(())
    }
}
