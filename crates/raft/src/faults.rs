//! Network faults between nodes, injected where node-to-node messages arrive: partitions
//! (symmetric or one-way), message loss and delay. Tests share one [`Faults`] among the nodes of
//! an in-process cluster (`testing::TestCluster::faults`) and change it while clients run; a
//! server's nodes get an empty one, which costs one relaxed atomic load per message.
//!
//! A message is judged on arrival by the receiving node, which knows the sender from its
//! cluster certificate. "`a` cannot reach `b`" therefore means `b` refuses every request from
//! `a` (append entries, votes, snapshots, forwarded writes and read-index requests); replies to
//! requests `b` itself sends to `a` still arrive, as on a network that drops one direction of
//! new flows. A refused or lost message fails as an unreachable peer does, so openraft backs
//! off and retries as it would on a real network.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;

/// The fault rules of a set of nodes. Cheap to clone; clones share the rules.
#[derive(Clone, Default)]
pub struct Faults(Arc<Inner>);

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let active = self.0.active.load(Ordering::Relaxed);
        write!(f, "Faults({})", if active { "injecting" } else { "none" })
    }
}

#[derive(Default)]
struct Inner {
    /// Set while any rule is in force: the fast path for a healthy network.
    active: AtomicBool,
    rules: Mutex<Rules>,
}

#[derive(Default, Clone)]
struct Rules {
    /// `(from, to)`: messages from `from` to `to` are refused.
    blocked: HashSet<(u64, u64)>,
    /// Fraction of all other messages lost.
    loss: f64,
    /// Every message that gets through waits a uniform time in this range first.
    delay: (Duration, Duration),
}

impl Rules {
    fn any(&self) -> bool {
        !self.blocked.is_empty() || self.loss > 0.0 || !self.delay.1.is_zero()
    }
}

/// What happens to one message.
enum Fate {
    Deliver(Duration),
    Lose(Duration),
    Refuse,
}

impl Faults {
    fn update(&self, f: impl FnOnce(&mut Rules)) {
        let mut rules = self.0.rules.lock().expect("fault rules lock");
        f(&mut rules);
        self.0.active.store(rules.any(), Ordering::Release);
    }

    /// Messages from `from` to `to` are refused from now on (one direction only).
    pub fn block(&self, from: u64, to: u64) {
        self.update(|r| {
            r.blocked.insert((from, to));
        });
    }

    /// No message passes between a node of `a` and a node of `b`, either way.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        self.update(|r| {
            for &x in a {
                for &y in b {
                    r.blocked.insert((x, y));
                    r.blocked.insert((y, x));
                }
            }
        });
    }

    /// `node` can neither reach nor be reached by any of `others`.
    pub fn isolate(&self, node: u64, others: &[u64]) {
        let others: Vec<u64> = others.iter().copied().filter(|o| *o != node).collect();
        self.partition(&[node], &others);
    }

    /// Loses `fraction` of the messages that are not blocked, and delays the rest by a uniform
    /// time in `delay`.
    pub fn set_loss(&self, fraction: f64, delay: std::ops::Range<Duration>) {
        self.update(|r| {
            r.loss = fraction.clamp(0.0, 1.0);
            r.delay = (delay.start, delay.end.max(delay.start));
        });
    }

    /// Removes every partition; loss and delay stay.
    pub fn heal_partitions(&self) {
        self.update(|r| r.blocked.clear());
    }

    /// Back to a healthy network.
    pub fn heal(&self) {
        self.update(|r| *r = Rules::default());
    }

    fn fate(&self, to: u64, sent_by: impl Fn(u64) -> bool) -> Fate {
        let rules = self.0.rules.lock().expect("fault rules lock").clone();
        if rules.blocked.iter().any(|&(from, t)| t == to && sent_by(from)) {
            return Fate::Refuse;
        }
        let mut rng = rand::thread_rng();
        let (lo, hi) = rules.delay;
        let delay = if hi > lo { rng.gen_range(lo..hi) } else { lo };
        if rules.loss > 0.0 && rng.gen_bool(rules.loss) {
            Fate::Lose(delay)
        } else {
            Fate::Deliver(delay)
        }
    }

    /// Judges a message arriving at `to`; `sent_by(id)` says whether node `id` sent it (from
    /// the sender's certificate). `Err`: the message does not arrive.
    pub(crate) async fn arrive(&self, to: u64, sent_by: impl Fn(u64) -> bool) -> Result<(), tonic::Status> {
        if !self.0.active.load(Ordering::Acquire) {
            return Ok(());
        }
        let lost = || tonic::Status::unavailable("the message was lost (injected network fault)");
        match self.fate(to, sent_by) {
            Fate::Refuse => Err(lost()),
            Fate::Lose(after) => {
                tokio::time::sleep(after).await;
                Err(lost())
            }
            Fate::Deliver(after) => {
                if !after.is_zero() {
                    tokio::time::sleep(after).await;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn partitions_are_directional_and_heal() {
        let f = Faults::default();
        assert!(f.arrive(2, |id| id == 1).await.is_ok());
        f.block(1, 2);
        assert!(f.arrive(2, |id| id == 1).await.is_err(), "1 -> 2 is blocked");
        assert!(f.arrive(1, |id| id == 2).await.is_ok(), "2 -> 1 is not");
        f.isolate(3, &[1, 2, 3]);
        assert!(f.arrive(3, |id| id == 1).await.is_err() && f.arrive(2, |id| id == 3).await.is_err());
        f.heal();
        assert!(f.arrive(2, |id| id == 1).await.is_ok() && f.arrive(3, |id| id == 2).await.is_ok());
    }

    #[tokio::test]
    async fn loss_is_about_the_fraction_asked() {
        let f = Faults::default();
        f.set_loss(0.3, Duration::ZERO..Duration::ZERO);
        let mut lost = 0;
        for _ in 0..2000 {
            lost += f.arrive(1, |id| id == 2).await.is_err() as u32;
        }
        assert!((450..750).contains(&lost), "{lost} of 2000 lost at 30%");
    }
}
