//! The leader's scheduled duties, driven by one loop: rotation runs, the keyring rewrap after
//! `operator rotate`, the purge of expired tokens and audit retention. Only the leader acts;
//! every duty keeps its progress in committed state, so a new leader resumes where the old one
//! stopped. A duty that fails is logged and tried again when it is next due.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::{Core, Error, Result};

/// How often the loop looks at what is due.
const TICK: Duration = Duration::from_millis(200);

/// One of the leader's duties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Duty {
    /// Start the run of every rotation that is due (each runs as its own task).
    Rotations,
    /// Move one bounded batch of records to the keyring's newest term.
    Rewrap,
    /// Delete expired tokens.
    TokenPurge,
    /// Trim the audit trail to `[audit] retention_*`.
    AuditRetention,
}

impl Duty {
    const ALL: [Duty; 4] = [Duty::Rotations, Duty::Rewrap, Duty::TokenPurge, Duty::AuditRetention];

    fn every(self) -> Duration {
        match self {
            Duty::Rotations | Duty::Rewrap => TICK,
            Duty::TokenPurge | Duty::AuditRetention => Duration::from_secs(5),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Duty::Rotations => "rotations",
            Duty::Rewrap => "keyring rewrap",
            Duty::TokenPurge => "token purge",
            Duty::AuditRetention => "audit retention",
        }
    }
}

impl Core {
    /// Runs the leader's duties for as long as the node runs; on a node that does not lead, or
    /// is sealed, nothing is done.
    pub async fn run_leader_duties(self) {
        // Rotations in flight on this node, by path: a slow run is not started twice.
        let running: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut due = [Instant::now(); Duty::ALL.len()];
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.node.current_leader() != Some(self.node.id()) {
                continue;
            }
            for (duty, due) in Duty::ALL.into_iter().zip(due.iter_mut()) {
                let now = Instant::now();
                if now < *due {
                    continue;
                }
                *due = now + duty.every();
                match self.run_duty(duty, &running).await {
                    Ok(()) | Err(Error::Sealed) => {}
                    Err(e) => {
                        warn!(duty = duty.name(), error = %e, "a leader duty failed; it is tried again when next due")
                    }
                }
            }
        }
    }

    async fn run_duty(&self, duty: Duty, running: &Arc<Mutex<HashSet<String>>>) -> Result<()> {
        match duty {
            Duty::Rotations => self.start_due_rotations(running),
            Duty::Rewrap => {
                // Subscribed before the keys are taken: a seal from here on stops the batch,
                // which drops its keys with it.
                let sealed = self.seal_epoch.subscribe();
                let keyring = self.keyring()?;
                crate::seal::until_sealed(sealed, self.rewrap_step(&keyring)).await.transpose().map(drop)
            }
            Duty::TokenPurge => self.purge_expired().await.map(drop),
            Duty::AuditRetention => self.apply_audit_retention().await.map(drop),
        }
    }
}
