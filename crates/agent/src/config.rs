//! `agent.toml`: what the agent connects to, how it logs in, what it renders and runs.
//!
//! Unknown fields are refused (a misspelt `destinaton` must not silently render nothing), and
//! every error names the field it is about.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub cluster: Cluster,
    pub auth: AuthConfig,
    /// Where to write the agent's token (mode 0600), for tools that want to use it.
    #[serde(default)]
    pub sink: Option<Sink>,
    #[serde(default)]
    pub freshness: Freshness,
    #[serde(default, rename = "template")]
    pub templates: Vec<TemplateConfig>,
    #[serde(default)]
    pub exec: Option<ExecConfig>,
    #[serde(default)]
    pub listener: Option<ListenerConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The members' client API addresses (`https://host:8200`); the agent fails over between
    /// them.
    pub addrs: Vec<String>,
    /// The CA certificate (PEM) that signed the members' certificates.
    pub ca_cert: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    Approle,
    Jwt,
    Cert,
    Token,
}

/// One login method and the files its credentials are read from (never the credentials
/// themselves: a config file is often world-readable).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub method: AuthMethod,
    /// `approle`: the role id file.
    pub role_id_file: Option<PathBuf>,
    /// `approle`: the secret id file.
    pub secret_id_file: Option<PathBuf>,
    /// `approle`: delete the secret id file once read (default true), so a secret id is used
    /// once and does not linger on disk.
    #[serde(default = "yes")]
    pub remove_secret_id_file: bool,
    /// `jwt` and `cert`: the login role.
    pub role: Option<String>,
    /// `jwt`: the JWT file (a Kubernetes projected service-account token); read again at
    /// every login, since it is rotated in place.
    pub jwt_file: Option<PathBuf>,
    /// `cert`: the client certificate and key (PEM).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// `token`: a file holding a token (not renewed beyond its TTL; prefer a login method).
    pub token_file: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sink {
    pub path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freshness {
    /// While the watch is broken, secrets are read again this often (default 10s).
    #[serde(default = "default_fallback", deserialize_with = "duration")]
    pub fallback_ttl: Duration,
    /// Changes arriving this close together make one render (default 100ms): a rotation
    /// writes a version and moves labels in quick succession.
    #[serde(default = "default_settle", deserialize_with = "duration")]
    pub settle: Duration,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness { fallback_ttl: default_fallback(), settle: default_settle() }
    }
}

fn default_fallback() -> Duration {
    Duration::from_secs(10)
}

fn default_settle() -> Duration {
    Duration::from_millis(100)
}

/// What to do when a secret a template reads is gone or no longer readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMissing {
    /// Keep the last rendered file and say so in the log (default).
    #[default]
    Keep,
    /// Delete the rendered file.
    Remove,
    /// Stop the agent with an error.
    Fail,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// The template file, or...
    pub source: Option<PathBuf>,
    /// ...the template text itself.
    pub contents: Option<String>,
    pub destination: PathBuf,
    /// File mode, octal (default "0600").
    #[serde(default = "default_mode")]
    pub mode: String,
    /// `uid` or `uid:gid` to own the file (needs the privilege to chown).
    pub owner: Option<String>,
    /// Run with `sh -c` after the file changed (not when it was written unchanged).
    pub command: Option<String>,
    #[serde(default = "default_command_timeout", deserialize_with = "duration")]
    pub command_timeout: Duration,
    #[serde(default)]
    pub on_missing: OnMissing,
}

fn default_mode() -> String {
    "0600".into()
}

fn default_command_timeout() -> Duration {
    Duration::from_secs(30)
}

/// How a running child learns that its secrets changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnChange {
    /// Stop it (`stop_signal`, then SIGKILL after `grace`) and start it with the new
    /// environment (default).
    #[default]
    Restart,
    /// Send it `reload_signal` (for an application that rereads rendered files).
    Signal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Environment variables, each a template: `DB_PASSWORD = "{{ secret('db/app').password }}"`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub on_change: OnChange,
    #[serde(default = "default_stop_signal")]
    pub stop_signal: String,
    #[serde(default = "default_reload_signal")]
    pub reload_signal: String,
    #[serde(default = "default_grace", deserialize_with = "duration")]
    pub grace: Duration,
}

fn default_stop_signal() -> String {
    "SIGTERM".into()
}

fn default_reload_signal() -> String {
    "SIGHUP".into()
}

fn default_grace() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// A loopback address (`127.0.0.1:8100`): the endpoint needs no token, so it must not be
    /// reachable from other hosts.
    pub address: SocketAddr,
    /// The prefixes it serves (`["app/"]`); anything else is refused. Required: the endpoint
    /// hands out what the agent's token reads to anyone on this host.
    pub paths: Vec<String>,
    /// The KV mount name in Vault paths (default "secret": `/v1/secret/data/<path>`).
    #[serde(default = "default_mount")]
    pub mount: String,
    /// Answer only requests carrying `X-Vault-Request: true` (default true; hvac and the Vault
    /// CLI send it, `curl` needs `-H 'X-Vault-Request: true'`). A server-side request forgery
    /// in the application (a URL fetched on a user's behalf) cannot add that header, so it
    /// cannot read the secrets through the agent.
    #[serde(default = "yes")]
    pub require_request_header: bool,
}

fn default_mount() -> String {
    "secret".into()
}

/// `500ms`, `2s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a duration (like 500ms, 2s, 5m, 1h)"))?;
    let too_long = || format!("{s:?} is too long");
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(too_long)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(too_long)?),
        other => return Err(format!("{s:?}: unknown unit {other:?} (use ms, s, m or h)")),
    };
    Ok(d)
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses and checks a configuration: every error names the field.
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string().trim().to_string()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.cluster.addrs.is_empty() {
            return bad("cluster.addrs: give at least one member address (https://host:8200)".into());
        }
        let a = &self.auth;
        let need = |field: &str, v: bool| {
            if v {
                Ok(())
            } else {
                Err(Error::Config(format!("auth.{field}: required for method {:?}", a.method).to_lowercase()))
            }
        };
        match a.method {
            AuthMethod::Approle => {
                need("role_id_file", a.role_id_file.is_some())?;
                need("secret_id_file", a.secret_id_file.is_some())?;
            }
            AuthMethod::Jwt => {
                need("role", a.role.is_some())?;
                need("jwt_file", a.jwt_file.is_some())?;
            }
            AuthMethod::Cert => {
                need("role", a.role.is_some())?;
                need("cert_file", a.cert_file.is_some())?;
                need("key_file", a.key_file.is_some())?;
            }
            AuthMethod::Token => need("token_file", a.token_file.is_some())?,
        }
        if self.templates.is_empty() && self.exec.is_none() && self.listener.is_none() {
            return bad("nothing to do: configure a [[template]], an [exec] or a [listener]".into());
        }
        if self.freshness.fallback_ttl < Duration::from_millis(500) {
            return bad("freshness.fallback_ttl: at least 500ms (it paces reads while the watch is broken)".into());
        }
        if self.freshness.settle > Duration::from_secs(5) {
            return bad("freshness.settle: at most 5s (changes are meant to arrive within a second)".into());
        }
        let mut destinations = std::collections::BTreeSet::new();
        if let Some(sink) = &self.sink {
            destinations.insert(sink.path.clone());
        }
        for (i, t) in self.templates.iter().enumerate() {
            if t.source.is_some() == t.contents.is_some() {
                return bad(format!("template[{i}]: give exactly one of source and contents"));
            }
            if t.destination.file_name().is_none() {
                return bad(format!("template[{i}].destination: {} is not a file path", t.destination.display()));
            }
            if !destinations.insert(t.destination.clone()) {
                return bad(format!(
                    "template[{i}].destination: {} is written by another template or the sink",
                    t.destination.display()
                ));
            }
            if t.command_timeout < Duration::from_millis(100) {
                return bad(format!("template[{i}].command_timeout: at least 100ms"));
            }
            t.file_mode().map_err(|m| Error::Config(format!("template[{i}].mode: {m}")))?;
            t.owner_ids().map_err(|m| Error::Config(format!("template[{i}].owner: {m}")))?;
        }
        if let Some(e) = &self.exec {
            if e.command.is_empty() {
                return bad("exec.command: give the program and its arguments".into());
            }
            crate::exec::signal_number(&e.stop_signal).map_err(|m| Error::Config(format!("exec.stop_signal: {m}")))?;
            crate::exec::signal_number(&e.reload_signal)
                .map_err(|m| Error::Config(format!("exec.reload_signal: {m}")))?;
        }
        if let Some(l) = &self.listener {
            if !l.address.ip().is_loopback() {
                return bad(format!(
                    "listener.address: {} is not a loopback address; the endpoint needs no token, so it listens on 127.0.0.1 or ::1 only",
                    l.address
                ));
            }
            if l.paths.is_empty() {
                return bad("listener.paths: list the prefixes the endpoint may serve (e.g. [\"app/\"])".into());
            }
            if let Some(p) =
                l.paths.iter().find(|p| p.trim_matches('/').is_empty() || p.starts_with('/') || p.contains(".."))
            {
                return bad(format!(
                    "listener.paths: {p:?} is not a folder (\"app/\") or a secret path (\"app/db\"); serving everything the token reads is not an option"
                ));
            }
            if l.mount.is_empty() || !l.mount.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return bad(format!("listener.mount: {:?} is not a mount name (letters, digits, - and _)", l.mount));
            }
        }
        Ok(())
    }
}

impl TemplateConfig {
    pub fn file_mode(&self) -> std::result::Result<u32, String> {
        let mode = u32::from_str_radix(self.mode.trim_start_matches("0o"), 8)
            .map_err(|_| format!("{:?} is not an octal mode like \"0640\"", self.mode))?;
        if mode > 0o777 {
            return Err(format!("{:?}: give permission bits only (at most 0777)", self.mode));
        }
        if mode & 0o007 != 0 {
            return Err(format!("{:?} lets every user of the host read or write the secrets", self.mode));
        }
        Ok(mode)
    }

    pub fn owner_ids(&self) -> std::result::Result<Option<(u32, Option<u32>)>, String> {
        let Some(owner) = &self.owner else { return Ok(None) };
        let num = |s: &str| s.parse::<u32>().map_err(|_| format!("{owner:?}: give numeric ids, uid or uid:gid"));
        match owner.split_once(':') {
            Some((u, g)) => Ok(Some((num(u)?, Some(num(g)?)))),
            None => Ok(Some((num(owner)?, None))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[cluster]
addrs = ["https://127.0.0.1:8200"]
ca_cert = "/etc/arca/ca.pem"
[auth]
method = "approle"
role_id_file = "/run/role-id"
secret_id_file = "/run/secret-id"
"#;

    fn err(extra: &str) -> String {
        match Config::parse(&format!("{BASE}{extra}")) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted: {extra}"),
        }
    }

    #[test]
    fn a_complete_config_parses_with_defaults() {
        let c = Config::parse(&format!(
            "{BASE}[[template]]\ncontents = \"x\"\ndestination = \"/run/app/db.env\"\ncommand = \"true\"\n"
        ))
        .unwrap();
        assert_eq!(c.templates[0].file_mode(), Ok(0o600));
        assert_eq!(c.templates[0].on_missing, OnMissing::Keep);
        assert!(c.auth.remove_secret_id_file);
        assert_eq!(c.freshness.fallback_ttl, Duration::from_secs(10));
    }

    #[test]
    fn errors_name_the_field() {
        let t = "[[template]]\ncontents = \"x\"\ndestination = \"/run/x\"\n";
        assert!(err(&format!("{t}destinaton = \"/x\"\n")).contains("unknown field `destinaton`"));
        assert!(err(&format!("{t}mode = \"0644\"\n")).contains("template[0].mode"));
        assert!(err(&format!("{t}mode = \"rw\"\n")).contains("template[0].mode"));
        assert!(err(&format!("{t}owner = \"app\"\n")).contains("template[0].owner"));
        assert!(err(&format!("{t}command_timeout = \"5y\"\n")).contains("unknown unit"));
        assert!(err("").contains("nothing to do"));
        assert!(err("[listener]\naddress = \"0.0.0.0:8100\"\npaths = [\"app/\"]\n").contains("listener.address"));
        assert!(err("[listener]\naddress = \"127.0.0.1:8100\"\npaths = [\"\"]\n").contains("listener.paths"));
        assert!(err("[listener]\naddress = \"127.0.0.1:8100\"\npaths = [\"a/\"]\nmount = \"x{y}\"\n")
            .contains("listener.mount"));
        assert!(err(&format!("{t}[freshness]\nfallback_ttl = \"0s\"\n")).contains("freshness.fallback_ttl"));
        assert!(err(&format!("{t}{t}")).contains("template[1].destination"));
        assert!(err(&format!("{t}mode = \"4755\"\n")).contains("template[0].mode"));
        assert!(err(&format!("{t}command_timeout = \"99999999999999999h\"\n")).contains("too long"));
        assert!(err("[exec]\ncommand = [\"app\"]\nstop_signal = \"SIGNOPE\"\n").contains("exec.stop_signal"));
        let no_secret = BASE.replace("secret_id_file = \"/run/secret-id\"\n", "");
        let e = Config::parse(&format!("{no_secret}{t}")).unwrap_err().to_string();
        assert!(e.contains("auth.secret_id_file: required for method approle"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }
}
