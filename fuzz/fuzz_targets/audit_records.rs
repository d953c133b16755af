//! Audit records read back from the replicated log.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| arca_core::fuzzing::audit_record(data));
