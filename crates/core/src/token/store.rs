//! The token store: create (child, orphan or login), authenticate (expiry, use counts), renew,
//! revoke with descendants, and the leader's purge of expired tokens.

use arca_crypto::Keyring;
use arca_raft::{Command, CommandResult, Guard, Op};
use arca_storage::Cf;
use tracing::{debug, info, instrument};
use zeroize::Zeroizing;

use crate::codec::{decrypt_json, encrypt_json};
use crate::policy::{DEFAULT_POLICY, ROOT_POLICY};
use crate::request::{TokenCreate, TokenRef};
use crate::token::{self, AuthSource, Caller, NewToken, TokenInfo};
use crate::{now_ms, Core, Error, Result};

/// Most tokens one revocation removes (a token and all its descendants).
const MAX_REVOKE: usize = 100_000;
/// Rounds of catching children created while their parent was being revoked.
const REVOKE_ROUNDS: usize = 8;
/// Expired records removed per purge command.
const PURGE_BATCH: usize = 256;
/// Sys key recording the last purge (its decision time travels in the command).
const PURGE_KEY: &[u8] = b"token/last-purge";

impl Core {
    /// Writes a new token, with `guards`/`ops` of the caller in the same command (a login
    /// consuming a secret-id use). Returns the token only once the write is applied.
    #[instrument(level = "debug", skip_all, fields(method = %new.auth.method))]
    pub(crate) async fn write_token(
        &self,
        keyring: &Keyring,
        new: NewToken,
        mut guards: Vec<Guard>,
        mut ops: Vec<Op>,
    ) -> Result<(Zeroizing<String>, TokenInfo)> {
        let (secret, accessor) = token::generate()?;
        let key = token::storage_key(&secret);
        let parent = new.parent.as_ref().map(|(a, k, _)| (a.clone(), k.clone()));
        let info = new.into_info(accessor.clone(), now_ms());
        let sealed = encrypt_json(keyring, &key, &info)?;
        if let Some((parent_accessor, parent_key)) = &parent {
            // The parent must still exist when the child lands: a child created during its
            // parent's revocation fails here instead of surviving it.
            guards.push(Guard::unchanged(Cf::Tokens, token::accessor_key(parent_accessor), Some(parent_key)));
            ops.push(Op::Put { cf: Cf::Tokens, key: token::child_key(parent_accessor, &accessor), value: vec![] });
        }
        ops.push(Op::Put { cf: Cf::Tokens, key: token::accessor_key(&accessor), value: key.clone() });
        ops.push(Op::Put { cf: Cf::Tokens, key: key.clone(), value: sealed.clone() });
        match self.node.write(Command::Txn { guards, ops }).await?.result {
            CommandResult::Applied => Ok((secret, info)),
            _ => {
                // A resent forward whose first copy applied fails its guards the second time;
                // the stored record is then exactly ours (fresh nonce).
                if self.landed(Cf::Tokens, &key, &sealed).await? {
                    return Ok((secret, info));
                }
                Err(match parent {
                    Some(_) => Error::BadToken,
                    None => Error::Conflict,
                })
            }
        }
    }

    /// A token made by `caller`: a child (revoked with the caller) unless `orphan`, and never
    /// with a policy the caller lacks (unless the caller is root).
    pub(crate) async fn create_token(
        &self,
        keyring: &Keyring,
        caller: &Caller,
        req: TokenCreate,
    ) -> Result<(Zeroizing<String>, TokenInfo)> {
        for p in &req.policies {
            crate::policy::validate_name(p)?;
        }
        // Vault's rule: a use-limited token makes no tokens. A child (or an orphan) would carry
        // the caller's grants past its last use.
        if caller.info.uses_left.is_some() {
            return Err(Error::PermissionDenied(
                "a token with a use limit cannot create tokens; use a token without one".into(),
            ));
        }
        if req.policies.iter().any(|p| p == ROOT_POLICY) {
            return Err(Error::PermissionDenied(
                "the root policy cannot be granted to new tokens; 'arca operator generate-root' makes a root token"
                    .into(),
            ));
        }
        let mut policies: Vec<String> = if req.policies.is_empty() {
            caller.info.policies.iter().filter(|p| *p != ROOT_POLICY).cloned().collect()
        } else {
            req.policies.clone()
        };
        if !caller.info.is_root() {
            if let Some(extra) = policies.iter().find(|p| *p != DEFAULT_POLICY && !caller.info.policies.contains(p)) {
                return Err(Error::PermissionDenied(format!(
                    "a token cannot grant policy {extra:?}, which it does not hold itself"
                )));
            }
        }
        if req.no_default_policy {
            policies.retain(|p| p != DEFAULT_POLICY);
        } else if !policies.iter().any(|p| p == DEFAULT_POLICY) {
            policies.push(DEFAULT_POLICY.into());
        }
        policies.sort();
        policies.dedup();
        let new = NewToken {
            policies,
            ttl_ms: req.ttl.map(|d| crate::duration::millis(d, "ttl")).transpose()?,
            max_ttl_ms: req.max_ttl.map(|d| crate::duration::millis(d, "max_ttl")).transpose()?,
            display_name: if req.display_name.is_empty() { "token".into() } else { req.display_name },
            meta: req.meta,
            parent: (!req.orphan).then(|| (caller.info.accessor.clone(), caller.key.clone(), caller.info.expires_ms)),
            renewable: req.renewable,
            num_uses: req.num_uses,
            auth: AuthSource {
                method: "token".into(),
                role: String::new(),
                identity: caller.info.display_name.clone(),
            },
            root: false,
        };
        self.write_token(keyring, new, vec![], vec![]).await
    }

    /// Looks a token up by its hash and checks its expiry; takes one use of a limited token.
    /// `known`: a record this request already decrypted (before its barrier); reused if the
    /// stored bytes are still exactly those.
    pub(crate) async fn authenticate(
        &self,
        keyring: &Keyring,
        token: Option<&str>,
        mut known: Option<(Vec<u8>, TokenInfo)>,
        may_take_use: bool,
    ) -> Result<Caller> {
        let token = token.ok_or(Error::MissingToken)?;
        if !token::well_formed(token) {
            return Err(Error::BadToken);
        }
        let key = token::storage_key(token);
        for _ in 0..crate::MAX_TXN_ATTEMPTS {
            let raw = self.node.reader().get(Cf::Tokens, &key)?.ok_or(Error::BadToken)?;
            let mut info: TokenInfo = match known.take() {
                Some((seen, info)) if seen == raw => info,
                _ => decrypt_json(keyring, &key, &raw)?,
            };
            if info.expired_at(now_ms()) {
                return Err(Error::BadToken);
            }
            let Some(uses) = info.uses_left else { return Ok(Caller { key, info }) };
            if !may_take_use {
                // Decided without a use limit a moment ago (a token's limit is fixed when it is
                // made, so this is defence in depth): a retry is recorded first, then takes it.
                return Err(Error::Conflict);
            }
            if uses <= 1 {
                // The last use: the token goes now, and this request is its last.
                self.revoke(keyring, vec![info.accessor.clone()]).await?;
                return Ok(Caller { key, info });
            }
            info.uses_left = Some(uses - 1);
            let guards = vec![Guard::unchanged(Cf::Tokens, key.clone(), Some(&raw))];
            let value = encrypt_json(keyring, &key, &info)?;
            let ops = vec![Op::Put { cf: Cf::Tokens, key: key.clone(), value }];
            if self.node.write(Command::Txn { guards, ops }).await?.result == CommandResult::Applied {
                return Ok(Caller { key, info });
            }
            // Another request took a use concurrently: take the next one.
            self.node.read_barrier().await?;
        }
        Err(Error::Conflict)
    }

    /// The token a token operation names: `(storage key, raw record, info)`.
    /// The live (unexpired) token with `accessor`, if there is one.
    pub(crate) fn token_by_accessor(&self, keyring: &Keyring, accessor: &str) -> Result<Option<TokenInfo>> {
        token::valid_accessor(accessor)?;
        let reader = self.node.reader();
        let Some(key) = reader.get(Cf::Tokens, &token::accessor_key(accessor))? else { return Ok(None) };
        let Some(raw) = reader.get(Cf::Tokens, &key)? else { return Ok(None) };
        let info: TokenInfo = decrypt_json(keyring, &key, &raw)?;
        Ok((!info.expired_at(now_ms())).then_some(info))
    }

    pub(crate) fn resolve(
        &self,
        keyring: &Keyring,
        caller: &Caller,
        target: &TokenRef,
    ) -> Result<(Vec<u8>, Vec<u8>, TokenInfo)> {
        let missing = || Error::NotFound("no such token (it may have expired or been revoked)".into());
        let key = match target {
            TokenRef::SelfToken => caller.key.clone(),
            TokenRef::Token(t) if token::well_formed(t) => token::storage_key(t),
            TokenRef::Token(_) => return Err(missing()),
            TokenRef::Accessor(a) => {
                token::valid_accessor(a)?;
                self.node.reader().get(Cf::Tokens, &token::accessor_key(a))?.ok_or_else(missing)?
            }
        };
        let raw = self.node.reader().get(Cf::Tokens, &key)?.ok_or_else(missing)?;
        let info: TokenInfo = decrypt_json(keyring, &key, &raw)?;
        if info.expired_at(now_ms()) {
            return Err(missing());
        }
        Ok((key, raw, info))
    }

    pub(crate) async fn renew(
        &self,
        keyring: &Keyring,
        caller: &Caller,
        target: &TokenRef,
        increment_ms: Option<i64>,
    ) -> Result<TokenInfo> {
        for _ in 0..crate::MAX_TXN_ATTEMPTS {
            let (key, raw, mut info) = self.resolve(keyring, caller, target)?;
            let expires = info.renewed_expiry(now_ms(), increment_ms)?;
            if expires == info.expires_ms {
                return Ok(info);
            }
            info.expires_ms = expires;
            let guards = vec![Guard::unchanged(Cf::Tokens, key.clone(), Some(&raw))];
            let value = encrypt_json(keyring, &key, &info)?;
            let ops = vec![Op::Put { cf: Cf::Tokens, key: key.clone(), value: value.clone() }];
            if self.node.write(Command::Txn { guards, ops }).await?.result == CommandResult::Applied {
                return Ok(info);
            }
            if self.landed(Cf::Tokens, &key, &value).await? {
                return Ok(info);
            }
        }
        Err(Error::Conflict)
    }

    /// Revokes the tokens with these accessors and all their descendants, in one command per
    /// round. A child committed while its parent's revocation was being decided is caught by
    /// the next round (its parent is gone, so no further children can appear under it).
    #[instrument(level = "info", skip_all, fields(roots = roots.len()))]
    pub(crate) async fn revoke(&self, keyring: &Keyring, mut roots: Vec<String>) -> Result<usize> {
        let reader = self.node.reader().clone();
        let mut total = 0;
        for _ in 0..REVOKE_ROUNDS {
            if roots.is_empty() {
                return Ok(total);
            }
            let mut ops = Vec::new();
            let mut visited = Vec::new();
            let mut queue = roots.clone();
            while let Some(accessor) = queue.pop() {
                if visited.len() >= MAX_REVOKE {
                    return Err(Error::InvalidArgument(format!(
                        "over {MAX_REVOKE} tokens descend from this one; revoke its children first"
                    )));
                }
                if let Some(key) = reader.get(Cf::Tokens, &token::accessor_key(&accessor))? {
                    if roots.contains(&accessor) {
                        // Unlink the root from its own parent.
                        if let Some(raw) = reader.get(Cf::Tokens, &key)? {
                            let info: TokenInfo = decrypt_json(keyring, &key, &raw)?;
                            if let Some(p) = info.parent {
                                ops.push(Op::Delete { cf: Cf::Tokens, key: token::child_key(&p, &accessor) });
                            }
                        }
                    }
                    ops.push(Op::Delete { cf: Cf::Tokens, key });
                }
                ops.push(Op::Delete { cf: Cf::Tokens, key: token::accessor_key(&accessor) });
                for (child_key, _) in reader.scan_prefix(Cf::Tokens, &token::children_prefix(&accessor), MAX_REVOKE)? {
                    ops.push(Op::Delete { cf: Cf::Tokens, key: child_key.clone() });
                    let child = String::from_utf8_lossy(&child_key[token::children_prefix(&accessor).len()..]);
                    queue.push(child.into_owned());
                }
                visited.push(accessor);
            }
            self.node.write(Command::Txn { guards: vec![], ops }).await?;
            total += visited.len();
            self.node.read_barrier().await?;
            roots = Vec::new();
            for accessor in &visited {
                for (child_key, _) in reader.scan_prefix(Cf::Tokens, &token::children_prefix(accessor), MAX_REVOKE)? {
                    let child = String::from_utf8_lossy(&child_key[token::children_prefix(accessor).len()..]);
                    roots.push(child.into_owned());
                }
            }
        }
        info!(tokens = total, "revoked");
        Ok(total)
    }

    /// Revokes one token and makes its children orphans (Vault's `revoke-orphan`): the command
    /// that deletes the token also clears each child's parent, guarded on the child being
    /// unchanged. A child's creation is guarded on its parent's accessor record, so once the
    /// token is gone no child can appear under it; one committed between the scan and the
    /// delete is orphaned by the next round.
    #[instrument(level = "info", skip_all)]
    pub(crate) async fn revoke_orphan(
        &self,
        keyring: &Keyring,
        key: Vec<u8>,
        mut raw: Vec<u8>,
        info: TokenInfo,
    ) -> Result<usize> {
        let reader = self.node.reader().clone();
        let prefix = token::children_prefix(&info.accessor);
        let (mut deleted, mut orphaned) = (false, 0);
        for _ in 0..crate::MAX_TXN_ATTEMPTS {
            let (mut guards, mut ops) = (Vec::new(), Vec::new());
            if !deleted {
                guards.push(Guard::unchanged(Cf::Tokens, key.clone(), Some(&raw)));
                ops.push(Op::Delete { cf: Cf::Tokens, key: key.clone() });
                ops.push(Op::Delete { cf: Cf::Tokens, key: token::accessor_key(&info.accessor) });
                if let Some(p) = &info.parent {
                    ops.push(Op::Delete { cf: Cf::Tokens, key: token::child_key(p, &info.accessor) });
                }
            }
            let children = reader.scan_prefix(Cf::Tokens, &prefix, MAX_REVOKE)?;
            if deleted && children.is_empty() {
                info!(children = orphaned, "revoked; children orphaned");
                return Ok(orphaned);
            }
            for (link, _) in &children {
                ops.push(Op::Delete { cf: Cf::Tokens, key: link.clone() });
                let child = String::from_utf8_lossy(&link[prefix.len()..]).into_owned();
                let Some(child_key) = reader.get(Cf::Tokens, &token::accessor_key(&child))? else { continue };
                let Some(child_raw) = reader.get(Cf::Tokens, &child_key)? else { continue };
                let mut child_info: TokenInfo = decrypt_json(keyring, &child_key, &child_raw)?;
                child_info.parent = None;
                guards.push(Guard::unchanged(Cf::Tokens, child_key.clone(), Some(&child_raw)));
                ops.push(Op::Put {
                    cf: Cf::Tokens,
                    key: child_key.clone(),
                    value: encrypt_json(keyring, &child_key, &child_info)?,
                });
            }
            let applied = self.node.write(Command::Txn { guards, ops }).await?.result == CommandResult::Applied;
            self.node.read_barrier().await?;
            if applied {
                deleted = true;
                orphaned += children.len();
            } else if !deleted {
                // The token or a child changed meanwhile (a use taken, a renewal): decide again
                // on what is stored now.
                raw = reader
                    .get(Cf::Tokens, &key)?
                    .ok_or_else(|| Error::NotFound("no such token (it was revoked meanwhile)".into()))?;
            }
        }
        Err(Error::Conflict)
    }

    pub(crate) fn list_accessors(&self) -> Result<Vec<String>> {
        let scan = self.node.reader().scan_prefix(Cf::Tokens, b"a/", MAX_REVOKE)?;
        Ok(scan.into_iter().map(|(k, _)| String::from_utf8_lossy(&k[2..]).into_owned()).collect())
    }

    /// Leader only: deletes expired tokens and AppRole secret ids. The leader decides with its
    /// clock; the command carries the decision (which records, guarded on being unchanged, so a
    /// renewal in between wins) and its time, so apply stays deterministic.
    pub async fn purge_expired(&self) -> Result<usize> {
        let Ok(keyring) = self.keyring() else { return Ok(0) };
        if self.node.metrics().current_leader != Some(self.node.id()) {
            return Ok(0);
        }
        let now = now_ms();
        let reader = self.node.reader().clone();
        let mut doomed: Vec<(Guard, Vec<Op>)> = Vec::new();
        for (key, raw) in reader.scan_prefix(Cf::Tokens, b"t/", MAX_REVOKE)? {
            let info: TokenInfo = decrypt_json(&keyring, &key, &raw)?;
            if info.expired_at(now) {
                let mut ops = vec![
                    Op::Delete { cf: Cf::Tokens, key: key.clone() },
                    Op::Delete { cf: Cf::Tokens, key: token::accessor_key(&info.accessor) },
                ];
                if let Some(p) = &info.parent {
                    ops.push(Op::Delete { cf: Cf::Tokens, key: token::child_key(p, &info.accessor) });
                }
                doomed.push((Guard::unchanged(Cf::Tokens, key, Some(&raw)), ops));
            }
        }
        for (key, raw) in reader.scan_prefix(Cf::Sys, b"auth/approle/secret-id/", MAX_REVOKE)? {
            let info: crate::auth::approle::SecretIdInfo = decrypt_json(&keyring, &key, &raw)?;
            if info.expires_ms.is_some_and(|e| e <= now) {
                doomed
                    .push((Guard::unchanged(Cf::Sys, key.clone(), Some(&raw)), vec![Op::Delete { cf: Cf::Sys, key }]));
            }
        }
        let mut purged = 0;
        for chunk in doomed.chunks(PURGE_BATCH) {
            let guards = chunk.iter().map(|(g, _)| g.clone()).collect();
            let mut ops: Vec<Op> = chunk.iter().flat_map(|(_, o)| o.iter().cloned()).collect();
            let record = serde_json::json!({ "at_ms": now, "records": chunk.len() }).to_string();
            ops.push(Op::Put { cf: Cf::Sys, key: PURGE_KEY.to_vec(), value: record.into_bytes() });
            match self.node.write(Command::Txn { guards, ops }).await?.result {
                CommandResult::Applied => purged += chunk.len(),
                // A record changed (renewed, used) since the scan: the next round decides again.
                _ => debug!("purge batch skipped: a record changed meanwhile"),
            }
        }
        if purged > 0 {
            info!(purged, "purged expired tokens and secret ids");
        }
        Ok(purged)
    }
}
