//! Exec mode: the application runs as the agent's child with its secrets in its environment;
//! on a change it is restarted (stop signal, grace period, SIGKILL) or signalled.

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::{Child, Command};
use tracing::{info, warn};

use crate::config::{ExecConfig, OnChange};
use crate::{Error, Result};

/// A signal's number from its name (`SIGTERM` or `TERM`).
pub fn signal_number(name: &str) -> std::result::Result<i32, String> {
    let n = name.trim().to_ascii_uppercase();
    let n = n.strip_prefix("SIG").unwrap_or(&n);
    Ok(match n {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "QUIT" => libc::SIGQUIT,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "KILL" => libc::SIGKILL,
        "WINCH" => libc::SIGWINCH,
        _ => {
            return Err(format!(
                "{name:?} is not a signal the agent sends (TERM, INT, HUP, QUIT, USR1, USR2, KILL, WINCH)"
            ))
        }
    })
}

/// An exit status as a shell reports it: the code, or 128 + the signal that ended it.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Whether every variable can reach a process environment.
fn check_env(env: &BTreeMap<String, String>) -> Result<()> {
    match env.iter().find(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0')) {
        Some((name, _)) => {
            Err(Error::Exec(format!("the variable {name:?} cannot be passed (a NUL byte, or = in its name)")))
        }
        None => Ok(()),
    }
}

pub struct Supervisor {
    config: ExecConfig,
    child: Option<Child>,
    /// The environment the running child was started with.
    env: BTreeMap<String, String>,
    pub restarts: u64,
}

impl Supervisor {
    pub fn new(config: ExecConfig) -> Supervisor {
        Supervisor { config, child: None, env: BTreeMap::new(), restarts: 0 }
    }

    /// The environment the running application was started with.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the application with `env` added to the agent's environment.
    pub fn start(&mut self, env: BTreeMap<String, String>) -> Result<()> {
        let (program, args) = self.config.command.split_first().expect("exec.command checked non-empty");
        check_env(&env)?;
        let child = Command::new(program)
            .args(args)
            .envs(&env)
            // An agent that stops on an error takes the application with it.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Exec(format!("cannot start {program}: {e}")))?;
        info!(pid = child.id(), program = %program, "application started");
        self.child = Some(child);
        self.env = env;
        Ok(())
    }

    /// The secrets changed: restart the application with `env`, or signal it, as configured.
    pub async fn changed(&mut self, env: BTreeMap<String, String>) -> Result<()> {
        match self.config.on_change {
            OnChange::Signal if env == self.env => {
                let sig = signal_number(&self.config.reload_signal).map_err(Error::Exec)?;
                self.signal(sig);
                info!(signal = %self.config.reload_signal, "application signalled: its secrets changed");
                Ok(())
            }
            // A new environment only reaches a new process.
            _ => {
                // Before stopping the running application: a new one that cannot start is worse.
                check_env(&env)?;
                self.stop().await;
                self.restarts += 1;
                self.start(env)
            }
        }
    }

    /// Sends `sig` to the application, if it runs.
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            // SAFETY: kill(2) with a pid we spawned and have not reaped.
            unsafe { libc::kill(pid as i32, sig) };
        }
    }

    /// Stops the application: the stop signal, then SIGKILL after the grace period.
    pub async fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let sig = signal_number(&self.config.stop_signal).unwrap_or(libc::SIGTERM);
        if let Some(pid) = child.id() {
            // SAFETY: as in `signal`.
            unsafe { libc::kill(pid as i32, sig) };
        }
        match tokio::time::timeout(self.config.grace, child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                warn!(grace = ?self.config.grace, "the application did not stop in its grace period; killing it");
                let _ = child.kill().await;
                child.wait().await.ok()
            }
        }
    }

    /// Waits until the application exits on its own (forever when none runs).
    pub async fn exited(&mut self) -> ExitStatus {
        match self.child.as_mut() {
            Some(child) => {
                let status = child.wait().await;
                self.child = None;
                status.unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(1 << 8))
            }
            None => std::future::pending().await,
        }
    }

    pub fn grace(&self) -> Duration {
        self.config.grace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(command: &[&str], on_change: OnChange) -> ExecConfig {
        ExecConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            on_change,
            stop_signal: "SIGTERM".into(),
            reload_signal: "SIGHUP".into(),
            grace: Duration::from_millis(500),
        }
    }

    #[tokio::test]
    async fn the_child_gets_its_environment_and_its_exit_status_is_kept() {
        let mut s = Supervisor::new(config(&["sh", "-c", "test \"$DB_PASSWORD\" = p1 && exit 7"], OnChange::Restart));
        s.start(BTreeMap::from([("DB_PASSWORD".to_string(), "p1".to_string())])).unwrap();
        assert_eq!(exit_code(s.exited().await), 7);
    }

    #[tokio::test]
    async fn a_change_restarts_and_a_child_that_ignores_the_stop_signal_is_killed() {
        let mut s = Supervisor::new(config(&["sh", "-c", "trap '' TERM; sleep 5 >/dev/null 2>&1"], OnChange::Restart));
        s.start(BTreeMap::new()).unwrap();
        // Time for the shell to set its trap before the stop signal arrives.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        s.changed(BTreeMap::from([("A".to_string(), "1".to_string())])).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(500), "waited the grace period");
        assert!(s.running());
        assert_eq!(s.restarts, 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = s.stop().await.unwrap();
        assert_eq!(exit_code(status), 128 + libc::SIGKILL);
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_number("SIGHUP"), Ok(libc::SIGHUP));
        assert_eq!(signal_number("term"), Ok(libc::SIGTERM));
        assert!(signal_number("SIGSEGV").is_err());
    }
}
