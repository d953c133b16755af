//! Backup files: a consistent, point-in-time copy of the vault's data for disaster recovery
//! (`arca operator snapshot save`, Vault's `sys/storage/raft/snapshot`).
//!
//! Why one file of about 500 lines: the format's writer and its reader check each other's every
//! field, and read best side by side (400 lines of code, 110 of tests).
//!
//! A backup is a gzip-compressed tar archive, so that standard tools can look into it and
//! Vault's clients accept it (`bao operator raft snapshot save` insists on a gzipped tar whose
//! last member is `SHA256SUMS.sealed`). Its members, in this order:
//!
//! | member | contents |
//! |---|---|
//! | `meta.json` | [`BackupMeta`]: the cluster, keyring term and Raft index it was taken at, and the size and SHA-256 of `state.bin` |
//! | `state.bin` | every record of the data families, `[cf u8][key len u32][key][value len u32][value]`, in (family, key) order |
//! | `SHA256SUMS` | `sha256sum`-style lines for the two members above |
//! | `SHA256SUMS.sealed` | `SHA256SUMS` sealed by the caller (the keyring), so a cluster can tell its own backups |
//!
//! The records are what the state families hold: barrier ciphertext, one-way hashes and the
//! non-secret init record. A backup therefore holds no plaintext secret, token or key; it is
//! opened only by unsealing a cluster restored from it with the shares of the cluster that
//! made it.
//!
//! Nothing here holds a backup in memory whole: [`export`] streams from a RocksDB snapshot
//! (read twice, once to size and hash `state.bin` for its tar header, once to write it), and
//! [`inspect`] and [`read_records`] stream from the file.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use rocksdb::IteratorMode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::log_store::decode;
use crate::state_machine::KEY_APPLIED;
use crate::{Cf, Error, Result, StateReader, DATA_CFS};

/// The version of the format described in the module comment.
pub const FORMAT: u32 = 1;
const META: &str = "meta.json";
const STATE: &str = "state.bin";
const SUMS: &str = "SHA256SUMS";
const SEALED: &str = "SHA256SUMS.sealed";
/// Bounds on the small members, so a hostile file cannot make a reader allocate much.
const MAX_SMALL_MEMBER: u64 = 64 * 1024;

/// What a backup says about itself (`meta.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMeta {
    pub format: u32,
    /// The cluster that made it (the caller's name for it).
    pub cluster_id: String,
    /// The keyring term that was active when it was made.
    pub keyring_term: u32,
    /// The Raft log index (and its term) the data is the state after.
    pub index: u64,
    pub raft_term: u64,
    /// When, and by which node, it was taken.
    pub created_ms: i64,
    pub node: u64,
    /// The Arca version that wrote it.
    pub version: String,
    pub records: u64,
    pub state_bytes: u64,
    /// Hex SHA-256 of `state.bin`.
    pub state_sha256: String,
}

/// One record of the data families.
pub type Record = (Cf, Vec<u8>, Vec<u8>);

fn invalid(message: impl Into<String>) -> Error {
    Error::Backup(message.into())
}

fn io_err(e: io::Error) -> Error {
    Error::BackupIo(e)
}

/// The bytes of one record in `state.bin`.
fn frame(cf: Cf, key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(cf as u8);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

/// SHA-256 and count over records in `state.bin` framing: what `meta.json` states, and what a
/// restore's commit checks the staged records against.
#[derive(Default)]
pub struct RecordDigest {
    hasher: Sha256,
    pub records: u64,
    pub bytes: u64,
    buf: Vec<u8>,
}

impl RecordDigest {
    pub fn add(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.buf.clear();
        frame(cf, key, value, &mut self.buf);
        self.hasher.update(&self.buf);
        self.records += 1;
        self.bytes += self.buf.len() as u64;
    }

    pub fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}

/// Writes a backup of the state `reader` reads, as of one RocksDB snapshot, to `out`.
/// `meta` supplies the caller's fields (cluster, keyring term, node, time, version); the rest
/// is filled in and returned. `seal` turns the `SHA256SUMS` text into its sealed form.
pub fn export(
    reader: &StateReader,
    mut meta: BackupMeta,
    seal: impl FnOnce(&[u8]) -> std::result::Result<Vec<u8>, String>,
    out: impl Write,
) -> Result<BackupMeta> {
    let store = &reader.store;
    let snap = store.db.snapshot();
    let applied: Option<openraft::LogId<u64>> = match snap.get_cf(store.cf(Cf::Meta), KEY_APPLIED)? {
        Some(raw) => decode(&raw).map_err(|e| Error::Corrupt(format!("state machine metadata: {e}")))?,
        None => None,
    };
    let records = || {
        DATA_CFS.into_iter().flat_map(|cf| {
            snap.iterator_cf(store.cf(cf), IteratorMode::Start).map(move |item| item.map(|(k, v)| (cf, k, v)))
        })
    };
    let mut digest = RecordDigest::default();
    for item in records() {
        let (cf, k, v) = item?;
        digest.add(cf, &k, &v);
    }
    meta.format = FORMAT;
    meta.index = applied.map_or(0, |id| id.index);
    meta.raft_term = applied.map_or(0, |id| id.leader_id.term);
    meta.records = digest.records;
    meta.state_bytes = digest.bytes;
    meta.state_sha256 = hex(&digest.finish());
    let meta_json = serde_json::to_vec_pretty(&meta).map_err(|e| invalid(e.to_string()))?;
    let sums = sums_text(&meta_json, &meta.state_sha256);

    let mut tar = tar::Builder::new(GzEncoder::new(out, flate2::Compression::fast()));
    let mut append = |name: &str, size: u64, data: &mut dyn Read| -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o600);
        header.set_mtime((meta.created_ms / 1000).max(0) as u64);
        header.set_cksum();
        tar.append_data(&mut header, name, data)
    };
    append(META, meta_json.len() as u64, &mut meta_json.as_slice()).map_err(io_err)?;
    let mut state = RecordReader { records: Box::new(records()), buf: Vec::new(), pos: 0 };
    append(STATE, meta.state_bytes, &mut (&mut state).take(meta.state_bytes)).map_err(io_err)?;
    append(SUMS, sums.len() as u64, &mut sums.as_bytes()).map_err(io_err)?;
    let sealed = seal(sums.as_bytes()).map_err(|e| invalid(format!("sealing SHA256SUMS failed: {e}")))?;
    append(SEALED, sealed.len() as u64, &mut sealed.as_slice()).map_err(io_err)?;
    let mut gz = tar.into_inner().map_err(io_err)?;
    gz.try_finish().map_err(io_err)?;
    gz.finish().map_err(io_err)?.flush().map_err(io_err)?;
    Ok(meta)
}

/// A record as a RocksDB iterator yields it.
type RawRecord = std::result::Result<(Cf, Box<[u8]>, Box<[u8]>), rocksdb::Error>;

/// Presents records as the bytes of `state.bin`.
struct RecordReader<'a> {
    records: Box<dyn Iterator<Item = RawRecord> + 'a>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for RecordReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.records.next() {
                None => return Ok(0),
                Some(Err(e)) => return Err(io::Error::other(e)),
                Some(Ok((cf, k, v))) => {
                    self.buf.clear();
                    self.pos = 0;
                    frame(cf, &k, &v, &mut self.buf);
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sums_text(meta_json: &[u8], state_sha256: &str) -> String {
    format!("{}  {META}\n{state_sha256}  {STATE}\n", hex(&Sha256::digest(meta_json)))
}

/// A backup file that passed [`inspect`].
#[derive(Debug, Clone)]
pub struct Inspected {
    pub meta: BackupMeta,
    /// The `SHA256SUMS` text and its sealed form, for the caller to check the seal.
    pub sums: Vec<u8>,
    pub sealed: Vec<u8>,
}

/// Reads a backup file through and checks everything that can be checked without keys: the
/// archive's members and their order, every record's framing and family, the record order,
/// the sizes and checksums `meta.json` and `SHA256SUMS` state, and the gzip trailer (so a
/// truncated file fails). Nothing is kept in memory but the small members.
pub fn inspect(path: &Path) -> Result<Inspected> {
    inspect_finding(path, None).map(|(inspected, _)| inspected)
}

/// [`inspect`], also returning the value of the record at `want` (family, key) if the backup
/// has it: found in the same pass, so the file is read once.
pub fn inspect_finding(path: &Path, want: Option<(Cf, &[u8])>) -> Result<(Inspected, Option<Vec<u8>>)> {
    let mut found = None;
    let file = File::open(path).map_err(io_err)?;
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    // Raw entries: extension headers (PAX, GNU long names) are not interpreted, so one cannot
    // make this read a huge header into memory; a backup has none, and any is refused below.
    let mut entries = archive.entries().map_err(not_backup)?.raw(true);
    let mut next = |name: &str| -> Result<tar::Entry<'_, GzDecoder<BufReader<File>>>> {
        let entry = entries
            .next()
            .ok_or_else(|| invalid(format!("the backup ends before its {name} member: the file is truncated")))?
            .map_err(not_backup)?;
        let found = entry.path().map_err(not_backup)?.to_string_lossy().into_owned();
        if found != name || !entry.header().entry_type().is_file() {
            return Err(invalid(format!("expected the file {name}, found {found:?}: not an Arca backup")));
        }
        Ok(entry)
    };
    let meta_json = read_small(&mut next(META)?, META)?;
    let meta: BackupMeta = serde_json::from_slice(&meta_json)
        .map_err(|e| invalid(format!("meta.json is not a backup description: {e}")))?;
    if meta.format != FORMAT {
        return Err(invalid(format!(
            "backup format {} is not one this version reads (format {FORMAT}): restore it with the Arca version that made it ({})",
            meta.format, meta.version
        )));
    }
    let mut state = next(STATE)?;
    let mut digest = RecordDigest::default();
    let mut hasher = Sha256::new();
    let mut last: Option<(Cf, Vec<u8>)> = None;
    {
        let mut tee = HashingReader { inner: &mut state, hasher: &mut hasher };
        parse_records(&mut tee, |cf, key, value| {
            let position = (cf, key.to_vec());
            if last.as_ref().is_some_and(|l| *l >= position) {
                return Err(invalid("state.bin records are out of order or repeated"));
            }
            last = Some(position);
            if found.is_none() && want.is_some_and(|(c, k)| c == cf && k == key) {
                found = Some(value.to_vec());
            }
            digest.add(cf, key, value);
            Ok(())
        })?;
    }
    let state_sha256 = hex(&hasher.finalize());
    let (records, bytes) = (digest.records, digest.bytes);
    if records != meta.records || bytes != meta.state_bytes || state_sha256 != meta.state_sha256 {
        return Err(invalid(format!(
            "state.bin holds {records} records in {bytes} bytes (SHA-256 {state_sha256}), but meta.json says {} in {} \
             ({}): the backup was altered or damaged",
            meta.records, meta.state_bytes, meta.state_sha256
        )));
    }
    drop(state);
    let sums = read_small(&mut next(SUMS)?, SUMS)?;
    if sums != sums_text(&meta_json, &state_sha256).as_bytes() {
        return Err(invalid("SHA256SUMS does not match the backup's members: the backup was altered or damaged"));
    }
    let sealed = read_small(&mut next(SEALED)?, SEALED)?;
    if sealed.is_empty() {
        return Err(invalid("SHA256SUMS.sealed is empty: the backup is incomplete"));
    }
    if let Some(extra) = entries.next() {
        let name = extra.map_err(not_backup)?.path().map_err(not_backup)?.to_string_lossy().into_owned();
        return Err(invalid(format!("unexpected member {name:?} after SHA256SUMS.sealed")));
    }
    // The gzip trailer (CRC and length) is checked only once the stream is read to its end.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(not_backup)?;
    Ok((Inspected { meta, sums, sealed }, found))
}

/// Streams the records of a backup file that passed [`inspect`] in chunks of about
/// `chunk_bytes`, in file order.
pub fn read_records(path: &Path, chunk_bytes: usize, mut f: impl FnMut(Vec<Record>) -> Result<()>) -> Result<()> {
    let file = File::open(path).map_err(io_err)?;
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    for entry in archive.entries().map_err(not_backup)?.raw(true) {
        let mut entry = entry.map_err(not_backup)?;
        if entry.path().map_err(not_backup)?.to_str() != Some(STATE) {
            continue;
        }
        let (mut chunk, mut size) = (Vec::new(), 0);
        parse_records(&mut entry, |cf, key, value| {
            let bytes = key.len() + value.len() + 9;
            // Sent before it would pass `chunk_bytes`: a chunk is at most that or one record.
            if size + bytes > chunk_bytes && !chunk.is_empty() {
                size = 0;
                f(std::mem::take(&mut chunk))?;
            }
            size += bytes;
            chunk.push((cf, key.to_vec(), value.to_vec()));
            Ok(())
        })?;
        if !chunk.is_empty() {
            f(chunk)?;
        }
        return Ok(());
    }
    Err(invalid("the backup has no state.bin member"))
}

/// The value of one record of a backup (the init record, say), if it has it; the file is
/// checked as [`inspect`] checks it.
pub fn find_record(path: &Path, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
    inspect_finding(path, Some((cf, key))).map(|(_, found)| found)
}

fn not_backup(e: io::Error) -> Error {
    invalid(format!("not a readable Arca backup: the file is truncated, damaged, or not a gzipped tar archive ({e})"))
}

fn read_small(entry: &mut impl Read, name: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    entry.take(MAX_SMALL_MEMBER + 1).read_to_end(&mut out).map_err(not_backup)?;
    if out.len() as u64 > MAX_SMALL_MEMBER {
        return Err(invalid(format!("{name} is over {MAX_SMALL_MEMBER} bytes: not an Arca backup")));
    }
    Ok(out)
}

/// Calls `f` with each record of `state.bin` framing read from `r` to its end. A record
/// cut short, or naming a family that is not data, fails.
fn parse_records(r: &mut impl Read, mut f: impl FnMut(Cf, &[u8], &[u8]) -> Result<()>) -> Result<()> {
    let (mut key, mut value) = (Vec::new(), Vec::new());
    loop {
        let mut tag = [0u8; 1];
        match r.read(&mut tag) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(not_backup(e)),
        }
        let cf = Cf::from_u8(tag[0])
            .filter(|cf| DATA_CFS.contains(cf))
            .ok_or_else(|| invalid(format!("state.bin names column family {}, which is not vault data", tag[0])))?;
        read_field(r, &mut key)?;
        read_field(r, &mut value)?;
        f(cf, &key, &value)?;
    }
}

/// Largest key or value a record may have.
/// Larger than any record Arca stores (a secret version is at most 512 KiB), and small enough
/// that a chunk of records (see [`read_records`]) always fits one Raft message.
const MAX_FIELD: usize = 4 * 1024 * 1024;

fn read_field(r: &mut impl Read, out: &mut Vec<u8>) -> Result<()> {
    let cut = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => invalid("a record in state.bin is cut short: the backup is truncated"),
        _ => not_backup(e),
    };
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(cut)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FIELD {
        return Err(invalid(format!("a record in state.bin claims {len} bytes: the backup is damaged")));
    }
    out.clear();
    out.resize(len, 0);
    r.read_exact(out).map_err(cut)
}

struct HashingReader<'a, R> {
    inner: &'a mut R,
    hasher: &'a mut Sha256,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    fn meta() -> BackupMeta {
        BackupMeta {
            format: 0,
            cluster_id: "c1".into(),
            keyring_term: 2,
            index: 0,
            raft_term: 0,
            created_ms: 1_700_000_000_000,
            node: 1,
            version: "test".into(),
            records: 0,
            state_bytes: 0,
            state_sha256: String::new(),
        }
    }

    /// A store with `n` records per data family (and one in `staging`, which a backup skips).
    fn store(dir: &Path, n: usize) -> Store {
        let store = Store::open(dir, None, crate::DirectIo::Auto).unwrap();
        for cf in DATA_CFS {
            for i in 0..n {
                store.db.put_cf(store.cf(cf), format!("k{i:05}"), vec![i as u8; 300]).unwrap();
            }
        }
        store.db.put_cf(store.cf(Cf::Staging), b"x", b"y").unwrap();
        store
    }

    fn save(store: &Store, path: &Path) -> BackupMeta {
        let file = File::create(path).unwrap();
        export(&store.reader(), meta(), |sums| Ok([b"sealed:", sums].concat()), file).unwrap()
    }

    #[test]
    fn a_backup_reads_back_record_for_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir.path().join("a"), 500);
        let path = dir.path().join("backup.tar.gz");
        let written = save(&store, &path);
        assert_eq!(written.records, 2000);
        let seen = inspect(&path).unwrap();
        assert_eq!(seen.meta, written);
        assert!(seen.sealed.starts_with(b"sealed:") && seen.sealed.ends_with(&seen.sums));
        let mut all = Vec::new();
        assert_eq!(find_record(&path, Cf::Sys, b"k00003").unwrap(), Some(vec![3u8; 300]));
        assert_eq!(find_record(&path, Cf::Sys, b"absent").unwrap(), None);
        read_records(&path, 64 * 1024, |chunk| {
            assert!(!chunk.is_empty());
            assert!(chunk.iter().map(|(_, k, v)| k.len() + v.len() + 9).sum::<usize>() <= 64 * 1024);
            all.extend(chunk);
            Ok(())
        })
        .unwrap();
        assert_eq!(all.len(), 2000);
        assert!(all.iter().all(|(cf, _, v)| DATA_CFS.contains(cf) && v.len() == 300));
        let mut digest = RecordDigest::default();
        all.iter().for_each(|(cf, k, v)| digest.add(*cf, k, v));
        assert_eq!(hex(&digest.finish()), written.state_sha256);
    }

    #[test]
    fn truncated_or_altered_backups_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir.path().join("a"), 200);
        let path = dir.path().join("backup.tar.gz");
        save(&store, &path);
        let good = std::fs::read(&path).unwrap();
        let bad = dir.path().join("bad");
        for cut in [good.len() - 1, good.len() - 9, good.len() / 2, 100, 0] {
            std::fs::write(&bad, &good[..cut]).unwrap();
            let e = inspect(&bad).unwrap_err();
            assert!(matches!(e, Error::Backup(_)), "cut at {cut}: {e}");
        }
        // Flip a byte in the middle of the compressed stream: gzip's CRC or the checksums catch it.
        for at in [good.len() / 3, good.len() / 2, good.len() - 40] {
            let mut altered = good.clone();
            altered[at] ^= 0x40;
            std::fs::write(&bad, &altered).unwrap();
            assert!(inspect(&bad).is_err(), "a flipped byte at {at} went unnoticed");
        }
        std::fs::write(&bad, b"not a backup at all").unwrap();
        let e = inspect(&bad).unwrap_err().to_string();
        assert!(e.contains("not a readable Arca backup"), "{e}");
    }

    #[test]
    fn a_consistent_rebuilt_archive_with_other_records_is_refused() {
        // Someone rewrites state.bin and recompresses: meta.json's checksum no longer matches.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.tar.gz");
        let written = save(&store(&dir.path().join("a"), 10), &path);
        let other = dir.path().join("other.tar.gz");
        let mut tar = tar::Builder::new(GzEncoder::new(File::create(&other).unwrap(), flate2::Compression::fast()));
        let meta_json = serde_json::to_vec(&written).unwrap();
        let mut state = Vec::new();
        frame(Cf::Kv, b"evil", b"value", &mut state);
        for (name, data) in [(META, meta_json.clone()), (STATE, state), (SUMS, b"x".to_vec()), (SEALED, b"y".to_vec())]
        {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_cksum();
            tar.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
        let e = inspect(&other).unwrap_err().to_string();
        assert!(e.contains("altered or damaged"), "{e}");
    }
}
