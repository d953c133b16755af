use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rocksdb::{ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options, DB};
use sha2::{Digest, Sha256};

use crate::wal_sync::WalSync;
use crate::{Error, LogStore, Result, StateMachine, StoreConfig};

/// The column families of a node's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum Cf {
    /// Raft log entries, keyed by big-endian index.
    Logs = 0,
    /// Raft's own durable variables: vote, committed, last purged.
    Raft = 1,
    /// Last applied log id and the membership it carried.
    Meta = 2,
    /// KV secrets: path -> versions (ciphertext).
    Kv = 3,
    /// Cluster system state: init marker, sealed keyring, policies, auth and rotation config.
    Sys = 4,
    /// Tokens by hash.
    Tokens = 5,
    /// The audit trail.
    Audit = 6,
    /// A restore in progress: the records of a backup as they arrive through Raft, swapped
    /// into the data families in one step when the last one is in (see `arca_raft::restore`).
    Staging = 7,
}

/// The vault's data: what a backup carries and what a restore replaces.
pub const DATA_CFS: [Cf; 4] = [Cf::Kv, Cf::Sys, Cf::Tokens, Cf::Audit];
/// The column families that make up the replicated state: what Raft snapshots carry and what
/// the state digest covers (the data, and a restore's staging area, which must reach a node
/// that catches up by snapshot halfway through a restore).
pub const STATE_CFS: [Cf; 5] = [Cf::Kv, Cf::Sys, Cf::Tokens, Cf::Audit, Cf::Staging];
const ALL_CFS: [Cf; 8] = [Cf::Logs, Cf::Raft, Cf::Meta, Cf::Kv, Cf::Sys, Cf::Tokens, Cf::Audit, Cf::Staging];

impl Cf {
    pub fn name(self) -> &'static str {
        match self {
            Cf::Logs => "logs",
            Cf::Raft => "raft",
            Cf::Meta => "meta",
            Cf::Kv => "kv",
            Cf::Sys => "sys",
            Cf::Tokens => "tokens",
            Cf::Audit => "audit",
            Cf::Staging => "staging",
        }
    }

    pub fn from_u8(b: u8) -> Option<Cf> {
        ALL_CFS.into_iter().find(|cf| *cf as u8 == b)
    }
}

/// The node's open database and snapshot directory, shared by the log store, the state machine
/// and readers. The database closes when the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Arc<DB>,
    pub(crate) snapshot_dir: PathBuf,
    pub(crate) observers: Arc<RwLock<Vec<Observer>>>,
    /// The index the applied state is at, published by the state machine once an apply's
    /// observers have run; closed when Raft drops the state machine (set by
    /// `StateMachine::new`).
    pub(crate) applied: Arc<std::sync::OnceLock<tokio::sync::watch::Receiver<u64>>>,
}

/// What one `apply` (or snapshot install) changed in the state column families. `index` is the
/// Raft log index the state is now at: the same on every member for the same change, so it can
/// order and resume change feeds across nodes.
#[derive(Debug)]
pub enum Applied<'a> {
    /// These keys were written or deleted.
    Keys { index: u64, keys: &'a [ChangedKey] },
    /// The whole state was replaced (a snapshot was installed, a backup restored): anything
    /// may have changed.
    Everything { index: u64 },
}

/// One key an applied batch wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedKey {
    pub cf: Cf,
    pub key: Vec<u8>,
    /// The batch left it deleted (otherwise it holds a new value).
    pub deleted: bool,
}

/// Called synchronously after each applied batch is written and before Raft reports it applied,
/// so whatever an observer derives from the state (compiled policies, watch events) is current
/// by the time a reader waits for that index. Observers must be quick and must not block on Raft.
/// The observer gets a reader of the state just written; it must not keep one of its own (the
/// store owns its observers, so a captured reader would keep the database open forever).
pub type Observer = Arc<dyn Fn(&StateReader, &Applied<'_>) + Send + Sync>;

/// Opens (creating if needed) the node's storage under `dir`: `dir/db` for RocksDB and
/// `dir/snapshots` for snapshot files.
pub fn open<C: StoreConfig>(dir: &Path) -> Result<(LogStore<C>, StateMachine<C>)> {
    open_store(dir, None, DirectIo::Auto)
}

/// Like [`open`], for node `me`: as leader it acknowledges its own log entries to Raft before
/// they are synced, and holds back their effects until they are (see `wal_sync`).
pub fn open_node<C: StoreConfig>(dir: &Path, me: u64, direct_io: DirectIo) -> Result<(LogStore<C>, StateMachine<C>)> {
    open_store(dir, Some(me), direct_io)
}

/// Whether RocksDB writes its tables (flushes, compactions) with direct I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirectIo {
    /// Where the filesystem takes it (probed at open).
    #[default]
    Auto,
    /// Never: tables go through the page cache.
    Off,
}

fn open_store<C: StoreConfig>(
    dir: &Path,
    me: Option<u64>,
    direct_io: DirectIo,
) -> Result<(LogStore<C>, StateMachine<C>)> {
    let store = Store::open(dir, me, direct_io)?;
    // What the last process wrote may still sit in the page cache only (it may have
    // acknowledged its own entries before syncing them, then died): make it durable before
    // this process counts on it.
    store.db.flush_wal(true).map_err(|source| Error::Open { path: dir.join("db"), source })?;
    let syncer = WalSync::start(&store.db).map_err(|source| Error::Thread { source })?;
    let sm = StateMachine::new(store.clone(), syncer.unsynced())?;
    let log = LogStore::new(store, syncer, me);
    Ok((log, sm))
}

/// The live write-ahead log's size past which RocksDB flushes the families holding its oldest
/// file (see `Store::open`).
const MAX_LIVE_WAL: u64 = 256 << 20;

/// What a table write hands the disk at once, with direct I/O: what a log sync may have to
/// wait behind.
const DIRECT_WRITE_BUFFER: u64 = 256 << 10;

/// RocksDB's default memtable size, the largest a node uses (see [`memtable_bytes`]).
const MEMTABLE_BYTES: usize = 64 << 20;

/// The memtable size of node `me`: 60-100 % of [`MEMTABLE_BYTES`], different for each id.
///
/// Every member applies the same entries, so with one size for all they filled their memtables
/// together and flushed at the same moment: under 64 audited readers all three nodes started
/// their 250 ms flushes within 0.1 s of each other, every 9-10 s. On a disk, or a volume's I/O
/// budget, that the nodes share, every node's log syncs then queued behind three table writes,
/// and a commit, which needs a majority, behind at least two. With sizes that differ by node the
/// flushes come at different moments (measured, nodes 1-3: 1-3 s apart, each 110-210 ms long
/// instead of 250-330 ms): a follower that flushes is slow alone, and the majority commits
/// without it. The price is a few more, smaller tables to compact.
fn memtable_bytes(me: Option<u64>) -> usize {
    let Some(me) = me else { return MEMTABLE_BYTES };
    // The golden-ratio sequence: ids 1, 2, 3, ... land far apart in [0, 1).
    let spread = (me as f64 * 0.618_033_988_749_895).fract();
    (MEMTABLE_BYTES as f64 * (0.6 + 0.4 * spread)) as usize
}

/// The options of every column family, with memtables of `memtable` bytes.
fn family_options(memtable: usize) -> Options {
    let mut o = Options::default();
    o.set_write_buffer_size(memtable);
    // Nearly all the bytes here are ciphertext, MACs, hashes or random ids (sealed values and
    // audit records, Raft entries carrying them; KV paths are the plaintext exception): LZ4
    // saved nothing (a flushed 64 MB audit table came out at 64 MB, a log table the same) and
    // cost flush CPU. Tables written before this stay LZ4 and still read: each block names its
    // codec.
    o.set_compression_type(DBCompressionType::None);
    // Writes stop when a family has this many memtables unflushed. The WAL cap (`Store::open`)
    // can switch a busy family's memtable while its previous one still waits for the single
    // flush thread: room for that instead of RocksDB's default of two.
    o.set_max_write_buffer_number(4);
    o
}

/// Whether RocksDB's direct writes will work under `dir`. Not every filesystem takes
/// `O_DIRECT`, and some that do need more alignment than the device's logical block, which is
/// what RocksDB aligns to: it writes whole buffers, then pads a table's last write to that
/// block. So the probe writes at the finest alignment RocksDB may use, 512 bytes (offset,
/// length and memory): a filesystem that takes that takes any coarser write too. One that
/// needs 4 KB would also have done on a 4 KB-sector disk; it is left buffered, the safe side
/// (a failed table write stops the database's writes, and its next open, until it is off).
fn probe_direct_io(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const SECTOR: usize = 512;
    const PAGE: usize = 4096;
    // Not through a link someone left at this name: the probe truncates what it opens.
    let probe = dir.join(".direct-io-probe");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
        .open(&probe)
        .and_then(|file| {
            // Memory aligned to a sector and not to a page, inside a larger buffer.
            let buffer = vec![0u8; 3 * PAGE];
            let start = buffer.as_ptr().align_offset(PAGE) + SECTOR;
            file.write_all_at(&buffer[start..start + PAGE], 0)?;
            file.write_all_at(&buffer[start..start + SECTOR], PAGE as u64)
        });
    let _ = std::fs::remove_file(&probe);
    written
}

impl Store {
    /// Opens the database under `dir`, for node `me` if it is a node's (see [`memtable_bytes`]).
    pub(crate) fn open(dir: &Path, me: Option<u64>, direct_io: DirectIo) -> Result<Store> {
        let snapshot_dir = dir.join("snapshots");
        std::fs::create_dir_all(&snapshot_dir)
            .map_err(|source| Error::CreateDir { path: snapshot_dir.clone(), source })?;
        let path = dir.join("db");
        // The database's own options. Each family of ours gets `family_options` below; RocksDB's
        // own default family, which nothing here writes to, is opened with RocksDB's defaults
        // (rust-rocksdb adds it so), whatever these say.
        let memtable = memtable_bytes(me);
        let mut opts = family_options(memtable);
        // Tables (flushes and compactions) bypass the page cache where the filesystem allows.
        // Written through it, a 64 MB table reached the disk in a burst of writeback that the
        // next WAL syncs of every node on the disk queued behind (60-105 ms each, with every
        // flush: the whole of the p99 under sustained audited load). Written directly, a table
        // goes out a buffer at a time, each waited for. ARCHITECTURE.md has the figures.
        std::fs::create_dir_all(&path).map_err(|source| Error::CreateDir { path: path.clone(), source })?;
        let direct = match direct_io {
            DirectIo::Off => Err("turned off in the configuration (disable_direct_io)".to_string()),
            DirectIo::Auto => probe_direct_io(&path).map_err(|e| format!("the filesystem refused a direct write: {e}")),
        };
        if direct.is_ok() {
            opts.set_use_direct_io_for_flush_and_compaction(true);
            // Also the WAL writer's buffer, which only matters to writes larger than it.
            opts.set_writable_file_max_buffer_size(DIRECT_WRITE_BUFFER);
        }
        let why = direct.as_ref().err().map_or("", String::as_str);
        tracing::info!(path = %path.display(), direct_io = direct.is_ok(), why, "opening the node's database");
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Two cores on the reference machine; RocksDB's default of one background job makes
        // flushes wait behind compactions.
        opts.increase_parallelism(2);
        // Without direct I/O, a table being written is handed to the disk a megabyte at a time
        // (background writeback), not all at its final sync, which a log sync on the same disk
        // then queued behind.
        opts.set_bytes_per_sync(1 << 20);
        // Write-ahead log files are reused, not deleted and grown anew. Every commit waits for
        // a WAL sync, and a sync that must also record a grown file size costs a filesystem
        // journal commit on top of the data: on the reference host a 4 KB sync into blocks a
        // file already has took 0.13-0.15 ms alone, into a growing file 0.21-0.25 ms. (RocksDB
        // trims a reused file to its new length when it closes it, so a later, longer use
        // grows it again; and this does not remove the stalls while a flush writes its table.)
        opts.set_recycle_log_file_num(4);
        // A WAL file is freed (and so reusable) only once every family with data in it has
        // flushed. The small families (the committed index and the applied index, tokens) take
        // a write with nearly every entry but fill their memtables rarely, so left alone they
        // pinned every WAL file up to RocksDB's default cap, gigabytes, which a restart also
        // replays. Past this size the families holding the oldest WAL file are flushed.
        opts.set_max_total_wal_size(MAX_LIVE_WAL);
        let cfs = ALL_CFS.iter().map(|cf| ColumnFamilyDescriptor::new(cf.name(), family_options(memtable)));
        let db = DB::open_cf_descriptors(&opts, &path, cfs).map_err(|source| Error::Open { path, source })?;
        Ok(Store { db: Arc::new(db), snapshot_dir, observers: Arc::default(), applied: Arc::default() })
    }

    pub(crate) fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(cf.name()).expect("every column family is created at open")
    }

    /// A read-only view of the applied state, for serving reads.
    pub fn reader(&self) -> StateReader {
        StateReader { store: self.clone() }
    }

    pub(crate) fn notify(&self, applied: &Applied<'_>) {
        let reader = self.reader();
        for observer in self.observers.read().expect("observer lock").iter() {
            observer(&reader, applied);
        }
    }
}

/// Reads applied state. Each `apply` commits atomically, so a read never sees half a command.
#[derive(Clone)]
pub struct StateReader {
    pub(crate) store: Store,
}

impl StateReader {
    /// Registers `observer` to run after every applied batch from now on (see [`Observer`]).
    pub fn observe(&self, observer: Observer) {
        self.store.observers.write().expect("observer lock").push(observer);
    }

    /// Waits until the state is at `index` or later: written, with the observers of every
    /// apply up to it run (compiled policies, keyring), so a read afterwards sees it all.
    /// Wakes only when the applied index moves, where openraft's metrics wake their waiters on
    /// every change (replication progress, heartbeats): with a few dozen requests waiting,
    /// each follower's answer woke them all. `false` once Raft has dropped the state machine
    /// (shutdown, a fatal storage error), or if this store never had one.
    pub async fn wait_applied(&self, index: u64) -> bool {
        let Some(applied) = self.store.applied.get() else { return false };
        let mut applied = applied.clone();
        let reached = applied.wait_for(|&at| at >= index).await.is_ok();
        reached
    }

    /// The Raft log index of the last applied entry, as written with the state it produced (so,
    /// unlike Raft's metrics, never behind what an observer has been told).
    pub fn applied_index(&self) -> Result<u64> {
        let Some(raw) = self.get(Cf::Meta, crate::state_machine::KEY_APPLIED)? else { return Ok(0) };
        let applied: Option<openraft::LogId<u64>> = crate::log_store::decode(&raw)
            .map_err(|e| crate::Error::Corrupt(format!("state machine metadata: {e}")))?;
        Ok(applied.map_or(0, |id| id.index))
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.store.db.get_cf(self.store.cf(cf), key)?)
    }

    /// All `(key, value)` pairs whose key starts with `prefix`, in key order, at most `limit`.
    pub fn scan_prefix(&self, cf: Cf, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_from(cf, prefix, prefix, limit)
    }

    /// Like [`StateReader::scan_prefix`], starting at `start` (a key at or after `prefix`).
    pub fn scan_from(&self, cf: Cf, start: &[u8], prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let iter = self.store.db.iterator_cf(self.store.cf(cf), IteratorMode::From(start, Direction::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Bytes each column family holds, as `(name, SST files on disk, memtables in memory)`,
    /// for metrics.
    pub fn sizes(&self) -> Result<Vec<(&'static str, u64, u64)>> {
        ALL_CFS
            .iter()
            .map(|cf| {
                let handle = self.store.cf(*cf);
                let prop =
                    |name: &str| -> Result<u64> { Ok(self.store.db.property_int_value_cf(handle, name)?.unwrap_or(0)) };
                Ok((cf.name(), prop("rocksdb.total-sst-files-size")?, prop("rocksdb.size-all-mem-tables")?))
            })
            .collect()
    }

    /// SHA-256 over every key and value of every state column family, in order. Two nodes that
    /// applied the same log hold the same digest.
    pub fn digest(&self) -> Result<[u8; 32]> {
        let snap = self.store.db.snapshot();
        let mut h = Sha256::new();
        for cf in STATE_CFS {
            h.update([cf as u8]);
            for item in snap.iterator_cf(self.store.cf(cf), IteratorMode::Start) {
                let (k, v) = item?;
                h.update((k.len() as u64).to_be_bytes());
                h.update(&k);
                h.update((v.len() as u64).to_be_bytes());
                h.update(&v);
            }
        }
        Ok(h.finalize().into())
    }

    /// Flushes every column family's memtable to SST files, so the on-disk files hold
    /// everything (before a file-level backup, and in tests that inspect the files).
    pub fn flush(&self) -> Result<()> {
        for cf in ALL_CFS {
            self.store.db.flush_cf(self.store.cf(cf))?;
        }
        Ok(())
    }

    /// Number of keys in a column family (for tests and status output).
    pub fn count(&self, cf: Cf) -> Result<usize> {
        let mut n = 0;
        for item in self.store.db.iterator_cf(self.store.cf(cf), IteratorMode::Start) {
            item?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The files in a store's database directory whose names `pick` takes.
    fn db_files(dir: &Path, pick: impl Fn(&str) -> bool) -> Vec<PathBuf> {
        std::fs::read_dir(dir.join("db"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| pick(&p.file_name().unwrap().to_string_lossy()))
            .collect()
    }

    /// The write-ahead log files in a store's database directory, with their inodes.
    fn wal_files(dir: &Path) -> BTreeMap<String, u64> {
        use std::os::unix::fs::MetadataExt;
        db_files(dir, |name| name.ends_with(".log"))
            .into_iter()
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p.metadata().unwrap().ino()))
            .collect()
    }

    /// A node under sustained load writes the Raft log and the audit trail in bulk, and the
    /// committed and applied indexes with nearly every entry. The small writes must not keep
    /// every WAL file alive: the disk would fill with gigabytes of WAL that a restart replays.
    /// A freed file is reused, not deleted.
    #[test]
    fn small_writes_with_every_entry_do_not_pin_the_write_ahead_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None, DirectIo::Auto).unwrap();
        let first = wal_files(dir.path());
        assert_eq!(first.len(), 1, "a new store has one WAL file: {first:?}");
        let (first_name, first_inode) = first.into_iter().next().unwrap();
        // A second name for the file keeps its inode allocated if RocksDB deletes it, so no
        // new file can take over its number and pass for the reused one.
        std::fs::hard_link(dir.path().join("db").join(&first_name), dir.path().join("first-wal")).unwrap();
        let entry = vec![0x5a; 1 << 20];
        let write = |from: u64, to: u64| {
            for index in from..to {
                store.db.put_cf(store.cf(Cf::Logs), index.to_be_bytes(), &entry).unwrap();
                store.db.put_cf(store.cf(Cf::Meta), b"applied", index.to_be_bytes()).unwrap();
            }
        };
        // Past the cap: the families holding the first file are flushed in the background
        // (waited for here, without asking for any flush of our own), which frees the file.
        let past_cap = (MAX_LIVE_WAL >> 20) + 16;
        write(0, past_cap);
        store.db.wait_for_compact(&rocksdb::WaitForCompactOptions::default()).unwrap();
        // More than a memtable more: the next WAL file is the freed one, renamed.
        write(past_cap, past_cap + 80);
        let now = wal_files(dir.path());
        assert!(!now.contains_key(&first_name), "the first WAL file {first_name} is still kept: {now:?}");
        assert!(now.values().any(|inode| *inode == first_inode), "the first WAL file was deleted, not reused: {now:?}");
        let last = past_cap + 79;
        let reader = store.reader();
        assert_eq!(reader.get(Cf::Meta, b"applied").unwrap(), Some(last.to_be_bytes().to_vec()));
        assert_eq!(reader.get(Cf::Logs, &0u64.to_be_bytes()).unwrap(), Some(entry.clone()));
        // Reopened, with the newest writes in a reused file: everything is still there.
        drop((reader, store));
        let store = Store::open(dir.path(), None, DirectIo::Auto).unwrap();
        let reader = store.reader();
        assert_eq!(reader.get(Cf::Meta, b"applied").unwrap(), Some(last.to_be_bytes().to_vec()));
        assert_eq!(reader.get(Cf::Logs, &last.to_be_bytes()).unwrap(), Some(entry));
        assert_eq!(reader.count(Cf::Logs).unwrap() as u64, last + 1);
    }

    /// How many of `file`'s pages are in the page cache.
    fn resident_pages(file: &Path) -> usize {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(file).unwrap();
        let len = f.metadata().unwrap().len() as usize;
        let mut pages = vec![0u8; len.div_ceil(4096)];
        // SAFETY: a read-only mapping of a file this test owns, unmapped before returning;
        // `mincore` only reports which of its pages are resident, one byte per page.
        unsafe {
            let addr = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0);
            assert_ne!(addr, libc::MAP_FAILED);
            assert_eq!(libc::mincore(addr, len, pages.as_mut_ptr()), 0);
            libc::munmap(addr, len);
        }
        pages.iter().filter(|b| **b & 1 == 1).count()
    }

    /// The options file RocksDB keeps of the database it opened last.
    fn recorded_options(dir: &Path) -> String {
        let options = db_files(dir, |name| name.starts_with("OPTIONS-"))
            .into_iter()
            .max()
            .expect("RocksDB writes an options file at open");
        std::fs::read_to_string(options).unwrap()
    }

    /// What RocksDB recorded of its table writes in the options file it keeps.
    fn direct_io_recorded(dir: &Path) -> bool {
        recorded_options(dir).contains("use_direct_io_for_flush_and_compaction=true")
    }

    /// Members of a cluster flush their memtables at different moments, so a flush slows one
    /// member at a time and the majority commits without it: each node's database, as RocksDB
    /// recorded it, has memtables of a size of its own, in every column family, and none
    /// larger than RocksDB's default. A store that is not a node's keeps the default.
    #[test]
    fn each_member_fills_memtables_of_a_size_of_its_own() {
        let sizes = |me: Option<u64>| -> Vec<usize> {
            let dir = tempfile::tempdir().unwrap();
            drop(Store::open(dir.path(), me, DirectIo::Auto).unwrap());
            let options = recorded_options(dir.path());
            // Each family's section opens with `[CFOptions "name"]`; RocksDB's own default
            // family, which nothing here writes to, keeps its default.
            let mut family = String::new();
            let mut sizes = Vec::new();
            for line in options.lines().map(str::trim) {
                if let Some(name) = line.strip_prefix("[CFOptions \"") {
                    family = name.trim_end_matches("\"]").to_string();
                } else if let Some(size) = line.strip_prefix("write_buffer_size=") {
                    if family != "default" {
                        sizes.push(size.parse().unwrap());
                    }
                }
            }
            assert_eq!(sizes.len(), ALL_CFS.len(), "{options}");
            sizes
        };
        assert!(sizes(None).iter().all(|s| *s == MEMTABLE_BYTES));
        let mut members = Vec::new();
        for me in 1..=5 {
            let of_me = sizes(Some(me));
            assert!(of_me.iter().all(|s| *s == of_me[0]), "node {me}: one size for all families: {of_me:?}");
            let size = of_me[0];
            assert!((MEMTABLE_BYTES * 6 / 10..=MEMTABLE_BYTES).contains(&size), "node {me}: {size}");
            for (other, theirs) in &members {
                let (small, large) = (size.min(*theirs) as f64, size.max(*theirs) as f64);
                assert!(large / small > 1.05, "nodes {me} and {other} flush together: {size} and {theirs} bytes");
            }
            members.push((me, size));
        }
    }

    /// Writes two tables' worth of values, flushing each, compacts them, reopens the store and
    /// reads them back; returns the first table's size and how many of its bytes were in the
    /// page cache right after its flush.
    fn flush_compact_reopen(dir: &Path, direct_io: DirectIo) -> (u64, usize) {
        let store = Store::open(dir, None, direct_io).unwrap();
        let value = |i: u64| vec![(i % 251) as u8; 4000 + (i % 97) as usize];
        let write = |from: u64, to: u64| {
            for i in from..to {
                store.db.put_cf(store.cf(Cf::Audit), i.to_be_bytes(), value(i)).unwrap();
            }
            store.db.flush_cf(store.cf(Cf::Audit)).unwrap();
        };
        write(0, 2000);
        let tables = db_files(dir, |name| name.ends_with(".sst"));
        assert_eq!(tables.len(), 1, "one flushed table: {tables:?}");
        let size = std::fs::metadata(&tables[0]).unwrap().len();
        assert!(size > 7 << 20, "the table holds the values: {size} bytes");
        let cached = resident_pages(&tables[0]) * 4096;
        write(2000, 4000);
        store.db.compact_range_cf(store.cf(Cf::Audit), None::<&[u8]>, None::<&[u8]>);
        drop(store);
        let store = Store::open(dir, None, direct_io).unwrap();
        let reader = store.reader();
        assert_eq!(reader.count(Cf::Audit).unwrap(), 4000);
        for i in [0u64, 1, 1999, 2000, 3999] {
            assert_eq!(reader.get(Cf::Audit, &i.to_be_bytes()).unwrap(), Some(value(i)));
        }
        (size, cached)
    }

    /// Where the filesystem takes direct I/O, flushed and compacted tables bypass the page
    /// cache (so their writeback cannot queue ahead of a log sync); elsewhere they are
    /// buffered. Either way everything written reads back after a reopen.
    #[test]
    fn tables_are_written_with_direct_io_where_the_filesystem_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(probe_direct_io(&dir.path().join("missing")).is_err(), "a directory that is not there");
        let supported = probe_direct_io(dir.path());
        let (size, cached) = flush_compact_reopen(dir.path(), DirectIo::Auto);
        assert_eq!(direct_io_recorded(dir.path()), supported.is_ok(), "probe: {supported:?}");
        // tmpfs takes O_DIRECT (Linux 6.6 on) but its files live in the page cache.
        // SAFETY: `statfs` writes into the zeroed struct it is given; the path is NUL-terminated.
        let tmpfs = unsafe {
            let path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
            let mut fs: libc::statfs = std::mem::zeroed();
            libc::statfs(path.as_ptr(), &mut fs) == 0 && fs.f_type == libc::TMPFS_MAGIC
        };
        match supported {
            // Written through the page cache, every page of it would still be there. A few
            // are (the table's footer and index, read back when it is opened).
            Ok(()) if !tmpfs => assert!(cached < (size / 8) as usize, "{cached} of {size} bytes are cached"),
            _ => eprintln!("direct I/O not checked here (tmpfs: {tmpfs}, probe: {supported:?})"),
        }
    }

    /// Turned off, tables go through the page cache whatever the filesystem.
    #[test]
    fn direct_io_turned_off_writes_tables_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (size, cached) = flush_compact_reopen(dir.path(), DirectIo::Off);
        assert!(!direct_io_recorded(dir.path()));
        assert!(cached > (size / 2) as usize, "{cached} of {size} bytes are cached");
    }
}
