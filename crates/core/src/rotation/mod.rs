//! Automatic rotation of secrets, driven by the leader.
//!
//! A secret with a rotation config is rotated on its schedule in four steps:
//! `create` (a new value stored as a version labelled `pending`), `set` (applied to the target
//! system), `test` (the new credential proven to work there) and `finish` (`current` moves to
//! it, the old one becomes `previous`). Only the leader runs rotations. Each step's completion
//! is a committed command (the rotation's state, guarded on the state it read), so a new
//! leader resumes an interrupted rotation from the last committed step with the same pending
//! value, and never creates a second pending version: every step is idempotent on its target.
//!
//! A failed step is retried with exponential backoff; after `max_attempts` the rotation is
//! marked failed (visible in status and the audit trail), the pending version is destroyed,
//! `current` is left untouched, and the next scheduled run starts afresh.
//!
//! Configs and states live in the `sys` family, barrier-encrypted:
//! `rotation/config/<path>` and `rotation/state/<path>`.

mod command;
mod postgres;
mod random;
mod webhook;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arca_crypto::Keyring;
use arca_raft::{Command, CommandResult, Guard, Op};
use arca_storage::Cf;
use serde::{Deserialize, Serialize};
use tracing::{info, instrument, warn};

use crate::audit::{AuditCaller, AuditRecord};
use crate::codec::{decrypt_json, encrypt_json};
use crate::kv::{self, SecretMetadata};
use crate::policy::Capability;
use crate::vault::{kv_data_op, kv_meta_op};
use crate::{now_ms, validate_path, Core, Error, Result, SecretData};

const CONFIG_PREFIX: &str = "rotation/config/";
const STATE_PREFIX: &str = "rotation/state/";
/// How often the leader looks for due rotations.
const TICK: Duration = Duration::from_millis(200);
/// Longest wait between retries, whatever the backoff doubles to.
const MAX_BACKOFF_MS: u64 = 3_600_000;
/// Default timeout of one `command` or `webhook` call.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a node's config file says about rotation (never settable through the API).
#[derive(Debug, Clone, Default)]
pub struct RotationSettings {
    /// Where `command` rotator executables live.
    pub functions_dir: Option<PathBuf>,
    /// URLs `webhook` rotators may call: exact, or a prefix ending in `*`.
    pub webhook_allow: Vec<String>,
    /// PEM bundle webhook endpoints' certificates must chain to.
    pub webhook_ca_file: Option<PathBuf>,
    /// PostgreSQL servers (`host:port`, or `host` for port 5432) the `postgres` rotator may
    /// connect to. Empty: none.
    pub postgres_allow: Vec<String>,
}

impl RotationSettings {
    /// Checks the allow-lists when the node starts: an entry that cannot match what its
    /// writer meant is an error, not a silent refusal later.
    pub fn check(&self) -> Result<()> {
        for entry in &self.webhook_allow {
            webhook::AllowEntry::parse(entry)?;
        }
        for entry in &self.postgres_allow {
            postgres::HostPort::parse(entry)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RotatorKind {
    Random,
    Postgres,
    Command,
    Webhook,
}

impl std::str::FromStr for RotatorKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "random" => Ok(RotatorKind::Random),
            "postgres" => Ok(RotatorKind::Postgres),
            "command" => Ok(RotatorKind::Command),
            "webhook" => Ok(RotatorKind::Webhook),
            other => Err(Error::InvalidArgument(format!(
                "unknown rotator {other:?}: use random, postgres, command or webhook"
            ))),
        }
    }
}

/// When rotations happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// A fixed interval after the previous rotation finished.
    Every { ms: u64 },
    /// A cron expression (seconds first: `0 0 3 * * *` is 03:00 UTC daily).
    Cron { expr: String },
}

impl Schedule {
    fn validate(&self) -> Result<()> {
        match self {
            Schedule::Every { ms } if *ms < 1000 => {
                Err(Error::InvalidArgument("the rotation interval must be at least 1s".into()))
            }
            Schedule::Every { ms } if *ms > MAX_INTERVAL_MS => {
                Err(Error::InvalidArgument("the rotation interval must be at most 100 years".into()))
            }
            Schedule::Every { .. } => Ok(()),
            Schedule::Cron { expr } => cron_schedule(expr).map(|_| ()),
        }
    }

    /// The first run time after `now_ms` (inside `window`, if one is set).
    fn next_after(&self, now_ms: i64, window: Option<&Window>) -> i64 {
        let candidate = match self {
            Schedule::Every { ms } => now_ms.saturating_add(i64::try_from(*ms).unwrap_or(i64::MAX)),
            Schedule::Cron { expr } => cron_schedule(expr)
                .ok()
                .and_then(|s| s.after(&utc(now_ms)).next())
                .map_or(i64::MAX, |t| t.timestamp_millis()),
        };
        window.map_or(candidate, |w| w.next_open(candidate))
    }
}

fn cron_schedule(expr: &str) -> Result<cron::Schedule> {
    expr.parse::<cron::Schedule>().map_err(|e| {
        Error::InvalidArgument(format!(
            "cron expression {expr:?} is invalid ({e}); it has seconds first: '0 0 3 * * *'"
        ))
    })
}

fn utc(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A daily window (UTC minutes of the day) outside which scheduled rotations do not start.
/// `start > end` wraps midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start_min: u16,
    pub end_min: u16,
}

impl Window {
    /// Parses `HH:MM-HH:MM` (UTC).
    pub fn parse(s: &str) -> Result<Window> {
        let bad = || Error::InvalidArgument(format!("window {s:?} is not HH:MM-HH:MM (UTC)"));
        let minutes = |t: &str| -> Result<u16> {
            let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            Ok(h * 60 + m)
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let w = Window { start_min: minutes(a)?, end_min: minutes(b)? };
        if w.start_min == w.end_min {
            return Err(Error::InvalidArgument("the window is empty: start and end are equal".into()));
        }
        Ok(w)
    }

    fn contains(&self, ms: i64) -> bool {
        let minute = (ms.rem_euclid(86_400_000) / 60_000) as u16;
        if self.start_min < self.end_min {
            (self.start_min..self.end_min).contains(&minute)
        } else {
            minute >= self.start_min || minute < self.end_min
        }
    }

    /// `ms` if inside the window, else the window's next opening.
    fn next_open(&self, ms: i64) -> i64 {
        if self.contains(ms) {
            return ms;
        }
        let day = ms - ms.rem_euclid(86_400_000);
        let open = day + self.start_min as i64 * 60_000;
        if open > ms {
            open
        } else {
            open + 86_400_000
        }
    }
}

/// A secret's rotation, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationConfig {
    /// The KV path of the rotated secret.
    pub path: String,
    pub rotator: RotatorKind,
    /// The rotator's parameters. Not secret: credentials are referenced by KV path.
    pub params: BTreeMap<String, String>,
    pub schedule: Schedule,
    pub window: Option<Window>,
    /// Attempts of one rotation before it is marked failed.
    pub max_attempts: u32,
    /// The first retry's delay; each further retry doubles it.
    pub backoff_ms: u64,
    pub enabled: bool,
    /// The accessor of the token that configured the rotation (set by the vault, never by the
    /// caller). Every run acts with that token's grants: when it expires, is revoked or loses
    /// a grant the rotation needs, runs fail until the rotation is set again.
    #[serde(default)]
    pub configured_by: String,
}

/// The longest interval a schedule may have (100 years): later times overflow nothing.
const MAX_INTERVAL_MS: u64 = 100 * 366 * 86_400_000;

/// What a rotation of `config` reads and writes, as `(logical path, capabilities)`: the target
/// secret (read and update: the rotator sees the current value and writes a new one) and every
/// other secret a rotator reads (read). Invariant 7: whoever configures a rotation, and the
/// token it later runs with, must hold all of them.
pub(crate) fn grants_needed(config: &RotationConfig) -> Vec<(String, &'static [Capability])> {
    let mut needs = target_grants(&config.path);
    let reads = match config.rotator {
        RotatorKind::Postgres => config.params.get("admin"),
        RotatorKind::Webhook => config.params.get("signing_key"),
        RotatorKind::Random | RotatorKind::Command => None,
    };
    needs.extend(reads.map(|p| (format!("secret/data/{p}"), &[Capability::Read][..])));
    needs
}

/// Changing or starting a secret's rotation acts on the secret itself.
pub(crate) fn target_grants(path: &str) -> Vec<(String, &'static [Capability])> {
    vec![(format!("secret/data/{path}"), &[Capability::Read, Capability::Update][..])]
}

/// The last step a rotation committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// No rotation in progress.
    #[default]
    Idle,
    Created,
    Set,
    Tested,
}

impl Step {
    /// The step that runs next from here.
    fn next_name(self) -> &'static str {
        match self {
            Step::Idle => "create",
            Step::Created => "set",
            Step::Set => "test",
            Step::Tested => "finish",
        }
    }
}

/// A secret's rotation progress, replicated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationState {
    /// The rotation in progress, or the last one.
    pub rotation_id: String,
    pub step: Step,
    pub pending_version: Option<u64>,
    /// Failed attempts of the rotation in progress (of the last one, once it failed).
    pub attempts: u32,
    pub retry_at_ms: Option<i64>,
    pub next_run_ms: i64,
    pub last_started_ms: Option<i64>,
    pub last_finished_ms: Option<i64>,
    pub last_error: String,
    /// The last rotation gave up after `max_attempts`.
    pub failed: bool,
    /// Rotations that finished.
    pub rotations: u64,
}

/// A secret's rotation config and state, for `arca rotation status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationStatus {
    pub config: RotationConfig,
    pub state: RotationState,
}

fn config_key(path: &str) -> Vec<u8> {
    format!("{CONFIG_PREFIX}{path}").into_bytes()
}

fn state_key(path: &str) -> Vec<u8> {
    format!("{STATE_PREFIX}{path}").into_bytes()
}

fn function_key(name: &str) -> Vec<u8> {
    format!("{}{name}", command::FUNCTION_PREFIX).into_bytes()
}

fn duration_param(params: &BTreeMap<String, String>, name: &str, default: Duration) -> Result<Duration> {
    match params.get(name) {
        None => Ok(default),
        Some(v) => {
            let secs = v.trim_end_matches('s');
            secs.parse::<u64>()
                .ok()
                .filter(|s| (1..=600).contains(s))
                .map(Duration::from_secs)
                .ok_or_else(|| Error::InvalidArgument(format!("{name} {v:?} must be 1s to 600s")))
        }
    }
}

fn value_of(output: &serde_json::Value) -> Result<Option<SecretData>> {
    match output.get("value") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_json::from_value::<BTreeMap<String, String>>(v.clone())
            .map(|m| Some(SecretData(m)))
            .map_err(|_| Error::Rotation("the rotator's 'value' must be an object of strings".into())),
    }
}

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
    fn rotation_config(&self, keyring: &Keyring, path: &str) -> Result<Option<RotationConfig>> {
        let key = config_key(path);
        self.node.reader().get(Cf::Sys, &key)?.map(|raw| decrypt_json(keyring, &key, &raw)).transpose()
    }

    /// The state and its raw bytes (the guard of the next step's commit).
    fn rotation_state(&self, keyring: &Keyring, path: &str) -> Result<(RotationState, Option<Vec<u8>>)> {
        let key = state_key(path);
        match self.node.reader().get(Cf::Sys, &key)? {
            Some(raw) => Ok((decrypt_json(keyring, &key, &raw)?, Some(raw))),
            None => Ok((RotationState::default(), None)),
        }
    }

    fn put_state(&self, keyring: &Keyring, path: &str, state: &RotationState) -> Result<Op> {
        let key = state_key(path);
        Ok(Op::Put { cf: Cf::Sys, value: encrypt_json(keyring, &key, state)?, key })
    }

    /// Commits `ops` if the state is still `raw` (and the metadata still `meta_raw`, when given).
    async fn commit_guarded(
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
        self.validate_rotator(&config)?;
        let path = config.path.clone();
        let (mut state, raw) = self.rotation_state(keyring, &path)?;
        if state.step == Step::Idle {
            state.next_run_ms = config.schedule.next_after(now_ms(), config.window.as_ref());
        }
        let ops = vec![
            Op::Put { cf: Cf::Sys, value: encrypt_json(keyring, &config_key(&path), &config)?, key: config_key(&path) },
            self.put_state(keyring, &path, &state)?,
        ];
        if !self.commit_guarded(&path, raw.as_deref(), None, ops).await? {
            return Err(Error::Conflict);
        }
        Ok(())
    }

    fn validate_rotator(&self, config: &RotationConfig) -> Result<()> {
        let p = &config.params;
        match config.rotator {
            RotatorKind::Random => random::Policy::from_params(p).map(|_| ()),
            RotatorKind::Postgres => {
                postgres::validate(&self.rotation_settings, p)?;
                validate_path(&p["admin"])
            }
            RotatorKind::Command => {
                let name = p.get("function").ok_or_else(|| {
                    Error::InvalidArgument(
                        "command rotator: 'function' (a registered function's name) is required".into(),
                    )
                })?;
                command::valid_name(name)?;
                if self.node.reader().get(Cf::Sys, &function_key(name))?.is_none() {
                    return Err(Error::InvalidArgument(format!(
                        "function {name:?} is not registered: 'arca rotation function register {name} --sha256 …'"
                    )));
                }
                duration_param(p, "timeout", DEFAULT_CALL_TIMEOUT).map(|_| ())
            }
            RotatorKind::Webhook => {
                let url =
                    p.get("url").ok_or_else(|| Error::InvalidArgument("webhook rotator: 'url' is required".into()))?;
                webhook::allowed(&self.rotation_settings, url)?;
                let key = p.get("signing_key").ok_or_else(|| {
                    Error::InvalidArgument(
                        "webhook rotator: 'signing_key' (KV path of the HMAC key) is required".into(),
                    )
                })?;
                validate_path(key)?;
                duration_param(p, "timeout", DEFAULT_CALL_TIMEOUT).map(|_| ())
            }
        }
    }

    /// Updates a secret's state through `change`, guarded; for operator actions.
    async fn change_rotation(
        &self,
        keyring: &Keyring,
        path: &str,
        change: impl Fn(&mut RotationConfig, &mut RotationState),
    ) -> Result<()> {
        validate_path(path)?;
        for _ in 0..crate::vault::MAX_TXN_ATTEMPTS {
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

    fn rotation_paths(&self) -> Result<Vec<String>> {
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

    /// The rotation engine, until the task is dropped. Every node runs it; only the leader
    /// acts. One task per secret at a time.
    pub async fn run_rotations(self) {
        let running: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.node.current_leader() != Some(self.node.id()) {
                continue;
            }
            // Subscribed before the keys are taken: a seal from here on stops the work below,
            // which drops its keys with it.
            let sealed = self.seal_epoch.subscribe();
            let (Ok(keyring), Ok(paths)) = (self.keyring(), self.rotation_paths()) else { continue };
            // The vault's own rewrap after `operator rotate` advances here too, one bounded
            // batch per tick.
            if let Some(Err(e)) = crate::seal::until_sealed(sealed.clone(), self.rewrap_step(&keyring)).await {
                warn!(error = %e, "keyring rewrap step failed; retrying next tick");
            }
            for path in paths {
                if !running.lock().expect("rotation set").insert(path.clone()) {
                    continue;
                }
                let (core, keyring, running, sealed) = (self.clone(), keyring.clone(), running.clone(), sealed.clone());
                tokio::spawn(async move {
                    if crate::seal::until_sealed(sealed, core.drive(&keyring, &path)).await.is_none() {
                        // Steps are committed commands: the next unsealed leader resumes.
                        info!(path = %path, "rotation stopped: the node sealed");
                    }
                    drop(keyring);
                    running.lock().expect("rotation set").remove(&path);
                });
            }
        }
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
        let step = state.step.next_name();
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
                let pending = self.rotator_call(keyring, config, "create", None, current.as_ref()).await?;
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
                let name = state.step.next_name();
                self.rotator_call(keyring, config, name, Some(&pending), current.as_ref()).await?;
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
                    info!(path, step = name, rotation = %state.rotation_id, "rotation step committed");
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
        step: &str,
        pending: Option<&SecretData>,
        current: Option<&SecretData>,
    ) -> Result<Option<SecretData>> {
        let p = &config.params;
        match config.rotator {
            RotatorKind::Random => match step {
                "create" => random::create(p, current).map(Some),
                _ => Ok(None),
            },
            RotatorKind::Postgres => {
                let pending = || pending.ok_or_else(|| Error::Internal("no pending value".into()));
                match step {
                    "create" => postgres::create(p, current).map(Some),
                    "set" => {
                        let admin = self.current_data(keyring, &p["admin"]).map_err(|e| {
                            Error::Rotation(format!("the admin credential at {} cannot be read: {e}", p["admin"]))
                        })?;
                        postgres::set(&self.rotation_settings, p, &admin, pending()?).await.map(|_| None)
                    }
                    "test" => postgres::test(&self.rotation_settings, p, pending()?).await.map(|_| None),
                    _ => Ok(None),
                }
            }
            RotatorKind::Command | RotatorKind::Webhook => {
                let input = serde_json::json!({
                    "step": step,
                    "path": config.path,
                    "pending": pending.map(|d| &d.0),
                    "current": current.map(|d| &d.0),
                });
                let timeout = duration_param(p, "timeout", DEFAULT_CALL_TIMEOUT)?;
                let output = if config.rotator == RotatorKind::Command {
                    let name = &p["function"];
                    let raw = self
                        .node
                        .reader()
                        .get(Cf::Sys, &function_key(name))?
                        .ok_or_else(|| Error::Rotation(format!("function {name:?} is no longer registered")))?;
                    let f: command::Function =
                        serde_json::from_slice(&raw).map_err(|e| Error::Internal(e.to_string()))?;
                    command::run(self.rotation_settings.functions_dir.as_deref(), name, &f.sha256, timeout, &input)
                        .await?
                } else {
                    let key_data = self.current_data(keyring, &p["signing_key"]).map_err(|e| {
                        Error::Rotation(format!("the webhook signing key at {} cannot be read: {e}", p["signing_key"]))
                    })?;
                    let key = key_data.0.get("key").ok_or_else(|| {
                        Error::Rotation(format!("the secret at {} has no field 'key'", p["signing_key"]))
                    })?;
                    let body = zeroize::Zeroizing::new(
                        serde_json::to_vec(&input).map_err(|e| Error::Internal(e.to_string()))?,
                    );
                    webhook::post(&self.rotation_settings, &p["url"], key.as_bytes(), timeout, body.to_vec()).await?
                };
                value_of(&output)
            }
        }
    }

    fn current_data(&self, keyring: &Keyring, path: &str) -> Result<SecretData> {
        let (meta, _) =
            self.read_meta(keyring, path)?.ok_or_else(|| Error::NotFound(format!("no secret at {path}")))?;
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
            request_id: crate::audit::request_id().unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_schedules() {
        let w = Window::parse("22:00-02:00").unwrap();
        let day = 1_700_006_400_000i64 - 1_700_006_400_000i64.rem_euclid(86_400_000);
        assert!(w.contains(day + 23 * 3_600_000));
        assert!(w.contains(day + 3_600_000));
        assert!(!w.contains(day + 12 * 3_600_000));
        assert_eq!(w.next_open(day + 12 * 3_600_000), day + 22 * 3_600_000);
        for bad in ["25:00-01:00", "1-2", "10:00-10:00", "10:60-11:00"] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
        let every = Schedule::Every { ms: 2_000 };
        assert_eq!(every.next_after(day, None), day + 2_000);
        let cron = Schedule::Cron { expr: "0 0 3 * * *".into() };
        assert_eq!(cron.next_after(day, None), day + 3 * 3_600_000);
        assert!(Schedule::Cron { expr: "every day".into() }.validate().is_err());
        assert!(Schedule::Every { ms: 10 }.validate().is_err());
    }
}
