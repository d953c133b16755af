//! Snapshot files.
//!
//! Data (what is sent to followers and installed):
//!
//! ```text
//! "ARCASNP1" { [cf u8][key len u32][key][value len u32][value] }* [0xFF][SHA-256 of all before]
//! ```
//!
//! On disk a snapshot is one file, `snapshots/current`, holding `[meta len u32][meta][data]`,
//! written to a temporary name, fsynced, and renamed, so a crash leaves either the old snapshot
//! or the new one. The data holds only state column families, which hold only ciphertext.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use openraft::SnapshotMeta;
use sha2::{Digest, Sha256};

use crate::log_store::{decode, encode};
use crate::Cf;

const MAGIC: &[u8; 8] = b"ARCASNP1";
const END: u8 = 0xFF;
const FILE: &str = "current";

/// Streams state records into the snapshot data format, to a file being written (a build) or
/// to memory (tests), never holding more than a record.
pub(crate) struct Writer<W: Write> {
    out: W,
    sum: Sha256,
}

impl<W: Write> Writer<W> {
    pub(crate) fn new(out: W) -> std::io::Result<Self> {
        let mut w = Writer { out, sum: Sha256::new() };
        w.put(MAGIC)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sum.update(bytes);
        self.out.write_all(bytes)
    }

    pub(crate) fn record(&mut self, cf: Cf, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        self.put(&[cf as u8])?;
        self.put(&(key.len() as u32).to_be_bytes())?;
        self.put(key)?;
        self.put(&(value.len() as u32).to_be_bytes())?;
        self.put(value)
    }

    pub(crate) fn finish(mut self) -> std::io::Result<W> {
        self.put(&[END])?;
        let sum = self.sum.finalize();
        self.out.write_all(&sum)?;
        Ok(self.out)
    }
}

/// One `(cf, key, value)` record of snapshot data.
pub(crate) type Record<'a> = (Cf, &'a [u8], &'a [u8]);

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if rest.len() < n {
        return Err("snapshot record runs past the end of the data".into());
    }
    let (a, b) = rest.split_at(n);
    *rest = b;
    Ok(a)
}

fn take_len(rest: &mut &[u8]) -> Result<usize, String> {
    Ok(u32::from_be_bytes(take(rest, 4)?.try_into().expect("4 bytes")) as usize)
}

/// Checks the framing and checksum of snapshot data and returns its records.
pub(crate) fn parse(data: &[u8]) -> Result<Vec<Record<'_>>, String> {
    if data.len() < MAGIC.len() + 1 + 32 || &data[..MAGIC.len()] != MAGIC {
        return Err("snapshot data does not start with the Arca snapshot header".into());
    }
    let (body, sum) = data.split_at(data.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err("snapshot checksum mismatch: the snapshot was truncated or corrupted in transfer".into());
    }
    let mut rest = &body[MAGIC.len()..];
    let mut out = Vec::new();
    loop {
        let tag = take(&mut rest, 1)?[0];
        if tag == END {
            return if rest.is_empty() { Ok(out) } else { Err("bytes after the snapshot end marker".into()) };
        }
        let cf = Cf::from_u8(tag)
            .filter(|cf| crate::STATE_CFS.contains(cf))
            .ok_or_else(|| format!("snapshot record names unknown column family {tag}"))?;
        let klen = take_len(&mut rest)?;
        let key = take(&mut rest, klen)?;
        let vlen = take_len(&mut rest)?;
        let value = take(&mut rest, vlen)?;
        out.push((cf, key, value));
    }
}

/// A snapshot as stored: its metadata and its data.
pub(crate) type Stored<N> = (SnapshotMeta<u64, N>, Vec<u8>);

/// Bytes of a snapshot file written between two syncs (about 15 ms of the reference disk).
const SYNC_CHUNK: usize = 4 * 1024 * 1024;

/// Who writes a snapshot file: a build of this node's own, or an install of a leader's. openraft
/// runs at most one of each at a time, but a build (slow, in the background) and an install
/// may overlap, so each has a temporary file of its own.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin {
    Build,
    Install,
}

/// Most bytes of a snapshot file's metadata read back.
const MAX_META: usize = 1024 * 1024;

/// Renames into place one at a time (see `save`).
static REPLACING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A snapshot file being written, synced every `SYNC_CHUNK` bytes: one sync of the whole state
/// (tens of MB, every node at once) holds the disk for long enough that the Raft log's syncs,
/// which every request waits for, queue behind it. Between chunks they get their turn.
pub(crate) struct ChunkSynced {
    file: BufWriter<fs::File>,
    unsynced: usize,
}

impl Write for ChunkSynced {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n;
        if self.unsynced >= SYNC_CHUNK {
            self.file.flush()?;
            self.file.get_ref().sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Atomically replaces the node's current snapshot file with `meta` and `data`, unless it
/// already holds a newer snapshot (see `save_streamed`).
pub(crate) fn save<N: openraft::Node>(
    dir: &Path,
    origin: Origin,
    meta: &SnapshotMeta<u64, N>,
    data: &[u8],
) -> std::io::Result<()> {
    save_streamed(dir, origin, meta, |out| out.write_all(data))
}

/// Atomically replaces the node's current snapshot file with `meta` and the data `write_data`
/// writes, unless it already holds a newer snapshot (a build that overlapped an install must
/// not put older state back). A failure leaves the current file as it was.
pub(crate) fn save_streamed<N: openraft::Node>(
    dir: &Path,
    origin: Origin,
    meta: &SnapshotMeta<u64, N>,
    write_data: impl FnOnce(&mut ChunkSynced) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let last = meta.last_log_id;
    let meta = encode(meta);
    let tmp = dir.join(match origin {
        Origin::Build => format!("{FILE}.build.tmp"),
        Origin::Install => format!("{FILE}.install.tmp"),
    });
    let written = (|| {
        let mut out = ChunkSynced { file: BufWriter::with_capacity(256 * 1024, fs::File::create(&tmp)?), unsynced: 0 };
        out.write_all(&(meta.len() as u32).to_be_bytes())?;
        out.write_all(&meta)?;
        write_data(&mut out)?;
        out.flush()?;
        out.file.get_ref().sync_all()
    })();
    if let Err(e) = written {
        // A full disk must not stay full of a half snapshot the size of the state.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let _one = REPLACING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if current_last_log_id::<N>(dir)? > last {
        return fs::remove_file(&tmp);
    }
    fs::rename(&tmp, dir.join(FILE))?;
    // Make the rename itself durable.
    fs::File::open(dir)?.sync_all()
}

/// The node's current snapshot file, opened and read up to its data: its metadata, and the file
/// positioned at the data. `None` if there is none.
fn open_current<N: openraft::Node>(dir: &Path) -> std::io::Result<Option<(SnapshotMeta<u64, N>, fs::File)>> {
    use std::io::Read;
    let corrupt = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("snapshot file: {what}"));
    let mut f = match fs::File::open(dir.join(FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut len = [0u8; 4];
    f.read_exact(&mut len).map_err(|e| corrupt(format!("metadata length: {e}")))?;
    let len = u32::from_be_bytes(len) as usize;
    // Metadata is a log id, a membership and an id: a length past this is a damaged file.
    if len > MAX_META {
        return Err(corrupt("metadata too long".into()));
    }
    let mut meta = vec![0u8; len];
    f.read_exact(&mut meta).map_err(|e| corrupt(format!("truncated metadata: {e}")))?;
    let meta = decode(&meta).map_err(|e| corrupt(format!("metadata: {e}")))?;
    Ok(Some((meta, f)))
}

/// The last log id of the node's current snapshot file, from its header alone.
fn current_last_log_id<N: openraft::Node>(dir: &Path) -> std::io::Result<Option<openraft::LogId<u64>>> {
    Ok(open_current::<N>(dir)?.and_then(|(meta, _)| meta.last_log_id))
}

/// Loads the node's current snapshot file, if it has one.
pub(crate) fn load<N: openraft::Node>(dir: &Path) -> std::io::Result<Option<Stored<N>>> {
    use std::io::Read;
    let Some((meta, mut f)) = open_current(dir)? else { return Ok(None) };
    // Read once, into the one buffer that is sent (not the whole file, then a copy of its data).
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    Ok(Some((meta, data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let mut w = Writer::new(Vec::new()).unwrap();
        w.record(Cf::Kv, b"a", b"1").unwrap();
        w.record(Cf::Audit, b"", b"").unwrap();
        let data = w.finish().unwrap();
        assert_eq!(parse(&data).unwrap(), vec![(Cf::Kv, &b"a"[..], &b"1"[..]), (Cf::Audit, &b""[..], &b""[..])]);
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x01;
            assert!(parse(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(parse(&data[..data.len() - 1]).is_err());
    }

    /// A build that overlapped an install (each with its own temporary file) and finished last
    /// leaves the newer snapshot in place.
    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let meta = |index: u64| SnapshotMeta::<u64, openraft::BasicNode> {
            last_log_id: Some(openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index)),
            last_membership: Default::default(),
            snapshot_id: format!("s{index}"),
        };
        save(dir.path(), Origin::Install, &meta(10), b"newer").unwrap();
        save(dir.path(), Origin::Build, &meta(5), b"older").unwrap();
        let (kept, data) = load::<openraft::BasicNode>(dir.path()).unwrap().unwrap();
        assert_eq!((kept.snapshot_id.as_str(), &data[..]), ("s10", &b"newer"[..]));
        save(dir.path(), Origin::Build, &meta(12), b"newest").unwrap();
        assert_eq!(load::<openraft::BasicNode>(dir.path()).unwrap().unwrap().1, b"newest");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from(FILE)], "no temporary file is left behind");
    }
}
