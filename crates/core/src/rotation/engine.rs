//! The rotation engine, driven by the leader: due runs, and each run as committed steps
//! (`Step`), so a new leader resumes a run where the old one left.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arca_crypto::Keyring;
use arca_raft::Op;
use arca_storage::Cf;
use tracing::{info, instrument, warn};

use super::rotator::{rotator, RotatorStep, StepInput, VaultView};
use super::*;
use crate::audit::{AuditCaller, AuditRecord};
use crate::kv::{self, kv_data_op, kv_meta_op, SecretMetadata};
use crate::{now_ms, Core, Error, Result, SecretData};

/// What one engine pass found to do for a secret.
enum Outcome {
    /// Nothing due.
    Idle,
    /// A step committed; the next one can run right away.
    Advanced,
    /// The state moved under us (another leader, an operator): look again next tick.
    Raced,
}

impl Core {
    /// Starts a run of every rotation not already running on this node (each as its own task,
    /// stopped if the node seals: its steps are committed, so the next unsealed leader resumes).
    pub(crate) fn start_due_rotations(&self, running: &Arc<Mutex<HashSet<String>>>) -> Result<()> {
        // Subscribed before the keys are taken: a seal from here on stops the work below,
        // which drops its keys with it.
        let sealed = self.seal_epoch.subscribe();
        let keyring = self.keyring()?;
        for path in self.rotation_paths()? {
            if !running.lock().expect("rotation set").insert(path.clone()) {
                continue;
            }
            let (core, keyring, running, sealed) = (self.clone(), keyring.clone(), running.clone(), sealed.clone());
            tokio::spawn(async move {
                if crate::seal::until_sealed(sealed, core.drive(&keyring, &path)).await.is_none() {
                    info!(path = %path, "rotation stopped: the node sealed");
                }
                drop(keyring);
                running.lock().expect("rotation set").remove(&path);
            });
        }
        Ok(())
    }

    /// Advances one secret's rotation as far as it can go now.
    async fn drive(&self, keyring: &Keyring, path: &str) {
        // Bounded: a rotation has four steps; a few more passes absorb races.
        for _ in 0..8 {
            if self.node.current_leader() != Some(self.node.id()) {
                return;
            }
            match self.advance(keyring, path).await {
                Ok(Outcome::Advanced) => continue,
                Ok(Outcome::Idle | Outcome::Raced) => return,
                Err(e) => {
                    warn!(path, error = %e, "rotation engine could not read or commit; retrying next tick");
                    return;
                }
            }
        }
    }

    /// Runs the next step of `path`'s rotation if one is due, and commits its result.
    #[instrument(level = "info", skip(self, keyring), fields(node = self.node.id()))]
    async fn advance(&self, keyring: &Keyring, path: &str) -> Result<Outcome> {
        let Some(config) = self.rotation_config(keyring, path)? else { return Ok(Outcome::Idle) };
        let (state, raw) = self.rotation_state(keyring, path)?;
        let now = now_ms();
        let due = match state.step {
            Step::Idle => config.enabled && now >= state.next_run_ms,
            _ => true,
        } && state.retry_at_ms.is_none_or(|t| now >= t);
        if !due {
            return Ok(Outcome::Idle);
        }
        let step = state.step.next().name();
        // Authority is checked when a run starts. A run already past `create` finishes: stopping
        // it between `set` and `finish` would leave the target on a value no version holds.
        let authority = if state.step == Step::Idle { self.rotation_authority(keyring, &config) } else { Ok(()) };
        let result = match authority {
            Ok(()) => self.run_step(keyring, &config, &state, raw.as_deref()).await,
            Err(e) => Err(e),
        };
        let (outcome, error) = match &result {
            Ok(_) => ("ok", String::new()),
            Err(e) => (crate::audit::outcome(e), e.to_string()),
        };
        self.audit_rotation_step(keyring, path, step, &state, outcome, &error).await;
        match result {
            Ok(committed) => Ok(if committed { Outcome::Advanced } else { Outcome::Raced }),
            Err(e) => self.record_failure(keyring, &config, state, raw, e).await,
        }
    }

    /// Invariant 7 at run time: the token that configured the rotation still exists and still
    /// holds every grant the rotation needs. Otherwise the step fails (and is retried, then the
    /// run is marked failed), with a status that says what to do.
    fn rotation_authority(&self, keyring: &Keyring, config: &RotationConfig) -> Result<()> {
        let accessor = &config.configured_by;
        if accessor.is_empty() {
            return Err(Error::Rotation(
                "this rotation was configured before Arca recorded who configured rotations; set it again \
                 ('arca rotation set') with a token that may read and update the secret"
                    .into(),
            ));
        }
        let info = self.token_by_accessor(keyring, accessor)?.ok_or_else(|| {
            Error::Rotation(format!(
                "the token that configured this rotation (accessor {accessor}) has expired or been revoked; \
                 set the rotation again with a current token"
            ))
        })?;
        match self.missing_grant(&info.policies, &grants_needed(config)) {
            None => Ok(()),
            Some((path, cap)) => Err(Error::Rotation(format!(
                "the token that configured this rotation (accessor {accessor}) no longer has {cap} on {path}; \
                 grant it again or set the rotation again with a token that has it"
            ))),
        }
    }

    /// Runs one step against the target and commits it. `Ok(false)`: the commit lost a race.
    async fn run_step(
        &self,
        keyring: &Keyring,
        config: &RotationConfig,
        state: &RotationState,
        raw: Option<&[u8]>,
    ) -> Result<bool> {
        let path = &config.path;
        let meta = self.read_meta(keyring, path)?;
        let current = match &meta {
            Some((m, _)) if m.current_version != 0 => self.version_data(keyring, path, m.current_version).ok(),
            _ => None,
        };
        match state.step {
            Step::Idle => {
                let pending = self.rotator_call(keyring, config, RotatorStep::Create, None, current.as_ref()).await?;
                let pending = match pending {
                    Some(v) => v,
                    None => random::create(&config.params, current.as_ref())?,
                };
                let now = now_ms();
                let meta_raw = meta.as_ref().map(|(_, r)| r.clone());
                let mut m = meta.map(|(m, _)| m).unwrap_or_else(|| SecretMetadata::new(path, now));
                let (version, pruned) = m.add_pending(now);
                let plain =
                    zeroize::Zeroizing::new(serde_json::to_vec(&pending).map_err(|e| Error::Internal(e.to_string()))?);
                let mut ops = vec![kv_data_op(keyring, path, version.version, &plain)?];
                ops.extend(pruned.into_iter().map(|v| Op::Delete { cf: Cf::Kv, key: kv::data_key(path, v) }));
                ops.push(kv_meta_op(keyring, path, &m)?);
                let next = RotationState {
                    rotation_id: crate::token::random_id(8)?,
                    step: Step::Created,
                    pending_version: Some(version.version),
                    last_started_ms: Some(now),
                    retry_at_ms: None,
                    attempts: 0,
                    failed: false,
                    last_error: String::new(),
                    ..state.clone()
                };
                ops.push(self.put_state(keyring, path, &next)?);
                let ok = self.commit_guarded(path, raw, Some(meta_raw.as_deref()), ops).await?;
                if ok {
                    info!(path, version = version.version, rotation = %next.rotation_id, "rotation: pending version created");
                }
                Ok(ok)
            }
            Step::Created | Step::Set | Step::Tested => {
                let version = state
                    .pending_version
                    .ok_or_else(|| Error::Internal("rotation state lost its pending version".into()))?;
                let pending = self.version_data(keyring, path, version)?;
                self.rotator_call(keyring, config, state.step.next(), Some(&pending), current.as_ref()).await?;
                let mut next = RotationState { retry_at_ms: None, ..state.clone() };
                let mut ops = Vec::new();
                let mut meta_guard = None;
                match state.step {
                    Step::Created => next.step = Step::Set,
                    Step::Set => next.step = Step::Tested,
                    _ => {
                        let (mut m, meta_raw) = meta.ok_or_else(|| Error::NotFound(format!("no secret at {path}")))?;
                        let now = now_ms();
                        if m.pending_version == Some(version) {
                            m.promote_pending(now)?;
                        }
                        ops.push(kv_meta_op(keyring, path, &m)?);
                        meta_guard = Some(meta_raw);
                        next = RotationState {
                            step: Step::Idle,
                            pending_version: None,
                            attempts: 0,
                            retry_at_ms: None,
                            failed: false,
                            last_error: String::new(),
                            last_finished_ms: Some(now),
                            rotations: state.rotations + 1,
                            next_run_ms: config.schedule.next_after(now, config.window.as_ref()),
                            ..state.clone()
                        };
                    }
                }
                ops.push(self.put_state(keyring, path, &next)?);
                let ok = self.commit_guarded(path, raw, meta_guard.as_ref().map(|m| Some(m.as_slice())), ops).await?;
                if ok {
                    info!(path, step = state.step.next().name(), rotation = %state.rotation_id, "rotation step committed");
                    if next.rotations > state.rotations {
                        self.metrics.rotation_run("finished");
                    }
                }
                Ok(ok)
            }
        }
    }

    /// After a failed step: retry later with backoff, or give up after `max_attempts` (the
    /// pending version is destroyed; `current` was never touched).
    async fn record_failure(
        &self,
        keyring: &Keyring,
        config: &RotationConfig,
        state: RotationState,
        raw: Option<Vec<u8>>,
        error: Error,
    ) -> Result<Outcome> {
        let path = &config.path;
        let now = now_ms();
        // A rotation that starts after an earlier one gave up counts its own attempts.
        let earlier = if state.step == Step::Idle && state.failed { 0 } else { state.attempts };
        let attempts = earlier + 1;
        warn!(path, attempts, error = %error, "rotation step failed");
        self.metrics.rotation_step_failed();
        let mut next = RotationState { attempts, failed: false, last_error: error.to_string(), ..state.clone() };
        let mut ops = Vec::new();
        let mut meta_guard = None;
        if attempts >= config.max_attempts {
            if let (Some(v), Some((mut m, meta_raw))) = (state.pending_version, self.read_meta(keyring, path)?) {
                if m.pending_version == Some(v) {
                    m.pending_version = None;
                    if let Some(entry) = m.versions.get_mut(&v) {
                        entry.destroyed = true;
                    }
                    ops.push(Op::Delete { cf: Cf::Kv, key: kv::data_key(path, v) });
                    ops.push(kv_meta_op(keyring, path, &m)?);
                    meta_guard = Some(meta_raw);
                }
            }
            next.step = Step::Idle;
            next.pending_version = None;
            next.retry_at_ms = None;
            next.failed = true;
            next.last_finished_ms = Some(now);
            next.next_run_ms = config.schedule.next_after(now, config.window.as_ref());
            warn!(path, attempts, "rotation failed; current is unchanged; the next schedule tries again");
            self.metrics.rotation_run("failed");
        } else {
            let backoff = config.backoff_ms.saturating_mul(1 << (attempts - 1).min(20)).min(MAX_BACKOFF_MS);
            next.retry_at_ms = Some(now + backoff as i64);
        }
        ops.push(self.put_state(keyring, path, &next)?);
        self.commit_guarded(path, raw.as_deref(), meta_guard.as_ref().map(|m| Some(m.as_slice())), ops).await?;
        Ok(Outcome::Raced)
    }

    /// Calls the rotator for `step`. `create` may return the new value.
    async fn rotator_call(
        &self,
        keyring: &Keyring,
        config: &RotationConfig,
        step: RotatorStep,
        pending: Option<&SecretData>,
        current: Option<&SecretData>,
    ) -> Result<Option<SecretData>> {
        let view = View { core: self, keyring };
        let input = StepInput {
            path: &config.path,
            params: &config.params,
            pending,
            current,
            settings: &self.rotation_settings,
            vault: &view,
        };
        rotator(config.rotator).step(step, input).await
    }

    fn current_data(&self, keyring: &Keyring, path: &str) -> Result<SecretData> {
        let (meta, _) = self.read_meta(keyring, path)?.ok_or_else(|| crate::kv::engine::not_found(path))?;
        let v = meta.readable(None)?.version;
        self.version_data(keyring, path, v)
    }

    /// Each rotation step lands in the audit trail like a request, by the leader node.
    async fn audit_rotation_step(
        &self,
        keyring: &Keyring,
        path: &str,
        step: &str,
        state: &RotationState,
        outcome: &str,
        error: &str,
    ) {
        let record = AuditRecord {
            time_ms: now_ms(),
            request_id: crate::audit::request_id(),
            node: self.node.id(),
            operation: format!("RotationStep.{step}"),
            path: format!("sys/rotation/rotate/{path}"),
            caller: AuditCaller {
                auth_method: "internal".into(),
                identity: format!("node/{}/rotation/{}", self.node.id(), state.rotation_id),
                ..Default::default()
            },
            decision: "none".into(),
            outcome: outcome.into(),
            error: error.into(),
            ..Default::default()
        };
        match record.seal(keyring) {
            Ok(sealed) => {
                if let Err(e) = self.batcher.commit(sealed, std::time::Instant::now()).await {
                    warn!(path, error = %e, "a rotation step's audit record was not committed");
                }
            }
            Err(e) => warn!(error = %e, "cannot seal a rotation audit record"),
        }
    }
}

/// What a rotator may read: the vault's current state, as the engine sees it.
pub(super) struct View<'a> {
    pub core: &'a Core,
    pub keyring: &'a Keyring,
}

impl VaultView for View<'_> {
    fn secret(&self, path: &str) -> Result<SecretData> {
        self.core.current_data(self.keyring, path)
    }

    fn function(&self, name: &str) -> Result<Option<command::Function>> {
        match self.core.node.reader().get(Cf::Sys, &function_key(name))? {
            Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(|e| Error::Internal(e.to_string())),
            None => Ok(None),
        }
    }
}
