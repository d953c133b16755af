//! The policy matcher agrees with a deliberately naive reference model on random policies and
//! paths: character-level backtracking for patterns, a sort for Vault's priority rules.

use arca_core::policy::{Capability, Caps, Policy, PolicySet};
use proptest::prelude::*;

/// Reference match: `+` (a whole segment) consumes any run of non-`/` characters, a trailing
/// `*` anything; everything else matches itself.
fn ref_matches(p: &[u8], s: &[u8]) -> bool {
    match p {
        [] => s.is_empty(),
        [b'*'] => true,
        [b'+', rest @ ..] => {
            (0..=s.len()).take_while(|&i| i == 0 || s[i - 1] != b'/').any(|i| ref_matches(rest, &s[i..]))
        }
        [c, rest @ ..] => s.first() == Some(c) && ref_matches(rest, &s[1..]),
    }
}

/// Sort key: a higher key is a higher priority (Vault's rules, in order).
fn ref_priority(p: &str) -> (usize, bool, std::cmp::Reverse<usize>, usize, String) {
    let first_wildcard = p.find(['+', '*']).unwrap_or(usize::MAX);
    let plus = p.split('/').filter(|s| *s == "+").count();
    (first_wildcard, !p.ends_with('*'), std::cmp::Reverse(plus), p.len(), p.to_string())
}

fn ref_decide(policies: &[Vec<(String, Vec<Capability>)>], path: &str) -> Caps {
    let matching: Vec<&(String, Vec<Capability>)> =
        policies.iter().flatten().filter(|(p, _)| ref_matches(p.as_bytes(), path.as_bytes())).collect();
    if matching.iter().any(|(_, caps)| caps.contains(&Capability::Deny)) {
        return Caps::NONE;
    }
    let Some(best) = matching.iter().map(|(p, _)| ref_priority(p)).max() else { return Caps::NONE };
    matching
        .iter()
        .filter(|(p, _)| ref_priority(p) == best)
        .fold(Caps::NONE, |acc, (_, caps)| acc.union(Caps::of(caps)))
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![Just("a".to_string()), Just("b".to_string()), Just("ab".to_string()), Just("+".to_string())]
}

fn pattern() -> impl Strategy<Value = String> {
    (prop::collection::vec(segment(), 1..4), 0..4u8).prop_map(|(segs, tail)| {
        let mut p = segs.join("/");
        match tail {
            // A trailing glob, either after a '/' or inside the last segment.
            1 => p.push_str("/*"),
            2 if !p.ends_with('+') => p.push('*'),
            _ => {}
        }
        p
    })
}

fn caps() -> impl Strategy<Value = Vec<Capability>> {
    (prop::sample::subsequence(Capability::ALL[..6].to_vec(), 1..4), prop::bool::weighted(0.1)).prop_map(
        |(mut c, deny)| {
            if deny {
                c.push(Capability::Deny);
            }
            c
        },
    )
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("ab"), Just("abc")], 1..5).prop_map(|s| s.join("/"))
}

fn hcl(rules: &[(String, Vec<Capability>)]) -> String {
    rules
        .iter()
        .map(|(p, caps)| {
            let names: Vec<String> = caps.iter().map(|c| format!("{:?}", c.name())).collect();
            format!("path {p:?} {{\n  capabilities = [{}]\n}}\n", names.join(", "))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn matcher_agrees_with_the_reference_model(
        policies in prop::collection::vec(prop::collection::vec((pattern(), caps()), 1..6), 1..4),
        paths in prop::collection::vec(path(), 1..8),
    ) {
        let mut set = PolicySet::default();
        let names: Vec<String> = (0..policies.len()).map(|i| format!("p{i}")).collect();
        for (name, rules) in names.iter().zip(&policies) {
            set.insert(Policy::parse(name, &hcl(rules)).unwrap());
        }
        for path in &paths {
            let got = set.capabilities(names.iter().map(String::as_str), path);
            prop_assert_eq!(got, ref_decide(&policies, path), "path {}\n{:#?}", path, policies);
        }
        // A token naming no policies, or unknown ones, gets nothing.
        prop_assert_eq!(set.capabilities(["unknown"], &paths[0]), Caps::NONE);
    }
}
