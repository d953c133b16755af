//! A Raft snapshot's data as a peer installs it on this node.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arca_storage::fuzzing::snapshot(data));
