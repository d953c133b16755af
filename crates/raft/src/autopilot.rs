//! Autopilot (as OpenBao's): the leader watches every member's last contact and removes one
//! that has been unreachable longer than `dead_after`, as long as the voters left still form
//! a safe quorum and never fewer than `min_quorum`. A dead voter left in the membership keeps
//! counting towards the quorum it cannot help form: in a 3-node cluster one more failure stops
//! every write. Removal retires the node id (it is never admitted again), so a replacement
//! joins under a new id.
//!
//! Last contact is when the peer last answered a Raft RPC of this node; only the leader sends
//! them steadily (heartbeats), so only the leader judges, and a peer it has not heard from since
//! it became leader counts from that moment.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::RaftNode;

/// Autopilot settings (`[autopilot]` in a node's config).
#[derive(Debug, Clone, Copy)]
pub struct AutopilotConfig {
    /// Remove members unreachable for longer than `dead_after`.
    pub cleanup_dead_servers: bool,
    pub dead_after: Duration,
    /// Never remove a voter if fewer than this many would be left.
    pub min_quorum: usize,
}

impl Default for AutopilotConfig {
    fn default() -> Self {
        AutopilotConfig { cleanup_dead_servers: false, dead_after: Duration::from_secs(24 * 3600), min_quorum: 3 }
    }
}

/// One member as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHealth {
    pub id: u64,
    pub raft_addr: String,
    pub api_addr: String,
    pub voter: bool,
    pub leader: bool,
    /// Since the member last answered (zero for the leader itself); `None` off the leader.
    pub last_contact: Option<Duration>,
    /// The last log index the leader knows the member holds.
    pub last_index: u64,
    pub healthy: bool,
}

/// The cluster's health, from the leader's view (Vault's `autopilot/state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutopilotState {
    pub healthy: bool,
    /// Voters that may fail with a quorum left.
    pub failure_tolerance: usize,
    pub leader: Option<u64>,
    pub servers: Vec<ServerHealth>,
}

/// How often the leader looks.
const TICK: Duration = Duration::from_millis(500);
/// A member the leader heard from this recently is healthy (heartbeats are every 75 ms by
/// default; a few seconds of silence is a problem, long before `dead_after`).
const HEALTHY_WITHIN: Duration = Duration::from_secs(5);

impl RaftNode {
    /// The health of every member. Exact on the leader; elsewhere, contact and lag are unknown
    /// and every member is reported as this node's membership lists it.
    pub fn autopilot_state(&self, dead_after: Duration) -> AutopilotState {
        self.autopilot_state_since(dead_after, None)
    }

    fn autopilot_state_since(&self, dead_after: Duration, leader_since: Option<Instant>) -> AutopilotState {
        let m = self.metrics();
        let me = self.id();
        let is_leader = m.current_leader == Some(me);
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let contacts = self.contacts();
        let now = Instant::now();
        let healthy_after = dead_after.min(HEALTHY_WITHIN);
        let matched: BTreeMap<u64, u64> = m
            .replication
            .as_ref()
            .map(|r| r.iter().map(|(id, l)| (*id, l.map_or(0, |l| l.index))).collect())
            .unwrap_or_default();
        let servers: Vec<ServerHealth> = membership
            .nodes()
            .map(|(id, node)| {
                let last_contact = if *id == me {
                    is_leader.then_some(Duration::ZERO)
                } else if is_leader {
                    let heard = contacts.get(id).copied().into_iter().chain(leader_since).max();
                    Some(heard.map_or(Duration::ZERO, |t| now.saturating_duration_since(t)))
                } else {
                    None
                };
                let last_index =
                    if *id == me { m.last_log_index.unwrap_or(0) } else { matched.get(id).copied().unwrap_or(0) };
                ServerHealth {
                    id: *id,
                    raft_addr: node.raft_addr.clone(),
                    api_addr: node.api_addr.clone(),
                    voter: voters.contains(id),
                    leader: m.current_leader == Some(*id),
                    last_contact,
                    last_index,
                    healthy: last_contact.is_none_or(|c| c <= healthy_after),
                }
            })
            .collect();
        let healthy_voters = servers.iter().filter(|s| s.voter && s.healthy).count();
        let quorum = voters.len() / 2 + 1;
        AutopilotState {
            healthy: m.current_leader.is_some() && servers.iter().all(|s| s.healthy),
            failure_tolerance: healthy_voters.saturating_sub(quorum),
            leader: m.current_leader,
            servers,
        }
    }

    /// Runs autopilot until the task is dropped: on the leader, removes members dead longer
    /// than the configured time when that is safe.
    pub async fn run_autopilot(self, config: AutopilotConfig) {
        if !config.cleanup_dead_servers {
            return;
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leader_since: Option<Instant> = None;
        loop {
            tick.tick().await;
            if self.current_leader() != Some(self.id()) {
                leader_since = None;
                continue;
            }
            let since = *leader_since.get_or_insert_with(Instant::now);
            let state = self.autopilot_state_since(config.dead_after, Some(since));
            let Some(dead) = removable(&state, config) else { continue };
            warn!(node = dead.id, last_contact = ?dead.last_contact, "autopilot: removing a member unreachable for longer than dead_after");
            match self.remove(dead.id).await {
                Ok(_) => info!(node = dead.id, "autopilot: removed; a replacement joins under a new node id"),
                Err(e) => warn!(node = dead.id, error = %e, "autopilot: removal failed; retrying"),
            }
        }
    }
}

/// The first member dead longer than `dead_after` whose removal is safe: a learner always; a
/// voter only if at least `min_quorum` voters would be left and the live voters left still
/// form a quorum of the smaller membership.
fn removable(state: &AutopilotState, config: AutopilotConfig) -> Option<&ServerHealth> {
    let dead = |s: &ServerHealth| !s.leader && s.last_contact.is_some_and(|c| c > config.dead_after);
    if let Some(learner) = state.servers.iter().find(|s| !s.voter && dead(s)) {
        return Some(learner);
    }
    let voters = state.servers.iter().filter(|s| s.voter).count();
    let live = state.servers.iter().filter(|s| s.voter && !dead(s)).count();
    let left = voters - 1;
    // The live voters left must be a majority of the voters left.
    let safe = left >= config.min_quorum && live > left / 2;
    state.servers.iter().find(|s| s.voter && dead(s)).filter(|_| safe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: u64, voter: bool, contact_s: u64) -> ServerHealth {
        ServerHealth {
            id,
            raft_addr: String::new(),
            api_addr: String::new(),
            voter,
            leader: id == 1,
            last_contact: Some(Duration::from_secs(contact_s)),
            last_index: 0,
            healthy: contact_s < 10,
        }
    }

    fn state(servers: Vec<ServerHealth>) -> AutopilotState {
        AutopilotState { healthy: false, failure_tolerance: 0, leader: Some(1), servers }
    }

    #[test]
    fn only_safe_removals() {
        let config = AutopilotConfig { cleanup_dead_servers: true, dead_after: Duration::from_secs(60), min_quorum: 3 };
        // 4 voters, one dead: 3 left, all live.
        let s = state(vec![server(1, true, 0), server(2, true, 1), server(3, true, 1), server(4, true, 120)]);
        assert_eq!(removable(&s, config).map(|s| s.id), Some(4));
        // 3 voters, one dead: would leave 2 < min_quorum 3.
        let s = state(vec![server(1, true, 0), server(2, true, 1), server(3, true, 120)]);
        assert_eq!(removable(&s, config), None);
        // A dead learner goes whatever the voters.
        let s = state(vec![server(1, true, 0), server(2, true, 1), server(3, true, 120), server(9, false, 120)]);
        assert_eq!(removable(&s, config).map(|s| s.id), Some(9));
        // 5 voters, 3 dead: 4 left but only 2 live, no quorum of 4: nothing is removed.
        let s = state(vec![
            server(1, true, 0),
            server(2, true, 1),
            server(3, true, 120),
            server(4, true, 120),
            server(5, true, 120),
        ]);
        assert_eq!(removable(&s, config), None);
        // Recently heard from: not dead.
        let s = state(vec![server(1, true, 0), server(2, true, 1), server(3, true, 1), server(4, true, 30)]);
        assert_eq!(removable(&s, config), None);
    }
}
