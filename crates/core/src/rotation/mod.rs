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

/// The `sys/rotation` operations and the records they keep.
mod admin;
mod command;
/// The leader's engine: configuration records, the schedule, and each run's committed steps.
mod engine;
mod postgres;
mod random;
/// The rotators behind one trait.
mod rotator;
mod webhook;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::kv::{self};
use crate::policy::Capability;
use crate::{now_ms, Error, Result};

const CONFIG_PREFIX: &str = "rotation/config/";
const STATE_PREFIX: &str = "rotation/state/";
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
    let reads = rotator::rotator(config.rotator).reads().iter().filter_map(|param| config.params.get(*param));
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
    /// The rotator's step that runs next from here.
    fn next(self) -> rotator::RotatorStep {
        match self {
            Step::Idle => rotator::RotatorStep::Create,
            Step::Created => rotator::RotatorStep::Set,
            Step::Set => rotator::RotatorStep::Test,
            Step::Tested => rotator::RotatorStep::Finish,
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
