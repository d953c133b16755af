//! Rotation as configured: the `sys/rotation` operations (set, disable, rotate now, status,
//! functions) and the configuration and state records the leader's engine runs from.

use arca_crypto::Keyring;
use arca_raft::{Command, CommandResult, Guard, Op};
use arca_storage::Cf;

use super::*;
use crate::codec::{decrypt_json, encrypt_json};
use crate::{validate_path, Core, Error, Result};

impl Core {
    pub(super) fn rotation_config(&self, keyring: &Keyring, path: &str) -> Result<Option<RotationConfig>> {
        let key = config_key(path);
        self.node.reader().get(Cf::Sys, &key)?.map(|raw| decrypt_json(keyring, &key, &raw)).transpose()
    }

    /// The state and its raw bytes (the guard of the next step's commit).
    pub(super) fn rotation_state(&self, keyring: &Keyring, path: &str) -> Result<(RotationState, Option<Vec<u8>>)> {
        let key = state_key(path);
        match self.node.reader().get(Cf::Sys, &key)? {
            Some(raw) => Ok((decrypt_json(keyring, &key, &raw)?, Some(raw))),
            None => Ok((RotationState::default(), None)),
        }
    }

    pub(super) fn put_state(&self, keyring: &Keyring, path: &str, state: &RotationState) -> Result<Op> {
        let key = state_key(path);
        Ok(Op::Put { cf: Cf::Sys, value: encrypt_json(keyring, &key, state)?, key })
    }

    /// Commits `ops` if the state is still `raw` (and the metadata still `meta_raw`, when given).
    pub(super) async fn commit_guarded(
        &self,
        path: &str,
        raw: Option<&[u8]>,
        meta_raw: Option<Option<&[u8]>>,
        ops: Vec<Op>,
    ) -> Result<bool> {
        let mut guards = vec![Guard::unchanged(Cf::Sys, state_key(path), raw)];
        if let Some(m) = meta_raw {
            guards.push(Guard::unchanged(Cf::Kv, kv::meta_key(path), m));
        }
        Ok(self.node.write(Command::Txn { guards, ops }).await?.result == CommandResult::Applied)
    }

    /// Stores a rotation config. `configured_by`: the accessor of the caller, whose grants on
    /// everything the rotation touches were checked by `authorize`.
    pub(crate) async fn rotation_set(
        &self,
        keyring: &Keyring,
        mut config: RotationConfig,
        configured_by: &str,
    ) -> Result<()> {
        validate_path(&config.path)?;
        config.schedule.validate()?;
        config.configured_by = configured_by.to_string();
        if config.max_attempts == 0 || config.max_attempts > 100 {
            return Err(Error::InvalidArgument("max_attempts must be 1 to 100".into()));
        }
        if !(100..=MAX_BACKOFF_MS).contains(&config.backoff_ms) {
            return Err(Error::InvalidArgument("backoff must be 100ms to 1h".into()));
        }
        self.validate_rotator(keyring, &config)?;
        let path = config.path.clone();
        let (mut state, raw) = self.rotation_state(keyring, &path)?;
        if state.step == Step::Idle {
            state.next_run_ms = config.schedule.next_after(now_ms(), config.window.as_ref());
        }
        let sealed = encrypt_json(keyring, &config_key(&path), &config)?;
        let ops = vec![
            Op::Put { cf: Cf::Sys, value: sealed.clone(), key: config_key(&path) },
            self.put_state(keyring, &path, &state)?,
        ];
        if !self.commit_guarded(&path, raw.as_deref(), None, ops).await? {
            // A forward resent after a lost reply fails its guard when its first copy applied;
            // the stored configuration is then exactly ours (a fresh nonce).
            if !self.landed(Cf::Sys, &config_key(&path), &sealed).await? {
                return Err(Error::Conflict);
            }
        }
        Ok(())
    }

    pub(super) fn validate_rotator(&self, keyring: &Keyring, config: &RotationConfig) -> Result<()> {
        let view = super::engine::View { core: self, keyring };
        super::rotator::rotator(config.rotator).validate(&config.params, &self.rotation_settings, &view)
    }

    /// Updates a secret's state through `change`, guarded; for operator actions.
    pub(super) async fn change_rotation(
        &self,
        keyring: &Keyring,
        path: &str,
        change: impl Fn(&mut RotationConfig, &mut RotationState),
    ) -> Result<()> {
        validate_path(path)?;
        for _ in 0..crate::MAX_TXN_ATTEMPTS {
            let mut config = self
                .rotation_config(keyring, path)?
                .ok_or_else(|| Error::NotFound(format!("{path} has no rotation configured")))?;
            let (mut state, raw) = self.rotation_state(keyring, path)?;
            change(&mut config, &mut state);
            let ops = vec![
                Op::Put {
                    cf: Cf::Sys,
                    value: encrypt_json(keyring, &config_key(path), &config)?,
                    key: config_key(path),
                },
                self.put_state(keyring, path, &state)?,
            ];
            if self.commit_guarded(path, raw.as_deref(), None, ops).await? {
                return Ok(());
            }
            self.node.read_barrier().await?;
        }
        Err(Error::Conflict)
    }

    pub(crate) async fn rotation_disable(&self, keyring: &Keyring, path: &str) -> Result<()> {
        self.change_rotation(keyring, path, |c, _| c.enabled = false).await
    }

    /// Due now: the leader starts it within a tick (a rotation already under way goes on).
    pub(crate) async fn rotation_now(&self, keyring: &Keyring, path: &str) -> Result<()> {
        self.change_rotation(keyring, path, |c, s| {
            c.enabled = true;
            if s.step == Step::Idle {
                s.next_run_ms = now_ms();
                s.retry_at_ms = None;
            }
        })
        .await
    }

    pub(crate) fn rotation_statuses(&self, keyring: &Keyring, path: Option<&str>) -> Result<Vec<RotationStatus>> {
        let paths: Vec<String> = match path {
            Some(p) => {
                validate_path(p)?;
                vec![p.to_string()]
            }
            None => self.rotation_paths()?,
        };
        let mut out = Vec::new();
        for p in paths {
            let Some(config) = self.rotation_config(keyring, &p)? else {
                return Err(Error::NotFound(format!("{p} has no rotation configured")));
            };
            out.push(RotationStatus { config, state: self.rotation_state(keyring, &p)?.0 });
        }
        Ok(out)
    }

    pub(super) fn rotation_paths(&self) -> Result<Vec<String>> {
        let scan = self.node.reader().scan_prefix(Cf::Sys, CONFIG_PREFIX.as_bytes(), 100_000)?;
        Ok(scan.into_iter().map(|(k, _)| String::from_utf8_lossy(&k[CONFIG_PREFIX.len()..]).into_owned()).collect())
    }

    pub(crate) async fn register_function(&self, name: &str, sha256: &str) -> Result<()> {
        command::valid_name(name)?;
        let function = command::Function { sha256: command::valid_sha256(sha256)? };
        let value = serde_json::to_vec(&function).map_err(|e| Error::Internal(e.to_string()))?;
        let ops = vec![Op::Put { cf: Cf::Sys, key: function_key(name), value }];
        self.node.write(Command::Txn { guards: vec![], ops }).await?;
        info!(function = name, "rotation function registered");
        Ok(())
    }

    pub(crate) fn list_functions(&self) -> Result<Vec<(String, String)>> {
        let prefix = command::FUNCTION_PREFIX.as_bytes();
        let mut out = Vec::new();
        for (k, v) in self.node.reader().scan_prefix(Cf::Sys, prefix, 10_000)? {
            let f: command::Function = serde_json::from_slice(&v).map_err(|e| Error::Corrupt {
                path: String::from_utf8_lossy(&k).into_owned(),
                reason: e.to_string(),
            })?;
            out.push((String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), f.sha256));
        }
        Ok(out)
    }
}
