//! The agent's loop: log in, render, watch what was rendered, render again on a change.
//!
//! Failure rules, for the application's sake: a render that cannot reach the cluster touches
//! no file (the last good files stay, and are never truncated); a secret that is gone or no
//! longer readable follows the template's `on_missing`; a broken watch falls back to reading
//! every `fallback_ttl`, and says so in the log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use arca_client::{Auth, Client, RetryPolicy, WatchKind};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};
use zeroize::Zeroizing;

use crate::config::{AuthMethod, Config, OnMissing, TemplateConfig};
use crate::exec::{exit_code, Supervisor};
use crate::output::{run_command, write_atomic};
use crate::render::{Output, Renderer};
use crate::{Error, Result};

/// What the watch task reports.
enum Watch {
    /// A secret a render read changed (or the member cannot say what changed).
    Changed,
    /// The stream is (re)established: changes are pushed again.
    Up,
    /// The stream is down: read on a timer until it is back.
    Down(String),
}

/// Runs the agent until a stop signal (or, in exec mode, until the application exits).
/// Returns the process exit code: the application's in exec mode.
pub async fn run(config: Config) -> Result<i32> {
    let client = connect(&config).await?;
    if let Some(path) = config.sink.as_ref().map(|s| s.path.clone()) {
        let mut sink = TokenSink { path, written: None };
        sink.update(&client)?;
        let client = client.clone();
        // A new login (renewal refused, max TTL reached) replaces the token: follow it.
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(e) = sink.update(&client) {
                    warn!(error = %e, "cannot write the token sink");
                }
            }
        });
    }

    let mut sources = Vec::new();
    for (i, t) in config.templates.iter().enumerate() {
        sources.push((template_name(i, t), template_source(t)?));
    }
    let env_names: Vec<String> = config.exec.iter().flat_map(|e| e.env.keys().cloned()).collect();
    for (name, source) in config.exec.iter().flat_map(|e| e.env.iter()) {
        sources.push((format!("exec.env.{name}"), source.clone()));
    }
    let renderer = Renderer::new(sources)?;
    let mut supervisor = config.exec.clone().map(Supervisor::new);
    let _listener = match &config.listener {
        Some(l) => Some(crate::listener::serve(&client, l).await?),
        None => None,
    };

    let (tx, mut rx) = mpsc::channel::<Watch>(64);
    let mut watching: BTreeSet<String> = BTreeSet::new();
    let mut watch_task: Option<tokio::task::JoinHandle<()>> = None;
    let mut watch_up = false;
    let mut first = true;
    let mut backoff = Duration::from_millis(250);

    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| Error::Io(format!("signal handler: {e}")))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| Error::Io(format!("signal handler: {e}")))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| Error::Io(format!("signal handler: {e}")))?;
    let mut sigusr1 = signal(SignalKind::user_defined1()).map_err(|e| Error::Io(format!("signal handler: {e}")))?;
    let mut sigusr2 = signal(SignalKind::user_defined2()).map_err(|e| Error::Io(format!("signal handler: {e}")))?;

    let mut down_warned = false;
    let result: Result<i32> = 'agent: loop {
        // Render (a stop signal does not wait for it), and act on what changed.
        let rendered = tokio::select! {
            r = renderer.render(&client) => r,
            _ = sigterm.recv() => break 'agent Ok(stop(supervisor.as_mut(), "SIGTERM").await),
            _ = sigint.recv() => break 'agent Ok(stop(supervisor.as_mut(), "SIGINT").await),
        };
        let next_try = match rendered {
            Ok(rendered) => {
                backoff = Duration::from_millis(250);
                let n = config.templates.len();
                let (mut changed, mut failed) = (false, false);
                // Every file rendered: the application is not started on a partial set.
                let complete = rendered.outputs[..n].iter().all(|o| matches!(o, Output::Text(_)));
                for ((t, out), i) in config.templates.iter().zip(&rendered.outputs[..n]).zip(0..) {
                    match apply(t, out, &template_name(i, t), first).await {
                        Ok(c) => changed |= c,
                        // The first render (a configuration that cannot work) and on_missing = fail stop the agent.
                        Err(e) if first || matches!(e, Error::Render(_)) => break 'agent Err(e),
                        // Later (a full disk, say), the other files still get their update and
                        // this one is tried again on the timer.
                        Err(e) => {
                            error!(error = %e, "a rendered file could not be written; it keeps its last contents");
                            failed = true;
                        }
                    }
                }
                let env = match environment(&env_names, &rendered.outputs[n..], first) {
                    Ok(env) => env,
                    Err(e) => break 'agent Err(e),
                };
                if let (Some(s), Some(env)) = (supervisor.as_mut(), env) {
                    let result = if !s.running() && complete {
                        s.start(env)
                    } else if !s.running() {
                        warn!("waiting for every template to render before starting the application");
                        Ok(())
                    } else if changed || s.env() != &env {
                        s.changed(env).await
                    } else {
                        Ok(())
                    };
                    if let Err(e) = result {
                        error!(error = %e, "the application could not be (re)started; trying again on the timer");
                        failed = true;
                    }
                }
                if rendered.paths != watching || watch_task.is_none() {
                    if let Some(t) = watch_task.take() {
                        t.abort();
                    }
                    watching = rendered.paths.clone();
                    watch_up = false;
                    if !watching.is_empty() {
                        watch_task = Some(tokio::spawn(watch(client.clone(), watching.clone(), tx.clone())));
                    }
                }
                first = false;
                let child_down = supervisor.as_ref().is_some_and(|s| !s.running());
                if (watch_up || watching.is_empty()) && !failed && !child_down {
                    None
                } else {
                    Some(config.freshness.fallback_ttl)
                }
            }
            Err(e @ Error::Client(_)) => {
                warn!(error = %e, retry_in = ?backoff, "cannot read the secrets; the rendered files stay as they are");
                let wait = backoff;
                backoff = (backoff * 2).min(config.freshness.fallback_ttl.max(Duration::from_secs(1)));
                Some(wait)
            }
            Err(e @ Error::Render(_)) => {
                warn!(error = %e, "render skipped");
                Some(config.freshness.fallback_ttl)
            }
            Err(e) => break 'agent Err(e),
        };

        // Wait for a reason to render again.
        let timer = async {
            match next_try {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let exited = async {
            match supervisor.as_mut() {
                Some(s) => s.exited().await,
                None => std::future::pending().await,
            }
        };
        let every = config.freshness.fallback_ttl;
        tokio::select! {
            _ = timer => debug!("rendering on the timer"),
            msg = rx.recv() => match msg {
                Some(Watch::Changed) => {
                    // A rotation writes a version and moves labels in quick succession: one render.
                    tokio::time::sleep(config.freshness.settle).await;
                    while let Ok(more) = rx.try_recv() {
                        note(more, &mut watch_up, &mut down_warned, every);
                    }
                    debug!("a watched secret changed");
                }
                Some(other) => note(other, &mut watch_up, &mut down_warned, every),
                None => {}
            },
            status = exited => {
                let code = exit_code(status);
                info!(code, "the application exited; the agent exits with its status");
                break 'agent Ok(code);
            }
            _ = sigterm.recv() => break 'agent Ok(stop(supervisor.as_mut(), "SIGTERM").await),
            _ = sigint.recv() => break 'agent Ok(stop(supervisor.as_mut(), "SIGINT").await),
            _ = sighup.recv() => forward(supervisor.as_ref(), libc::SIGHUP),
            _ = sigusr1.recv() => forward(supervisor.as_ref(), libc::SIGUSR1),
            _ = sigusr2.recv() => forward(supervisor.as_ref(), libc::SIGUSR2),
        }
    };
    if result.is_err() {
        // The application does not outlive an agent that stopped on an error.
        stop(supervisor.as_mut(), "an error").await;
    }
    result
}

/// Takes note of the watch's state: it is up (changes are pushed) or down (read on the timer,
/// said once per outage, and also when it never came up).
fn note(msg: Watch, watch_up: &mut bool, down_warned: &mut bool, every: Duration) {
    match msg {
        Watch::Changed => {}
        Watch::Up => {
            if !*watch_up {
                info!("watching the rendered secrets; changes render at once");
            }
            *watch_up = true;
            *down_warned = false;
        }
        Watch::Down(why) => {
            if *watch_up || !*down_warned {
                warn!(reason = %why, every = ?every, "the watch is broken; reading the secrets on a timer until it is back");
            }
            *watch_up = false;
            *down_warned = true;
        }
    }
}

/// Passes a signal on to the application; without one, SIGHUP renders again.
fn forward(supervisor: Option<&Supervisor>, sig: i32) {
    match supervisor {
        Some(s) => s.signal(sig),
        None => debug!(sig, "signal: rendering again"),
    }
}

/// A stop signal: the application gets it too, and the agent exits with its status.
async fn stop(supervisor: Option<&mut Supervisor>, name: &str) -> i32 {
    info!(signal = name, "stopping");
    match supervisor {
        Some(s) => s.stop().await.map_or(0, exit_code),
        None => 0,
    }
}

/// The exec environment, when every variable rendered. A variable whose template is wrong is
/// a configuration error on the first render.
fn environment(names: &[String], outputs: &[Output], first: bool) -> Result<Option<BTreeMap<String, String>>> {
    let mut env = BTreeMap::new();
    for (name, out) in names.iter().zip(outputs) {
        match out {
            Output::Text(v) => {
                env.insert(name.clone(), v.clone());
            }
            Output::Missing(m) => {
                let paths: Vec<_> = m.iter().map(|m| m.path.as_str()).collect();
                warn!(variable = %name, ?paths, "a secret for the application's environment is not available; keeping the application as it is");
                return Ok(None);
            }
            Output::Broken(e) if first => return Err(Error::Config(format!("exec.env.{name}: {e}"))),
            Output::Broken(e) => {
                error!(variable = %name, error = %e, "the environment template failed; keeping the application as it is");
                return Ok(None);
            }
        }
    }
    Ok(Some(env))
}

fn template_name(i: usize, t: &TemplateConfig) -> String {
    match &t.source {
        Some(p) => format!("template[{i}] ({})", p.display()),
        None => format!("template[{i}] ({})", t.destination.display()),
    }
}

fn template_source(t: &TemplateConfig) -> Result<String> {
    match (&t.source, &t.contents) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read the template {}: {e}", path.display()))),
        (None, Some(text)) => Ok(text.clone()),
        (None, None) => Err(Error::Config("a template needs source or contents".into())),
    }
}

/// Writes one template's output; returns whether its file changed.
async fn apply(t: &TemplateConfig, out: &Output, name: &str, first: bool) -> Result<bool> {
    let dest = &t.destination;
    match out {
        Output::Text(text) => {
            let mode = t.file_mode().map_err(Error::Config)?;
            let owner = t.owner_ids().map_err(Error::Config)?;
            let changed = write_atomic(dest, text.as_bytes(), mode, owner)?;
            if changed {
                info!(file = %dest.display(), "rendered");
                if let Some(cmd) = &t.command {
                    run_command(cmd, t.command_timeout, dest).await;
                }
            }
            Ok(changed)
        }
        Output::Missing(missing) => {
            let paths: Vec<_> = missing.iter().map(|m| m.path.as_str()).collect();
            let reason = missing.first().map(|m| m.reason.as_str()).unwrap_or("");
            match t.on_missing {
                OnMissing::Keep => {
                    warn!(file = %dest.display(), ?paths, %reason, "a secret is not available; keeping the last rendered file");
                    Ok(false)
                }
                OnMissing::Remove => {
                    let removed = std::fs::remove_file(dest).is_ok();
                    if removed {
                        warn!(file = %dest.display(), ?paths, %reason, "a secret is not available; the file is removed");
                    }
                    Ok(removed)
                }
                OnMissing::Fail => {
                    Err(Error::Render(format!("{name}: secret {} is not available: {reason}", paths.join(", "))))
                }
            }
        }
        Output::Broken(e) if first => Err(Error::Config(format!("{name}: {e}"))),
        Output::Broken(e) => {
            error!(template = %name, error = %e, "the template failed; keeping the last rendered file");
            Ok(false)
        }
    }
}

/// Watches `paths` and reports changes to them; reconnects (the SDK's watcher resumes after
/// the last position, so nothing is missed), and reports the stream down while it cannot.
async fn watch(client: Client, paths: BTreeSet<String>, tx: mpsc::Sender<Watch>) {
    let mut backoff = Duration::from_millis(250);
    let prefixes = watch_prefixes(&paths);
    loop {
        match client.watch(prefixes.iter().cloned()).await {
            Ok(mut watcher) => {
                let _ = tx.send(Watch::Up).await;
                // Whatever happened while not watching is unknown: render once.
                let _ = tx.send(Watch::Changed).await;
                backoff = Duration::from_millis(250);
                loop {
                    match watcher.next().await {
                        Ok(e) => {
                            let relevant = match e.kind {
                                WatchKind::Progress => false,
                                WatchKind::Reset | WatchKind::AccessRevoked => true,
                                _ => paths.contains(&e.path),
                            };
                            if relevant && tx.send(Watch::Changed).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Watch::Down(e.to_string())).await;
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                if tx.send(Watch::Down(e.to_string())).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// What to watch for `paths`: the paths themselves, or, past the server's limit of prefixes
/// per watch, their top folders (events for other paths are dropped on arrival).
fn watch_prefixes(paths: &BTreeSet<String>) -> BTreeSet<String> {
    const MAX_PREFIXES: usize = 64;
    if paths.len() <= MAX_PREFIXES {
        return paths.clone();
    }
    paths.iter().map(|p| p.split_once('/').map_or(p.clone(), |(top, _)| format!("{top}/"))).collect()
}

/// Logs in with the configured method. While the cluster cannot be reached it keeps trying;
/// refused credentials stop the agent.
async fn connect(config: &Config) -> Result<Client> {
    let a = &config.auth;
    let read = |p: &PathBuf, what: &str| {
        std::fs::read_to_string(p)
            .map(|s| Zeroizing::new(s.trim().to_string()))
            .map_err(|e| Error::Config(format!("auth.{what}: cannot read {}: {e}", p.display())))
    };
    let mut builder = Client::builder()
        .addrs(config.cluster.addrs.iter().cloned())
        .ca_cert_file(&config.cluster.ca_cert)
        // Short, so a dead cluster shows in the log soon and the fallback timer takes over.
        .retry(RetryPolicy { max_elapsed: Duration::from_secs(10), ..RetryPolicy::default() });
    let auth = match a.method {
        AuthMethod::Approle => {
            let role_id = read(a.role_id_file.as_ref().expect("checked"), "role_id_file")?;
            let path = a.secret_id_file.as_ref().expect("checked");
            let secret_id = read(path, "secret_id_file")?;
            Auth::app_role(role_id.as_str(), secret_id.as_str())
        }
        AuthMethod::Jwt => {
            Auth::JwtFile { role: a.role.clone().expect("checked"), path: a.jwt_file.clone().expect("checked") }
        }
        AuthMethod::Cert => {
            let cert = std::fs::read(a.cert_file.as_ref().expect("checked"))
                .map_err(|e| Error::Config(format!("auth.cert_file: {e}")))?;
            let key = Zeroizing::new(
                std::fs::read(a.key_file.as_ref().expect("checked"))
                    .map_err(|e| Error::Config(format!("auth.key_file: {e}")))?,
            );
            builder = builder.identity(cert, key.to_vec());
            Auth::cert(a.role.clone().expect("checked"))
        }
        AuthMethod::Token => Auth::token(read(a.token_file.as_ref().expect("checked"), "token_file")?.as_str()),
    };
    let builder = builder.auth(auth);
    let mut backoff = Duration::from_millis(500);
    loop {
        match builder.clone().build().await {
            Ok(client) => {
                info!(member = %client.current_member(), "logged in");
                // Only now: a secret id deleted before a login that failed (the cluster down at
                // boot) would lock the agent out for good.
                if let (AuthMethod::Approle, true, Some(path)) = (a.method, a.remove_secret_id_file, &a.secret_id_file)
                {
                    if let Err(e) = std::fs::remove_file(path) {
                        // A read-only mount (a Kubernetes Secret volume) cannot lose it; say so.
                        warn!(file = %path.display(), error = %e, "cannot remove the secret id file after use");
                    }
                }
                return Ok(client);
            }
            Err(e @ arca_client::Error::Unreachable { .. }) => {
                warn!(error = %e, retry_in = ?backoff, "cannot reach the cluster to log in");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The optional token sink: the agent's current token in a 0600 file, rewritten when a new
/// login replaces it.
struct TokenSink {
    path: PathBuf,
    written: Option<Zeroizing<String>>,
}

impl TokenSink {
    fn update(&mut self, client: &Client) -> Result<()> {
        let path = &self.path;
        let token = client.token();
        if token.is_none() || token == self.written {
            return Ok(());
        }
        let t = token.as_ref().expect("checked");
        write_atomic(path, t.as_bytes(), 0o600, None)?;
        info!(sink = %path.display(), "token written to the sink");
        self.written = token;
        Ok(())
    }
}
