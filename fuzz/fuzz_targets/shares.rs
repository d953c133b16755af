//! Unseal and rekey shares as an operator (or anyone reaching an unsealing node) types them:
//! parsing and collecting must refuse every malformed input with an error, never panic.
#![no_main]

use arca_crypto::shamir::{Share, ShareCollector, ShareConfig, ShareSetId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Share::parse(&text);
    // Several shares in a row against one configuration, as an unseal ceremony takes them.
    let mut collector = ShareCollector::new(ShareConfig { set: ShareSetId([7; 8]), threshold: 2, shares: 3 });
    for line in text.lines().take(8) {
        if collector.add(line).is_ok() && collector.is_complete() {
            let _ = collector.recover(data);
            break;
        }
    }
});
