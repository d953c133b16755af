//! HCL policy documents as an operator (or a token with `sys/policy` rights) writes them, and
//! the compiled rules' decisions for paths taken from the same input.
#![no_main]

use arca_core::policy::{Policy, PolicySet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The last line doubles as a path to decide on, so matching sees the patterns' own shapes.
    let path = text.lines().last().unwrap_or("secret/data/app");
    if let Ok(policy) = Policy::parse("fuzz", text) {
        let mut set = PolicySet::default();
        set.insert(policy);
        let _ = set.capabilities(["fuzz"], path);
        let _ = set.capabilities(["fuzz"], "secret/data/app");
    }
});
