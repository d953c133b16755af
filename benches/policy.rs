//! Cost of an authorization decision: the compiled policy matcher against the simplest possible
//! in-memory check, a hash-map lookup of the exact path, measured in the same run.
//!
//! The token holds 5 policies of 20 rules each (exact paths, `*` globs and `+` segments, as in
//! real deployments), 100 rules in all; the path matches a glob rule, with a more specific exact
//! rule and a `+` rule competing.

use std::collections::HashMap;

use arca_core::policy::{Caps, Policy, PolicySet};
use criterion::{criterion_group, criterion_main, Criterion};

fn policy_text(i: usize) -> String {
    (0..20)
        .map(|r| match r % 4 {
            0 => format!("path \"secret/data/team{i}/app{r}/*\" {{ capabilities = [\"read\", \"list\"] }}\n"),
            1 => format!("path \"secret/data/team{i}/app{r}/config\" {{ capabilities = [\"read\"] }}\n"),
            2 => format!("path \"secret/data/+/app{r}/shared\" {{ capabilities = [\"read\"] }}\n"),
            _ => format!("path \"auth/approle/role/team{i}-{r}\" {{ capabilities = [\"read\", \"update\"] }}\n"),
        })
        .collect()
}

fn policy(c: &mut Criterion) {
    let mut set = PolicySet::default();
    let names: Vec<String> = (0..5).map(|i| format!("team{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        set.insert(Policy::parse(name, &policy_text(i)).unwrap());
    }
    let path = "secret/data/team3/app8/db";
    let exact: HashMap<String, Caps> = [(path.to_string(), Caps(2))].into();
    let mut group = c.benchmark_group("authorize");
    group.bench_function("hashmap_exact_lookup_baseline", |b| {
        b.iter(|| exact.get(std::hint::black_box(path)).copied().unwrap_or_default())
    });
    group.bench_function("compiled_policies_100_rules", |b| {
        b.iter(|| set.capabilities(names.iter().map(String::as_str), std::hint::black_box(path)))
    });
    group.finish();
    assert!(set.capabilities(names.iter().map(String::as_str), path).0 != 0, "the benchmarked path is granted");
}

criterion_group!(benches, policy);
criterion_main!(benches);
