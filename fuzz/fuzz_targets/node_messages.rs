//! Node-to-node messages as the Raft service decodes them (append, vote, snapshot chunk,
//! forwarded request and its reply), as they arrive from a peer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arca_raft::fuzzing::node_message(data));
