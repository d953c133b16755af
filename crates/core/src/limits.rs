//! Rate limits on requests that have not earned trust (DESIGN invariant 9: bounded cost before
//! trust).
//!
//! Every audited request costs a record committed through Raft on every member. A caller
//! without a valid token, a failing login and a denied request are free to the sender and
//! not to the cluster, so each source address gets a token bucket per class of such requests.
//! Past its bucket, a request is refused *before* a record is built (no Raft write, no audit
//! key use): it is only counted, and a periodic report commits one aggregated record per source,
//! class and interval saying how many were refused.
//!
//! * Sources are IP addresses; IPv6 addresses are grouped by /64 (one host usually has a whole
//!   /64). Loopback is not exempt.
//! * Requests with a valid token that policy allows are never limited here: they are accountable
//!   to their token.
//! * The class of a request is known before it is handled for unauthenticated and denied
//!   requests (the read-only precheck decides it), but a login's outcome only after: a login
//!   takes a token from its source's "failed login" bucket up front and gives it back if it
//!   succeeds, so concurrent attempts cannot overdraw the bucket.
//! * Refusals are paced: each source's refusals (all classes together) are answered at most
//!   `refusals_per_second`, later ones wait their turn (at most [`MAX_PACE`]). A refusal is
//!   cheap but not free (the request was read, decrypted and parsed), and a client sending as
//!   fast as it is answered would otherwise take every core there is from the clients the
//!   vault is for. Waiting costs nothing, so a flood's CPU share is bounded by the pace, not
//!   by how fast the attacker can send.
//! * The table of sources is bounded; when full, sources with full buckets and nothing to report
//!   are dropped, and if none can be, new sources share one overflow entry.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Error;

/// The classes of untrusted requests, each with its own bucket per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// No token, or one that is unknown, expired or malformed.
    Unauthenticated,
    /// Logins (and unseal-share ceremonies) whose credentials were refused.
    FailedLogin,
    /// A valid token asking for something its policies do not grant.
    Denied,
}

const CLASSES: [Class; 3] = [Class::Unauthenticated, Class::FailedLogin, Class::Denied];

impl Class {
    fn index(self) -> usize {
        match self {
            Class::Unauthenticated => 0,
            Class::FailedLogin => 1,
            Class::Denied => 2,
        }
    }

    /// The decision name the audit trail uses for this class.
    pub fn name(self) -> &'static str {
        match self {
            Class::Unauthenticated => "unauthenticated",
            Class::FailedLogin => "failed_login",
            Class::Denied => "denied",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Class::Unauthenticated => "unauthenticated requests",
            Class::FailedLogin => "failed logins",
            Class::Denied => "denied requests",
        }
    }
}

/// A token bucket's settings: a sustained rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second refilled; 0 disables the limit for the class.
    pub per_second: f64,
    /// Bucket size: how many may come at once after a quiet period.
    pub burst: u32,
}

impl Rate {
    fn enabled(&self) -> bool {
        self.per_second > 0.0
    }
}

/// The limits of one node (the `[limits]` section of its config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitsConfig {
    pub unauthenticated: Rate,
    pub failed_logins: Rate,
    pub denied: Rate,
    /// How often refused requests are reported in aggregate (one record per source and class).
    pub report_interval: Duration,
    /// Most sources tracked at once.
    pub max_sources: usize,
    /// Refusals answered per second and source before later ones wait; 0 answers at once.
    pub refusals_per_second: f64,
}

/// Longest a refusal is held back by pacing. A source with more refusals waiting than the pace
/// allows within this gets each answered after this long, without taking a turn.
pub const MAX_PACE: Duration = Duration::from_secs(1);

impl Default for LimitsConfig {
    /// Generous for honest clients (a client whose token expired gets one refusal and logs in;
    /// a whole fleet behind one NAT address restarting at once stays under the burst), and a
    /// hard ceiling on what one address can make the cluster write: at most about 21 records
    /// a second, against thousands unlimited.
    fn default() -> Self {
        LimitsConfig {
            unauthenticated: Rate { per_second: 10.0, burst: 100 },
            failed_logins: Rate { per_second: 1.0, burst: 20 },
            denied: Rate { per_second: 10.0, burst: 100 },
            report_interval: Duration::from_secs(10),
            max_sources: 65_536,
            refusals_per_second: 1000.0,
        }
    }
}

impl LimitsConfig {
    fn rate(&self, class: Class) -> Rate {
        match class {
            Class::Unauthenticated => self.unauthenticated,
            Class::FailedLogin => self.failed_logins,
            Class::Denied => self.denied,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
struct Source {
    buckets: [Bucket; 3],
    /// Requests refused since the last report, per class, and when the first of them was.
    dropped: [u64; 3],
    first_drop_ms: [i64; 3],
    /// When the next refusal of this source may be answered.
    next_refusal: Instant,
}

/// Refused requests of one source and class since the previous report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub source: String,
    pub class: Class,
    pub dropped: u64,
    pub since_ms: i64,
    key: IpAddr,
}

/// A request refused over its source's budget: the error to answer with once `pace` has passed
/// (see the module docs on pacing).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub error: Error,
    pub pace: Duration,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// A request let through on credit: settled once its outcome is known.
#[derive(Debug)]
pub(crate) struct Ticket {
    key: IpAddr,
    class: Class,
}

impl Ticket {
    pub fn class(&self) -> Class {
        self.class
    }
}

/// The per-source buckets of one node.
pub(crate) struct Limiter {
    config: LimitsConfig,
    sources: Mutex<Table>,
}

struct Table {
    map: HashMap<IpAddr, Source>,
    last_prune: Option<Instant>,
}

/// Shared by every source once the table is full, and by requests without an address.
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// The key a remote address is limited under.
fn key(remote: Option<SocketAddr>) -> IpAddr {
    match remote.map(|r| r.ip().to_canonical()) {
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        Some(v4) => v4,
        None => OVERFLOW,
    }
}

fn describe(key: IpAddr) -> String {
    match key {
        OVERFLOW => "unknown or overflow sources".into(),
        IpAddr::V6(v6) => format!("{v6}/64"),
        v4 => v4.to_string(),
    }
}

impl Limiter {
    pub fn new(config: LimitsConfig) -> Limiter {
        Limiter { config, sources: Mutex::new(Table { map: HashMap::new(), last_prune: None }) }
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    fn fresh(&self, now: Instant) -> Source {
        let full = |c: Class| Bucket { tokens: f64::from(self.config.rate(c).burst), at: now };
        Source {
            buckets: [full(CLASSES[0]), full(CLASSES[1]), full(CLASSES[2])],
            dropped: [0; 3],
            first_drop_ms: [0; 3],
            next_refusal: now,
        }
    }

    fn refill(&self, b: &mut Bucket, class: Class, now: Instant) {
        let rate = self.config.rate(class);
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        b.at = now;
    }

    /// Runs `f` on the entry of `key`, making room in a full table first.
    fn with_source<T>(&self, key: IpAddr, f: impl FnOnce(IpAddr, &mut Source) -> T) -> T {
        let now = Instant::now();
        let mut table = self.sources.lock().expect("limiter lock");
        let mut key = key;
        if !table.map.contains_key(&key) && table.map.len() >= self.config.max_sources {
            // Forget sources that are back to full and have nothing to report: they are
            // indistinguishable from new ones. At most one scan a second.
            if table.last_prune.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                table.last_prune = Some(now);
                table.map.retain(|_, s| {
                    s.dropped.iter().any(|d| *d > 0)
                        || CLASSES.iter().any(|c| {
                            let mut b = s.buckets[c.index()];
                            self.refill(&mut b, *c, now);
                            b.tokens < f64::from(self.config.rate(*c).burst)
                        })
                });
            }
            if table.map.len() >= self.config.max_sources {
                key = OVERFLOW;
            }
        }
        let source = table.map.entry(key).or_insert_with(|| self.fresh(now));
        f(key, source)
    }

    /// Lets a request of `class` from `remote` through (taking one token), or refuses it,
    /// counting it for the next report and giving it the source's next turn to be answered.
    pub fn admit(&self, remote: Option<SocketAddr>, class: Class) -> Result<Option<Ticket>, Refusal> {
        let rate = self.config.rate(class);
        if !rate.enabled() {
            return Ok(None);
        }
        let key = key(remote);
        let now = Instant::now();
        self.with_source(key, |key, s| {
            let i = class.index();
            self.refill(&mut s.buckets[i], class, now);
            if s.buckets[i].tokens >= 1.0 {
                s.buckets[i].tokens -= 1.0;
                return Ok(Some(Ticket { key, class }));
            }
            if s.dropped[i] == 0 {
                s.first_drop_ms[i] = crate::now_ms();
            }
            s.dropped[i] += 1;
            let wait = (1.0 - s.buckets[i].tokens) / rate.per_second;
            let error = Error::RateLimited {
                what: class.plural(),
                from: describe(key),
                per_second: rate.per_second,
                burst: rate.burst,
                retry_after_s: wait.ceil().max(1.0) as u64,
            };
            Err(Refusal { error, pace: self.next_turn(s, now) })
        })
    }

    /// How long a refusal of source `s` waits before it is answered: the source's next turn,
    /// at most [`MAX_PACE`] (then without taking a turn).
    fn next_turn(&self, s: &mut Source, now: Instant) -> Duration {
        if self.config.refusals_per_second <= 0.0 {
            return Duration::ZERO;
        }
        let turn = s.next_refusal.max(now);
        let wait = turn - now;
        if wait >= MAX_PACE {
            return MAX_PACE;
        }
        s.next_refusal = turn + Duration::from_secs_f64(1.0 / self.config.refusals_per_second);
        wait
    }

    /// Gives back the token of a request that turned out not to be of its class (a login that
    /// succeeded, a token that became valid).
    pub fn refund(&self, ticket: Ticket) {
        let burst = f64::from(self.config.rate(ticket.class).burst);
        self.with_source(ticket.key, |_, s| {
            let b = &mut s.buckets[ticket.class.index()];
            b.tokens = (b.tokens + 1.0).min(burst);
        });
    }

    /// Charges a request that was let through as trusted but turned out untrusted (its token
    /// expired in between). The bucket may go below zero: the next requests wait longer.
    pub fn charge(&self, remote: Option<SocketAddr>, class: Class) {
        if !self.config.rate(class).enabled() {
            return;
        }
        let now = Instant::now();
        self.with_source(key(remote), |_, s| {
            let b = &mut s.buckets[class.index()];
            self.refill(b, class, now);
            b.tokens -= 1.0;
        });
    }

    /// What was refused since the last call, per source and class; the counters restart.
    pub fn take_reports(&self) -> Vec<Report> {
        let mut table = self.sources.lock().expect("limiter lock");
        let mut out = Vec::new();
        for (key, s) in table.map.iter_mut() {
            for c in CLASSES {
                let i = c.index();
                if s.dropped[i] > 0 {
                    out.push(Report {
                        source: describe(*key),
                        class: c,
                        dropped: std::mem::take(&mut s.dropped[i]),
                        since_ms: s.first_drop_ms[i],
                        key: *key,
                    });
                }
            }
        }
        out
    }

    /// Puts back reports that could not be committed, so the next report includes them.
    pub fn restore(&self, reports: Vec<Report>) {
        for r in reports {
            self.with_source(r.key, |_, s| {
                let i = r.class.index();
                if s.dropped[i] == 0 || r.since_ms < s.first_drop_ms[i] {
                    s.first_drop_ms[i] = r.since_ms;
                }
                s.dropped[i] += r.dropped;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32, max_sources: usize) -> Limiter {
        let rate = Rate { per_second, burst };
        Limiter::new(LimitsConfig {
            unauthenticated: rate,
            failed_logins: rate,
            denied: rate,
            report_interval: Duration::from_secs(1),
            max_sources,
            refusals_per_second: 10.0,
        })
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_burst_then_refusals_counted_per_source_and_class() {
        let l = limiter(0.001, 3, 100);
        for _ in 0..3 {
            l.admit(addr("10.0.0.1:1"), Class::Unauthenticated).unwrap();
        }
        let err = l.admit(addr("10.0.0.1:2"), Class::Unauthenticated).unwrap_err().to_string();
        assert!(err.contains("too many unauthenticated requests from 10.0.0.1") && err.contains("burst 3"), "{err}");
        l.admit(addr("10.0.0.1:2"), Class::Unauthenticated).unwrap_err();
        // Another class and another source have their own buckets.
        l.admit(addr("10.0.0.1:2"), Class::Denied).unwrap();
        l.admit(addr("10.0.0.2:2"), Class::Unauthenticated).unwrap();
        let reports = l.take_reports();
        assert_eq!(reports.len(), 1);
        assert_eq!(
            (reports[0].source.as_str(), reports[0].class, reports[0].dropped),
            ("10.0.0.1", Class::Unauthenticated, 2)
        );
        assert!(l.take_reports().is_empty(), "counters restart after a report");
    }

    #[test]
    fn refunds_and_loopback_and_ipv6_prefixes() {
        let l = limiter(0.001, 1, 100);
        let t = l.admit(addr("127.0.0.1:5"), Class::FailedLogin).unwrap().unwrap();
        l.admit(addr("127.0.0.1:6"), Class::FailedLogin).unwrap_err();
        l.refund(t);
        l.admit(addr("127.0.0.1:6"), Class::FailedLogin).unwrap();
        // One /64 is one source.
        l.admit(addr("[2001:db8::1]:1"), Class::Denied).unwrap();
        let err = l.admit(addr("[2001:db8::2]:1"), Class::Denied).unwrap_err().to_string();
        assert!(err.contains("2001:db8::/64"), "{err}");
    }

    #[test]
    fn a_full_table_prunes_idle_sources_then_shares_an_overflow_bucket() {
        let l = limiter(1000.0, 2, 2);
        l.admit(addr("10.0.0.1:1"), Class::Denied).unwrap();
        l.admit(addr("10.0.0.2:1"), Class::Denied).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        // Both refilled: pruned to make room.
        l.admit(addr("10.0.0.3:1"), Class::Denied).unwrap();
        assert!(l.sources.lock().unwrap().map.len() <= 2);
        let l = limiter(0.001, 1, 1);
        l.admit(addr("10.0.0.1:1"), Class::Denied).unwrap();
        l.admit(addr("10.0.0.2:1"), Class::Denied).unwrap();
        let err = l.admit(addr("10.0.0.3:1"), Class::Denied).unwrap_err().to_string();
        assert!(err.contains("overflow"), "{err}");
    }

    #[test]
    fn refusals_are_paced_per_source_and_never_held_past_the_cap() {
        let l = limiter(0.001, 0, 10);
        let pace = |a: &str| l.admit(addr(a), Class::Unauthenticated).unwrap_err().pace;
        let waits: Vec<Duration> = (0..13).map(|_| pace("10.0.0.1:1")).collect();
        // 10 a second: turns 100 ms apart, then the cap once a second's worth is waiting.
        assert!(waits[0] < Duration::from_millis(10), "{waits:?}");
        for (i, w) in waits.iter().enumerate().take(11).skip(1) {
            let turn = Duration::from_millis(100) * i as u32;
            assert!(*w <= turn && *w + Duration::from_millis(50) > turn, "refusal {i} waits {w:?}");
        }
        assert_eq!(&waits[11..], &[MAX_PACE, MAX_PACE]);
        // Another source has its own turns.
        assert!(pace("10.0.0.2:1") < Duration::from_millis(10));
    }

    #[test]
    fn a_zero_rate_disables_the_class() {
        let l = limiter(0.0, 0, 10);
        for _ in 0..100 {
            assert!(l.admit(addr("10.0.0.1:1"), Class::Unauthenticated).unwrap().is_none());
        }
    }
}
