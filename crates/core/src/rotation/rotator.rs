//! The rotators behind one trait. The engine runs a rotation as committed steps and calls the
//! rotator for each through [`Rotator::step`]; it knows nothing of PostgreSQL, processes or
//! HTTP, and a rotator knows nothing of Raft or the `Core`: what it may read of the vault comes
//! through [`VaultView`], and only the secrets its configuration names ([`Rotator::reads`]),
//! which whoever configured the rotation must be allowed to read (invariant 7).

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::{command, duration_param, postgres, random, webhook, RotationSettings, RotatorKind, DEFAULT_CALL_TIMEOUT};
use crate::{validate_path, Error, Result, SecretData};

/// A step of a run that calls the rotator, in the order a run takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RotatorStep {
    /// Make the new value (the engine stores it as the `pending` version).
    Create,
    /// Apply the pending value to the target system (a database role's password).
    Set,
    /// Prove the pending value works on the target.
    Test,
    /// The pending value became current; clean up (for example, retire the old credential).
    Finish,
}

impl RotatorStep {
    /// The name command and webhook rotators receive as `step`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            RotatorStep::Create => "create",
            RotatorStep::Set => "set",
            RotatorStep::Test => "test",
            RotatorStep::Finish => "finish",
        }
    }
}

/// What a rotator may read of the vault, on the state the engine acts on.
pub(crate) trait VaultView: Send + Sync {
    /// The current value of the secret at KV `path`.
    fn secret(&self, path: &str) -> Result<SecretData>;
    /// A registered function (`arca rotation function register`), if there is one by `name`.
    fn function(&self, name: &str) -> Result<Option<command::Function>>;
}

/// One step's input.
pub(crate) struct StepInput<'a> {
    /// The KV path of the rotated secret.
    pub path: &'a str,
    pub params: &'a BTreeMap<String, String>,
    /// The value `create` made (every step after it).
    pub pending: Option<&'a SecretData>,
    /// The secret's current value, if it has one.
    pub current: Option<&'a SecretData>,
    /// What this node's config file allows rotators to run and call.
    pub settings: &'a RotationSettings,
    pub vault: &'a dyn VaultView,
}

/// A kind of rotator.
pub(crate) trait Rotator: Send + Sync {
    /// Checks a configuration's parameters when the rotation is set, so that mistakes show then
    /// and not at the first scheduled run.
    fn validate(
        &self,
        params: &BTreeMap<String, String>,
        settings: &RotationSettings,
        vault: &dyn VaultView,
    ) -> Result<()>;

    /// The parameters whose values are KV paths of other secrets the rotator reads.
    fn reads(&self) -> &'static [&'static str] {
        &[]
    }

    /// Runs one step. `Create` may return the new value (`None`: the engine makes a random
    /// one); the other steps return `None`.
    fn step<'a>(&'a self, step: RotatorStep, input: StepInput<'a>) -> BoxFuture<'a, Result<Option<SecretData>>>;
}

/// The rotator of `kind`.
pub(crate) fn rotator(kind: RotatorKind) -> &'static dyn Rotator {
    match kind {
        RotatorKind::Random => &Random,
        RotatorKind::Postgres => &Postgres,
        RotatorKind::Command => &Command,
        RotatorKind::Webhook => &Webhook,
    }
}

/// A random value in one field of the secret; nothing outside the vault changes.
struct Random;

impl Rotator for Random {
    fn validate(&self, params: &BTreeMap<String, String>, _: &RotationSettings, _: &dyn VaultView) -> Result<()> {
        random::Policy::from_params(params).map(|_| ())
    }

    fn step<'a>(&'a self, step: RotatorStep, input: StepInput<'a>) -> BoxFuture<'a, Result<Option<SecretData>>> {
        let out = match step {
            RotatorStep::Create => random::create(input.params, input.current).map(Some),
            _ => Ok(None),
        };
        futures::future::ready(out).boxed()
    }
}

/// A PostgreSQL role's password, changed over an admin connection.
struct Postgres;

impl Rotator for Postgres {
    fn validate(
        &self,
        params: &BTreeMap<String, String>,
        settings: &RotationSettings,
        _: &dyn VaultView,
    ) -> Result<()> {
        postgres::validate(settings, params)?;
        validate_path(&params["admin"])
    }

    fn reads(&self) -> &'static [&'static str] {
        &["admin"]
    }

    fn step<'a>(&'a self, step: RotatorStep, input: StepInput<'a>) -> BoxFuture<'a, Result<Option<SecretData>>> {
        async move {
            let pending = || input.pending.ok_or_else(|| Error::Internal("no pending value".into()));
            match step {
                RotatorStep::Create => postgres::create(input.params, input.current).map(Some),
                RotatorStep::Set => {
                    let admin_path = &input.params["admin"];
                    let admin = input.vault.secret(admin_path).map_err(|e| {
                        Error::Rotation(format!("the admin credential at {admin_path} cannot be read: {e}"))
                    })?;
                    postgres::set(input.settings, input.params, &admin, pending()?).await.map(|()| None)
                }
                RotatorStep::Test => postgres::test(input.settings, input.params, pending()?).await.map(|()| None),
                RotatorStep::Finish => Ok(None),
            }
        }
        .boxed()
    }
}

/// A registered executable of the nodes' `rotation.functions_dir`, pinned by its SHA-256.
struct Command;

impl Rotator for Command {
    fn validate(&self, params: &BTreeMap<String, String>, _: &RotationSettings, vault: &dyn VaultView) -> Result<()> {
        let name = params.get("function").ok_or_else(|| {
            Error::InvalidArgument("command rotator: 'function' (a registered function's name) is required".into())
        })?;
        command::valid_name(name)?;
        if vault.function(name)?.is_none() {
            return Err(Error::InvalidArgument(format!(
                "function {name:?} is not registered: 'arca rotation function register {name} --sha256 …'"
            )));
        }
        duration_param(params, "timeout", DEFAULT_CALL_TIMEOUT).map(|_| ())
    }

    fn step<'a>(&'a self, step: RotatorStep, input: StepInput<'a>) -> BoxFuture<'a, Result<Option<SecretData>>> {
        async move {
            let timeout = duration_param(input.params, "timeout", DEFAULT_CALL_TIMEOUT)?;
            let name = &input.params["function"];
            let f = input
                .vault
                .function(name)?
                .ok_or_else(|| Error::Rotation(format!("function {name:?} is no longer registered")))?;
            let dir = input.settings.functions_dir.as_deref();
            let output = command::run(dir, name, &f.sha256, timeout, &exchange(step, &input)).await?;
            value_of(&output)
        }
        .boxed()
    }
}

/// An HTTPS endpoint on the nodes' allow-list, each call signed with a key kept in the vault.
struct Webhook;

impl Rotator for Webhook {
    fn validate(
        &self,
        params: &BTreeMap<String, String>,
        settings: &RotationSettings,
        _: &dyn VaultView,
    ) -> Result<()> {
        let url =
            params.get("url").ok_or_else(|| Error::InvalidArgument("webhook rotator: 'url' is required".into()))?;
        webhook::allowed(settings, url)?;
        let key = params.get("signing_key").ok_or_else(|| {
            Error::InvalidArgument("webhook rotator: 'signing_key' (KV path of the HMAC key) is required".into())
        })?;
        validate_path(key)?;
        duration_param(params, "timeout", DEFAULT_CALL_TIMEOUT).map(|_| ())
    }

    fn reads(&self) -> &'static [&'static str] {
        &["signing_key"]
    }

    fn step<'a>(&'a self, step: RotatorStep, input: StepInput<'a>) -> BoxFuture<'a, Result<Option<SecretData>>> {
        async move {
            let timeout = duration_param(input.params, "timeout", DEFAULT_CALL_TIMEOUT)?;
            let key_path = &input.params["signing_key"];
            let key_data = input
                .vault
                .secret(key_path)
                .map_err(|e| Error::Rotation(format!("the webhook signing key at {key_path} cannot be read: {e}")))?;
            let key = key_data
                .0
                .get("key")
                .ok_or_else(|| Error::Rotation(format!("the secret at {key_path} has no field 'key'")))?;
            let body = zeroize::Zeroizing::new(
                serde_json::to_vec(&exchange(step, &input)).map_err(|e| Error::Internal(e.to_string()))?,
            );
            let output =
                webhook::post(input.settings, &input.params["url"], key.as_bytes(), timeout, body.to_vec()).await?;
            value_of(&output)
        }
        .boxed()
    }
}

/// What command and webhook rotators receive: the step, the secret's path, and its pending and
/// current values.
fn exchange(step: RotatorStep, input: &StepInput<'_>) -> serde_json::Value {
    serde_json::json!({
        "step": step.name(),
        "path": input.path,
        "pending": input.pending.map(|d| &d.0),
        "current": input.current.map(|d| &d.0),
    })
}

/// The new value a command or webhook rotator answered with, if any.
fn value_of(output: &serde_json::Value) -> Result<Option<SecretData>> {
    match output.get("value") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_json::from_value::<BTreeMap<String, String>>(v.clone())
            .map(|m| Some(SecretData(m)))
            .map_err(|_| Error::Rotation("the rotator's 'value' must be an object of strings".into())),
    }
}
