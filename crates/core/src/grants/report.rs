//! The unused-grants report: policy rules no request used since a time, and who holds them.

use super::*;
use crate::Core;

impl Core {
    pub(crate) fn unused_grants(&self, keyring: &Keyring, since_ms: i64) -> Result<Vec<GrantUse>> {
        let policies = self.policies.read().expect("policy lock").clone();
        // (policy, pattern, capability) that decided an allowed request in the window.
        let mut used: BTreeSet<(String, String, String)> = BTreeSet::new();
        let mut from_seq = 0;
        loop {
            let filter = AuditFilter { from_seq, since_ms: Some(since_ms), limit: 10_000, ..Default::default() };
            let page = self.audit_list(keyring, &filter)?;
            let Some(last) = page.last() else { break };
            from_seq = last.seq + 1;
            for r in
                page.iter().filter(|r| r.decision == "allowed" && !r.caller.policies.iter().any(|p| p == ROOT_POLICY))
            {
                let caps: Vec<&str> = r.capability.split(['|', '+']).filter(|c| !c.is_empty()).collect();
                // The rule that decided is the highest-priority matching pattern over all of the
                // token's policies; every policy holding that pattern with the capability counts.
                let matching: Vec<(&str, &crate::policy::Rule)> = r
                    .caller
                    .policies
                    .iter()
                    .filter_map(|name| policies.get(name).map(|p| (name.as_str(), p)))
                    .flat_map(|(name, p)| p.rules.iter().map(move |rule| (name, rule)))
                    .filter(|(_, rule)| rule.pattern.matches(&r.path))
                    .collect();
                let Some(best) = matching.iter().map(|(_, rule)| &rule.pattern).max_by(|a, b| priority(a, b)) else {
                    continue;
                };
                for (name, rule) in matching.iter().filter(|(_, rule)| &rule.pattern == best) {
                    for cap in rule.caps.list().iter().filter(|c| caps.contains(&c.name())) {
                        used.insert((name.to_string(), rule.pattern.as_str().to_string(), cap.name().to_string()));
                    }
                }
            }
            if page.len() < 10_000 {
                break;
            }
        }
        let holders = self.policy_holders(keyring)?;
        let mut out = Vec::new();
        for name in policies.names() {
            let Some(policy) = policies.get(name) else { continue };
            for rule in &policy.rules {
                for cap in rule.caps.list().into_iter().filter(|c| *c != Capability::Deny) {
                    let key = (name.to_string(), rule.pattern.as_str().to_string(), cap.name().to_string());
                    out.push(GrantUse {
                        used: used.contains(&key),
                        policy: key.0,
                        pattern: key.1,
                        capability: key.2,
                        holders: holders.get(name).cloned().unwrap_or_default(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Policy name → the live tokens (by accessor) and roles that hold it.
    fn policy_holders(&self, keyring: &Keyring) -> Result<BTreeMap<String, Vec<String>>> {
        let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let now = crate::now_ms();
        for (key, raw) in self.node.reader().scan_prefix(Cf::Tokens, b"t/", 1_000_000)? {
            let info: TokenInfo = decrypt_json(keyring, &key, &raw)?;
            if !info.expired_at(now) {
                for p in &info.policies {
                    holders.entry(p.clone()).or_default().push(format!("token/{}", info.accessor));
                }
            }
        }
        for method in [Method::AppRole, Method::Cert, Method::Jwt] {
            for name in self.list_roles(method)? {
                if let Some(role) = self.read_role(keyring, method, &name)? {
                    for p in &role.token().policies {
                        holders.entry(p.clone()).or_default().push(format!("{}/{name}", method.name()));
                    }
                }
            }
        }
        Ok(holders)
    }
}
