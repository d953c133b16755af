//! A backup file as an operator uploads it for a restore (read from disk, as the server does).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("arca-fuzz-backup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("upload.snap");
    std::fs::write(&file, data).unwrap();
    arca_storage::fuzzing::backup(&file);
});
