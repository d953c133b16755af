//! A linearizability checker for histories recorded by fault tests.
//!
//! A history is what clients saw: each operation's invocation time, its completion time (or
//! none, when the client gave up without knowing whether it took effect), its input and its
//! output. The history is linearizable if the operations can be put in one order that (1)
//! respects real time: an operation that completed before another was invoked comes first, and
//! (2) replays on the sequential [`Model`] with every output as observed. An operation with an
//! unknown outcome may take effect at any point after its invocation, or never.
//!
//! [`check`] is the Wing–Gong backtracking search with Lowe's memoization of (set of operations
//! linearized, model state), as Jepsen's Knossos and porcupine implement it. The search is
//! exponential in the worst case; [`check`] gives up after a step budget and says so, rather
//! than hang a test. Histories of different keys are independent (linearizability is local),
//! so [`check_kv`] checks each key on its own, which keeps every search small.
//!
//! [`Kv`] is the model of one KV v2 secret as Arca serves it: versions count up from 1, a
//! check-and-set write succeeds only at the current version (`cas = 0`: only if no version was
//! ever written), a delete hides the current version until the next write, and a read returns
//! the current version and its value.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash;
    type Input;
    type Output;
    fn init(&self) -> Self::State;
    /// The state after `input`, if `output` is what the operation may return from `state`.
    fn step(&self, state: &Self::State, input: &Self::Input, output: &Self::Output) -> Option<Self::State>;
}

/// One operation of a history. Times are any monotonic unit (nanoseconds since the test began).
#[derive(Debug, Clone)]
pub struct Operation<I, O> {
    pub client: usize,
    pub call: u64,
    /// `None`: the client does not know whether it took effect (a timeout, a lost reply).
    pub ret: Option<u64>,
    pub input: I,
    pub output: O,
}

/// The verdict on a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order exists. `stuck_at` is the completed operation that the longest explanation
    /// found could not get past: where to start reading the history.
    NotLinearizable {
        stuck_at: usize,
    },
    /// The search ran out of its step budget: the history is too tangled to decide quickly.
    Undecided,
}

/// Most search steps [`check`] takes before it answers [`Verdict::Undecided`].
pub const STEP_BUDGET: u64 = 20_000_000;

#[derive(Clone, Copy)]
struct Event {
    time: u64,
    /// Returns sort after calls at the same instant: touching intervals overlap.
    is_return: bool,
    op: usize,
}

/// Checks `history` against `model`.
pub fn check<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> Verdict {
    let n = history.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    let mut events: Vec<Event> = Vec::with_capacity(2 * n);
    for (i, op) in history.iter().enumerate() {
        events.push(Event { time: op.call, is_return: false, op: i });
        events.push(Event { time: op.ret.unwrap_or(u64::MAX), is_return: true, op: i });
    }
    events.sort_by_key(|e| (e.time, e.is_return, e.op));
    let mut call_at = vec![0; n];
    let mut return_at = vec![0; n];
    for (pos, e) in events.iter().enumerate() {
        if e.is_return {
            return_at[e.op] = pos;
        } else {
            call_at[e.op] = pos;
        }
    }
    // The events still to linearize, as a doubly linked list over positions (plus a head).
    let len = events.len();
    let head = len;
    let mut next: Vec<usize> = (1..=len + 1).collect();
    let mut prev: Vec<usize> = (0..=len).map(|i| if i == 0 { head } else { i - 1 }).collect();
    next[head] = 0;
    prev[head] = len - 1;
    next[len - 1] = head;
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, at: usize| {
        let (p, q) = (prev[at], next[at]);
        next[p] = q;
        prev[q] = p;
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, at: usize| {
        let (p, q) = (prev[at], next[at]);
        next[p] = at;
        prev[q] = at;
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();
    let mut entry = next[head];
    let mut steps = 0u64;
    // The completed operation that the longest explanation found could not get past.
    let (mut deepest, mut stuck_at) = (0, 0);
    while next[head] != head {
        steps += 1;
        if steps > STEP_BUDGET {
            return Verdict::Undecided;
        }
        let e = events[entry];
        if !e.is_return {
            let op = &history[e.op];
            match model.step(&state, &op.input, &op.output) {
                // An operation with an unknown outcome that would change nothing here need not
                // be placed here: leaving it pending explains as much (it may never happen).
                Some(after) if op.ret.is_none() && after == state => {}
                Some(after) => {
                    linearized[e.op / 64] |= 1 << (e.op % 64);
                    if cache.insert((linearized.clone(), after.clone())) {
                        stack.push((e.op, std::mem::replace(&mut state, after)));
                        unlink(&mut next, &mut prev, call_at[e.op]);
                        unlink(&mut next, &mut prev, return_at[e.op]);
                        entry = next[head];
                        continue;
                    }
                    linearized[e.op / 64] &= !(1 << (e.op % 64));
                }
                None => {}
            }
            entry = next[entry];
        } else if history[e.op].ret.is_none() {
            // Returns of unknown outcomes sort last: every completed operation is placed, and the
            // ones still pending may simply never have happened.
            return Verdict::Linearizable;
        } else {
            // An operation completed before any explanation linearized it: undo the last choice.
            if stack.len() >= deepest {
                (deepest, stuck_at) = (stack.len(), e.op);
            }
            let Some((op, before)) = stack.pop() else {
                return Verdict::NotLinearizable { stuck_at };
            };
            state = before;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, return_at[op]);
            relink(&mut next, &mut prev, call_at[op]);
            entry = next[call_at[op]];
        }
    }
    Verdict::Linearizable
}

/// What a client asked of one secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvInput {
    Write(String),
    /// Write only if the secret is at version `cas` (0: has no version yet).
    Cas {
        value: String,
        cas: u64,
    },
    Read,
    /// Soft-delete the current version.
    Delete,
}

/// What the client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOutput {
    /// The write created this version.
    Written(u64),
    /// The check-and-set was refused: another version is current.
    CasMismatch,
    /// The current version and its value, or nothing (never written, or deleted).
    Read(Option<(u64, String)>),
    Deleted,
    /// The client does not know what happened (use with `ret: None`).
    Unknown,
}

/// One KV v2 secret: its current version and the current value (`None` once deleted).
#[derive(Debug, Clone, Copy, Default)]
pub struct Kv;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct KvState {
    pub version: u64,
    pub value: Option<String>,
}

impl Model for Kv {
    type State = KvState;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> KvState {
        KvState::default()
    }

    fn step(&self, s: &KvState, input: &KvInput, output: &KvOutput) -> Option<KvState> {
        let written = |value: &str| KvState { version: s.version + 1, value: Some(value.to_string()) };
        match (input, output) {
            (KvInput::Write(v), KvOutput::Written(n)) if *n == s.version + 1 => Some(written(v)),
            (KvInput::Write(v), KvOutput::Unknown) => Some(written(v)),
            (KvInput::Cas { value, cas }, KvOutput::Written(n)) if *cas == s.version && *n == s.version + 1 => {
                Some(written(value))
            }
            (KvInput::Cas { cas, .. }, KvOutput::CasMismatch) if *cas != s.version => Some(s.clone()),
            (KvInput::Cas { value, cas }, KvOutput::Unknown) => {
                Some(if *cas == s.version { written(value) } else { s.clone() })
            }
            (KvInput::Read, KvOutput::Read(seen)) => {
                let current = s.value.as_ref().map(|v| (s.version, v.clone()));
                (*seen == current).then(|| s.clone())
            }
            (KvInput::Delete, KvOutput::Deleted | KvOutput::Unknown) => {
                Some(KvState { version: s.version, value: None })
            }
            _ => None,
        }
    }
}

/// One operation on the secret at `key`.
pub type KvOperation = (String, Operation<KvInput, KvOutput>);

/// Checks a history over many secrets, one secret at a time. The verdict of the first secret
/// that fails (with its key), or `Linearizable`.
pub fn check_kv(history: &[KvOperation]) -> (Verdict, Option<String>) {
    let mut by_key: BTreeMap<&str, Vec<Operation<KvInput, KvOutput>>> = BTreeMap::new();
    for (key, op) in history {
        by_key.entry(key).or_default().push(op.clone());
    }
    for (key, ops) in by_key {
        match check(&Kv, &ops) {
            Verdict::Linearizable => {}
            other => return (other, Some(key.to_string())),
        }
    }
    (Verdict::Linearizable, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        client: usize,
        call: u64,
        ret: Option<u64>,
        input: KvInput,
        output: KvOutput,
    ) -> Operation<KvInput, KvOutput> {
        Operation { client, call, ret, input, output }
    }
    fn w(v: &str) -> KvInput {
        KvInput::Write(v.into())
    }
    fn read(n: u64, v: &str) -> KvOutput {
        KvOutput::Read(Some((n, v.into())))
    }

    #[test]
    fn sequential_and_overlapping_histories_are_linearizable() {
        let h = vec![
            op(0, 0, Some(10), w("a"), KvOutput::Written(1)),
            op(1, 20, Some(30), KvInput::Read, read(1, "a")),
            // Overlapping write and read: the read may see either version.
            op(0, 40, Some(60), w("b"), KvOutput::Written(2)),
            op(1, 45, Some(50), KvInput::Read, read(1, "a")),
            op(2, 55, Some(70), KvInput::Read, read(2, "b")),
        ];
        assert_eq!(check(&Kv, &h), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_is_caught() {
        // The write of version 2 completed before the read began; the read still saw version 1.
        let h = vec![
            op(0, 0, Some(10), w("a"), KvOutput::Written(1)),
            op(0, 20, Some(30), w("b"), KvOutput::Written(2)),
            op(1, 40, Some(50), KvInput::Read, read(1, "a")),
        ];
        assert!(matches!(check(&Kv, &h), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        // Acknowledged as version 2, but later reads never see it and a later write is 2 again.
        let h = vec![
            op(0, 0, Some(10), w("a"), KvOutput::Written(1)),
            op(1, 20, Some(30), w("b"), KvOutput::Written(2)),
            op(2, 40, Some(50), KvInput::Read, read(1, "a")),
        ];
        assert!(matches!(check(&Kv, &h), Verdict::NotLinearizable { .. }));
        let h = vec![
            op(0, 0, Some(10), w("a"), KvOutput::Written(1)),
            op(1, 20, Some(30), w("b"), KvOutput::Written(2)),
            op(2, 40, Some(50), w("c"), KvOutput::Written(2)),
        ];
        assert!(matches!(check(&Kv, &h), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_have_happened() {
        // A timed-out write that took effect...
        let took = vec![op(0, 0, None, w("a"), KvOutput::Unknown), op(1, 20, Some(30), KvInput::Read, read(1, "a"))];
        assert_eq!(check(&Kv, &took), Verdict::Linearizable);
        // ...or did not.
        let not = vec![
            op(0, 0, None, w("a"), KvOutput::Unknown),
            op(1, 20, Some(30), KvInput::Read, KvOutput::Read(None)),
            op(1, 40, Some(50), w("b"), KvOutput::Written(1)),
        ];
        assert_eq!(check(&Kv, &not), Verdict::Linearizable);
        // But it cannot take effect before it was invoked.
        let early = vec![op(1, 0, Some(10), KvInput::Read, read(1, "a")), op(0, 20, None, w("a"), KvOutput::Unknown)];
        assert!(matches!(check(&Kv, &early), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn two_successful_cas_writes_at_one_version_are_caught() {
        let mut h = vec![op(9, 0, Some(5), w("base"), KvOutput::Written(1))];
        for c in 0..8 {
            let out = if c < 2 { KvOutput::Written(2) } else { KvOutput::CasMismatch };
            h.push(op(c, 10, Some(20), KvInput::Cas { value: format!("v{c}"), cas: 1 }, out));
        }
        assert!(matches!(check(&Kv, &h), Verdict::NotLinearizable { .. }));
        // Exactly one winner is fine.
        h.remove(2);
        assert_eq!(check(&Kv, &h), Verdict::Linearizable);
    }

    #[test]
    fn deletes_hide_the_current_version_until_the_next_write() {
        let h = vec![
            op(0, 0, Some(10), w("a"), KvOutput::Written(1)),
            op(0, 20, Some(30), KvInput::Delete, KvOutput::Deleted),
            op(1, 40, Some(50), KvInput::Read, KvOutput::Read(None)),
            op(1, 60, Some(70), KvInput::Cas { value: "b".into(), cas: 1 }, KvOutput::Written(2)),
            op(2, 80, Some(90), KvInput::Read, read(2, "b")),
        ];
        assert_eq!(check(&Kv, &h), Verdict::Linearizable);
        let resurrected = vec![
            op(0, 0, Some(10), w("a"), KvOutput::Written(1)),
            op(0, 20, Some(30), KvInput::Delete, KvOutput::Deleted),
            op(1, 40, Some(50), KvInput::Read, read(1, "a")),
        ];
        assert!(matches!(check(&Kv, &resurrected), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn keys_are_checked_independently_and_the_failing_one_is_named() {
        let h: Vec<KvOperation> = vec![
            ("x".into(), op(0, 0, Some(10), w("a"), KvOutput::Written(1))),
            ("y".into(), op(1, 0, Some(10), w("a"), KvOutput::Written(1))),
            ("y".into(), op(1, 20, Some(30), KvInput::Read, KvOutput::Read(None))),
        ];
        let (verdict, key) = check_kv(&h);
        assert!(matches!(verdict, Verdict::NotLinearizable { .. }));
        assert_eq!(key.as_deref(), Some("y"));
    }

    #[test]
    fn many_unknown_outcomes_are_decided() {
        // Clients whose requests time out around a crash: 12 unknown writes and 40 unknown
        // check-and-set writes (which could not have succeeded), all concurrent, between
        // acknowledged ones. Unknown writes that all overlap are the checker's hard case: the
        // search is exponential in how many of them are pending at once.
        let mut h = vec![op(0, 0, Some(5), w("v1"), KvOutput::Written(1))];
        for i in 0..52u64 {
            let input =
                if i % 4 == 0 { w(&format!("lost{i}")) } else { KvInput::Cas { value: format!("x{i}"), cas: 99 } };
            h.push(op(1 + i as usize % 5, 10 + i, None, input, KvOutput::Unknown));
        }
        // One of the unknown writes did happen: version 2 is lost20.
        h.push(op(9, 500, Some(510), KvInput::Read, read(2, "lost20")));
        h.push(op(9, 520, Some(530), w("v3"), KvOutput::Written(3)));
        h.push(op(9, 540, Some(550), KvInput::Read, read(3, "v3")));
        assert_eq!(check(&Kv, &h), Verdict::Linearizable);
        // But an acknowledged write cannot vanish among them.
        h.push(op(9, 560, Some(570), KvInput::Read, read(2, "lost20")));
        assert!(matches!(check(&Kv, &h), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn a_long_concurrent_history_is_decided() {
        // 4 clients, 300 operations, heavy overlap, all consistent with one real order.
        let mut h = Vec::new();
        let mut version = 0;
        for i in 0..300u64 {
            let client = (i % 4) as usize;
            let t = i * 10;
            if i % 3 == 0 {
                version += 1;
                h.push(op(client, t, Some(t + 35), w(&format!("v{version}")), KvOutput::Written(version)));
            } else {
                h.push(op(client, t + 1, Some(t + 2), KvInput::Read, read(version, &format!("v{version}"))));
            }
        }
        // Within the step budget (Undecided otherwise).
        assert_eq!(check(&Kv, &h), Verdict::Linearizable);
    }
}
