//! The KV v2 engine: reads, and writes decided on the state they are guarded on (versions,
//! check-and-set, deletes, metadata), proposed as guarded transactions.

use arca_crypto::Keyring;
use arca_raft::{Guard, Op};
use arca_storage::Cf;

use super::*;

/// Most keys a single list returns.
const MAX_LIST: usize = 10_000;
use crate::codec::decrypt_json;
use crate::policy::{Capability, Caps};
use crate::{now_ms, validate_path, validate_prefix, Core, Error, Reply, Result, SecretData, MAX_TXN_ATTEMPTS};

impl Core {
    /// The metadata of `path` and its raw stored bytes (the guard for a later write).
    pub(crate) fn read_meta(&self, keyring: &Keyring, path: &str) -> Result<Option<(SecretMetadata, Vec<u8>)>> {
        let Some(raw) = self.node.reader().get(Cf::Kv, &meta_key(path))? else { return Ok(None) };
        Ok(Some((decrypt_json(keyring, &meta_aad(path), &raw)?, raw)))
    }

    /// The data of one version of `path`, which its metadata says exists.
    pub(crate) fn version_data(&self, keyring: &Keyring, path: &str, version: u64) -> Result<SecretData> {
        let raw = self.node.reader().get(Cf::Kv, &data_key(path, version))?.ok_or_else(|| Error::Corrupt {
            path: path.into(),
            reason: format!("data of version {version} is missing"),
        })?;
        decrypt_json(keyring, &data_aad(path, version), &raw)
    }

    /// Read-decide-propose with a guard on the metadata, retried while other writers win.
    pub(crate) async fn guarded_update<T>(
        &self,
        keyring: &Keyring,
        path: &str,
        mut decide: impl FnMut(Option<SecretMetadata>) -> Result<(SecretMetadata, Vec<Op>, T)>,
    ) -> Result<T> {
        for _ in 0..MAX_TXN_ATTEMPTS {
            let current = self.read_meta(keyring, path)?;
            let raw = current.as_ref().map(|(_, r)| r.clone());
            let (meta, mut ops, out) = decide(current.map(|(m, _)| m))?;
            let sealed_meta = encrypt_json(keyring, &meta_aad(path), &meta)?;
            ops.push(Op::Put { cf: Cf::Kv, key: meta_key(path), value: sealed_meta });
            let guards = vec![Guard::unchanged(Cf::Kv, meta_key(path), raw.as_deref())];
            // Every value written is a fresh ciphertext (random nonce): finding any of them
            // stored proves this transaction applied (it applies whole or not at all).
            let puts: Vec<(Cf, Vec<u8>, Vec<u8>)> = ops
                .iter()
                .filter_map(|op| match op {
                    Op::Put { cf, key, value } => Some((*cf, key.clone(), value.clone())),
                    Op::Delete { .. } => None,
                })
                .collect();
            if self.propose_guarded(guards, ops).await? {
                return Ok(out);
            }
            // A forwarded write whose reply was lost is resent: it applies once and the resend
            // fails its guard. If any value it wrote is stored, this write is the one that landed,
            // even if another writer has since moved the metadata on (found by the kill -9 test:
            // comparing only the metadata wrote such a write a second time, as a new version).
            // Otherwise another writer won: catch up and decide again.
            self.node.read_barrier().await?;
            let reader = self.node.reader();
            let landed = puts.iter().map(|(cf, k, v)| Ok(reader.get(*cf, k)?.as_deref() == Some(v.as_slice())));
            if landed.collect::<Result<Vec<bool>>>()?.into_iter().any(|l| l) {
                return Ok(out);
            }
        }
        Err(Error::Conflict)
    }

    pub(crate) async fn kv_put(
        &self,
        keyring: &Keyring,
        path: &str,
        data: &SecretData,
        cas: Option<u64>,
        caps: Caps,
    ) -> Result<(VersionMetadata, std::collections::BTreeMap<String, String>)> {
        validate_path(path)?;
        let plain = encode_value(data)?;
        let now = now_ms();
        self.guarded_update(keyring, path, |current| {
            // Decided on the metadata this write is guarded on: a secret created or deleted
            // since authorization is judged as it is now.
            let needed = if current.is_some() { Capability::Update } else { Capability::Create };
            if !caps.has(needed) {
                return Err(Error::PermissionDenied(format!(
                    "secret/data/{path} requires '{needed}', which this token lacks"
                )));
            }
            require_cas(current.as_ref(), cas)?;
            let mut meta = current.unwrap_or_else(|| SecretMetadata::new(path, now));
            let (ops, version) = new_version(keyring, path, &mut meta, &plain, cas, now)?;
            let labels = meta.custom_metadata.clone();
            Ok((meta, ops, (version, labels)))
        })
        .await
    }

    /// Merges `set` and `remove` into the current version and writes the result as a new
    /// version, guarded on the metadata it read: a concurrent write makes it decide again.
    pub(crate) async fn kv_patch(
        &self,
        keyring: &Keyring,
        path: &str,
        set: &SecretData,
        remove: &[String],
        cas: Option<u64>,
    ) -> Result<(VersionMetadata, std::collections::BTreeMap<String, String>)> {
        validate_path(path)?;
        let now = now_ms();
        self.guarded_update(keyring, path, |current| {
            let mut meta = current.ok_or_else(|| not_found(path))?;
            require_cas(Some(&meta), cas)?;
            let base = meta.readable(None)?.version;
            let mut data = self.version_data(keyring, path, base)?;
            for k in remove {
                data.0.remove(k);
            }
            data.0.extend(set.0.iter().map(|(k, v)| (k.clone(), v.clone())));
            let plain = encode_value(&data)?;
            // Without a CAS of the caller's, the patch is still based on exactly `base`.
            let (ops, version) = new_version(keyring, path, &mut meta, &plain, Some(cas.unwrap_or(base)), now)?;
            let labels = meta.custom_metadata.clone();
            Ok((meta, ops, (version, labels)))
        })
        .await
    }

    pub(crate) fn kv_get(&self, keyring: &Keyring, path: &str, version: Option<u64>) -> Result<Reply> {
        validate_path(path)?;
        let (meta, _) = self.read_meta(keyring, path)?.ok_or_else(|| not_found(path))?;
        let v = meta.readable(version)?.clone();
        let data = self.version_data(keyring, path, v.version)?;
        Ok(Reply::KvSecret { data, version: v, custom_metadata: meta.custom_metadata })
    }

    pub(crate) fn kv_list(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let scan = self.node.reader().scan_prefix(Cf::Kv, &meta_key(prefix), MAX_LIST)?;
        let paths: Vec<String> = scan.into_iter().map(|(k, _)| String::from_utf8_lossy(&k[2..]).into_owned()).collect();
        let keys = children(prefix, paths.iter().map(String::as_str));
        if keys.is_empty() {
            return Err(Error::NotFound(format!("no secrets under {prefix:?}")));
        }
        Ok(keys)
    }

    pub(crate) async fn kv_versions(
        &self,
        keyring: &Keyring,
        path: &str,
        versions: &[u64],
        change: VersionChange,
    ) -> Result<SecretMetadata> {
        validate_path(path)?;
        let now = now_ms();
        self.guarded_update(keyring, path, |current| {
            let mut meta = current.ok_or_else(|| not_found(path))?;
            let mut ops = Vec::new();
            for v in meta.targets(versions)? {
                let entry = meta.versions.get_mut(&v).expect("targets exist");
                match change {
                    VersionChange::Delete => entry.deleted_ms = Some(entry.deleted_ms.map_or(now, |d| d.min(now))),
                    VersionChange::Undelete => entry.deleted_ms = None,
                    VersionChange::Destroy => {
                        entry.destroyed = true;
                        ops.push(Op::Delete { cf: Cf::Kv, key: data_key(path, v) });
                    }
                }
            }
            meta.updated_ms = now;
            Ok((meta.clone(), ops, meta))
        })
        .await
    }

    /// Deletes every version's data and the metadata, in one guarded write.
    pub(crate) async fn kv_delete_all(&self, keyring: &Keyring, path: &str) -> Result<()> {
        validate_path(path)?;
        let meta_key = meta_key(path);
        for _ in 0..MAX_TXN_ATTEMPTS {
            let Some((meta, raw)) = self.read_meta(keyring, path)? else { return Err(not_found(path)) };
            let mut ops: Vec<Op> =
                meta.versions.keys().map(|v| Op::Delete { cf: Cf::Kv, key: data_key(path, *v) }).collect();
            ops.push(Op::Delete { cf: Cf::Kv, key: meta_key.clone() });
            let guards = vec![Guard::unchanged(Cf::Kv, meta_key.clone(), Some(&raw))];
            if self.propose_guarded(guards, ops).await? {
                return Ok(());
            }
            // Lost a race, or a resend of this very delete found it done: gone is gone.
            self.node.read_barrier().await?;
            if self.node.reader().get(Cf::Kv, &meta_key)?.is_none() {
                return Ok(());
            }
        }
        Err(Error::Conflict)
    }

    pub(crate) async fn kv_set_metadata(
        &self,
        keyring: &Keyring,
        path: &str,
        settings: &crate::kv::MetadataSettings,
    ) -> Result<SecretMetadata> {
        validate_path(path)?;
        let now = now_ms();
        self.guarded_update(keyring, path, |current| {
            let mut meta = current.unwrap_or_else(|| SecretMetadata::new(path, now));
            settings.apply(&mut meta)?;
            meta.updated_ms = now;
            let ops = meta.prune().into_iter().map(|v| Op::Delete { cf: Cf::Kv, key: data_key(path, v) }).collect();
            Ok((meta.clone(), ops, meta))
        })
        .await
    }
}

#[derive(Clone, Copy)]
pub(crate) enum VersionChange {
    Delete,
    Undelete,
    Destroy,
}

pub(crate) fn not_found(path: &str) -> Error {
    Error::NotFound(format!("no secret at {path}"))
}
