//! The encryption barrier.
//!
//! Record layout (all integers big-endian):
//!
//! ```text
//! [version u8 = 1][term u32][nonce 12][ciphertext][tag 16]
//! ```
//!
//! The associated data is the storage path the record is written under, so a record copied to
//! another path fails authentication instead of silently serving one secret as another. The
//! term and version are not in the AAD explicitly, but they select the key and the parser: a
//! record whose header is altered is decrypted under the wrong key (or rejected) and fails.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::Zeroizing;

use crate::key::random_bytes;
use crate::{Error, Result, SecretKey, KEY_LEN};

/// Current record format version.
pub const RECORD_VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes a record adds to its plaintext.
pub const RECORD_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// Term 0 is reserved for the root key, which only ever encrypts the keyring.
const ROOT_TERM: u32 = 0;
/// AAD of the sealed keyring; it is stored at this path in the `sys` column family.
const KEYRING_AAD: &[u8] = b"sys/keyring";
const KEYRING_FORMAT: u8 = 1;

/// One key term: the key and its expanded AES schedule (built once, not per record).
struct Term {
    // Kept so the keyring can be re-serialised; `Aes256Gcm` zeroizes its own schedule on drop
    // (aes-gcm's `zeroize` feature).
    key: SecretKey,
    cipher: Aes256Gcm,
}

impl Term {
    fn new(key: SecretKey) -> Self {
        let cipher = Aes256Gcm::new(key.expose().into());
        Term { key, cipher }
    }
}

fn seal(cipher: &Aes256Gcm, term: u32, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    // A random 96-bit nonce per record: with at most 2^32 records per term the collision
    // probability stays below 2^-32 (NIST SP 800-38D, 8.3); `operator rotate` adds terms.
    random_bytes(&mut nonce)?;
    let mut out = Vec::with_capacity(RECORD_OVERHEAD + plaintext.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&term.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut out[HEADER_LEN..])
        .map_err(|_| Error::Encrypt)?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The parts of a record whose framing has been checked.
struct Parsed<'a> {
    term: u32,
    nonce: &'a [u8],
    ciphertext: &'a [u8],
    tag: &'a [u8],
}

fn parse(record: &[u8]) -> Result<Parsed<'_>> {
    if record.len() < RECORD_OVERHEAD {
        return Err(Error::RecordTooShort { len: record.len(), min: RECORD_OVERHEAD });
    }
    if record[0] != RECORD_VERSION {
        return Err(Error::UnsupportedRecordVersion(record[0]));
    }
    let term = u32::from_be_bytes(record[1..5].try_into().expect("4 bytes"));
    let nonce = &record[5..HEADER_LEN];
    let (ciphertext, tag) = record[HEADER_LEN..].split_at(record.len() - HEADER_LEN - TAG_LEN);
    Ok(Parsed { term, nonce, ciphertext, tag })
}

fn open(cipher: &Aes256Gcm, aad: &[u8], record: &Parsed<'_>) -> Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(record.ciphertext.to_vec());
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(record.nonce), aad, &mut buf, Tag::from_slice(record.tag))
        .map_err(|_| Error::Decrypt)?;
    Ok(buf)
}

/// The data keys of a cluster, by term. New records use the newest term; any term decrypts.
///
/// The keyring itself is stored only encrypted under the root key ([`Keyring::seal`]), and an
/// unsealed node holds it in memory until it seals again, when dropping it zeroizes every key.
pub struct Keyring {
    terms: BTreeMap<u32, Term>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("terms", &self.terms.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring holding one fresh key as term 1.
    pub fn generate() -> Result<Self> {
        let mut terms = BTreeMap::new();
        terms.insert(1, Term::new(SecretKey::generate()?));
        Ok(Keyring { terms })
    }

    /// The term new records are encrypted under.
    pub fn active_term(&self) -> u32 {
        *self.terms.keys().next_back().expect("a keyring always holds at least one term")
    }

    /// All terms held, oldest first.
    pub fn terms(&self) -> impl Iterator<Item = u32> + '_ {
        self.terms.keys().copied()
    }

    /// Adds a fresh key as the next term and makes it active. Older terms keep decrypting.
    pub fn rotate(&mut self) -> Result<u32> {
        let next = self.active_term().checked_add(1).ok_or(Error::TermsExhausted(self.active_term()))?;
        self.terms.insert(next, Term::new(SecretKey::generate()?));
        Ok(next)
    }

    /// A keyring holding only `key` as `term`: for offline tools and tests that examine what a
    /// single (say, leaked) data key opens.
    pub fn from_key(term: u32, key: SecretKey) -> Result<Self> {
        if term == ROOT_TERM {
            return Err(Error::MalformedKeyring("data key uses the reserved root term"));
        }
        Ok(Keyring { terms: BTreeMap::from([(term, Term::new(key))]) })
    }

    /// A keyring holding only `term` of this one (a copy of its key), if held.
    pub fn only_term(&self, term: u32) -> Option<Keyring> {
        let key = self.terms.get(&term)?.key.duplicate();
        Some(Keyring { terms: BTreeMap::from([(term, Term::new(key))]) })
    }

    /// This keyring extended with a legacy term record (a term key encrypted under the term
    /// before it, as clusters before keyring format 2 stored them); the record must decrypt
    /// under a term this keyring holds. A term already held is left as it is. New terms are
    /// never stored this way: a leaked term key would open every later one.
    pub fn load_term(&self, term: u32, path: &[u8], record: &[u8]) -> Result<Keyring> {
        if term == ROOT_TERM {
            return Err(Error::MalformedKeyring("data key uses the reserved root term"));
        }
        let mut terms: BTreeMap<u32, Term> =
            self.terms.iter().map(|(t, k)| (*t, Term::new(k.key.duplicate()))).collect();
        if let std::collections::btree_map::Entry::Vacant(slot) = terms.entry(term) {
            let plain = self.decrypt(path, record)?;
            let key = SecretKey::from_slice(&plain).ok_or(Error::MalformedKeyring("term key has the wrong length"))?;
            slot.insert(Term::new(key));
        }
        Ok(Keyring { terms })
    }

    /// The term a stored record was encrypted under (from its header).
    pub fn term_of(record: &[u8]) -> Result<u32> {
        parse(record).map(|p| p.term)
    }

    /// Encrypts `plaintext` for storage at `path` under the active term.
    pub fn encrypt(&self, path: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let term = self.active_term();
        seal(&self.terms[&term].cipher, term, path, plaintext)
    }

    /// Decrypts a record that was stored at `path`.
    pub fn decrypt(&self, path: &[u8], record: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let parsed = parse(record)?;
        let key = self.terms.get(&parsed.term).ok_or(Error::UnknownTerm(parsed.term))?;
        open(&key.cipher, path, &parsed)
    }

    /// Serialises the keyring encrypted under `root`. This is what is replicated and stored.
    pub fn seal(&self, root: &SecretKey) -> Result<Vec<u8>> {
        let mut plain = Zeroizing::new(Vec::with_capacity(5 + self.terms.len() * (4 + KEY_LEN)));
        plain.push(KEYRING_FORMAT);
        plain.extend_from_slice(&(self.terms.len() as u32).to_be_bytes());
        for (term, key) in &self.terms {
            plain.extend_from_slice(&term.to_be_bytes());
            plain.extend_from_slice(key.key.expose());
        }
        seal(&Aes256Gcm::new(root.expose().into()), ROOT_TERM, KEYRING_AAD, &plain)
    }

    /// Decrypts a sealed keyring. This is the canary that proves a reconstructed root key is
    /// right: a wrong key fails the AEAD tag with [`Error::Decrypt`].
    pub fn unseal(root: &SecretKey, sealed: &[u8]) -> Result<Self> {
        let parsed = parse(sealed)?;
        if parsed.term != ROOT_TERM {
            return Err(Error::MalformedKeyring("sealed keyring is not encrypted under the root key"));
        }
        let plain = open(&Aes256Gcm::new(root.expose().into()), KEYRING_AAD, &parsed)?;
        Self::decode(&plain)
    }

    fn decode(plain: &[u8]) -> Result<Self> {
        let (&format, rest) = plain.split_first().ok_or(Error::MalformedKeyring("empty"))?;
        if format != KEYRING_FORMAT {
            return Err(Error::MalformedKeyring("unknown keyring format version"));
        }
        if rest.len() < 4 {
            return Err(Error::MalformedKeyring("missing term count"));
        }
        let (count, mut rest) = rest.split_at(4);
        let count = u32::from_be_bytes(count.try_into().expect("4 bytes")) as usize;
        if count == 0 || rest.len() != count * (4 + KEY_LEN) {
            return Err(Error::MalformedKeyring("term count does not match length"));
        }
        let mut terms = BTreeMap::new();
        while !rest.is_empty() {
            let (term, tail) = rest.split_at(4);
            let (key, tail) = tail.split_at(KEY_LEN);
            let term = u32::from_be_bytes(term.try_into().expect("4 bytes"));
            if term == ROOT_TERM {
                return Err(Error::MalformedKeyring("data key uses the reserved root term"));
            }
            let key = SecretKey::from_slice(key).expect("KEY_LEN bytes");
            if terms.insert(term, Term::new(key)).is_some() {
                return Err(Error::MalformedKeyring("duplicate term"));
            }
            rest = tail;
        }
        Ok(Keyring { terms })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn keyring() -> &'static Keyring {
        static KR: std::sync::OnceLock<Keyring> = std::sync::OnceLock::new();
        KR.get_or_init(|| Keyring::generate().unwrap())
    }

    #[test]
    fn a_legacy_term_record_extends_a_keyring_that_holds_the_term_before_it() {
        let base = Keyring::generate().unwrap();
        let old = base.encrypt(b"p", b"old").unwrap();
        let key = SecretKey::generate().unwrap();
        let record = base.encrypt(b"keyring/term/2", key.expose()).unwrap();
        let grown = base.load_term(2, b"keyring/term/2", &record).unwrap();
        assert_eq!((grown.active_term(), Keyring::term_of(&grown.encrypt(b"p", b"x").unwrap()).unwrap()), (2, 2));
        assert_eq!(&grown.decrypt(b"p", &old).unwrap()[..], b"old");
        assert!(base.load_term(2, b"elsewhere", &record).is_err());
        assert!(Keyring::generate().unwrap().load_term(2, b"keyring/term/2", &record).is_err());
    }

    #[test]
    fn a_single_term_keyring_opens_only_that_term() {
        let mut kr = Keyring::generate().unwrap();
        let one = kr.encrypt(b"p", b"1").unwrap();
        kr.rotate().unwrap();
        let two = kr.encrypt(b"p", b"2").unwrap();
        let first = kr.only_term(1).unwrap();
        assert_eq!(&first.decrypt(b"p", &one).unwrap()[..], b"1");
        assert_eq!(first.decrypt(b"p", &two).unwrap_err(), Error::UnknownTerm(2));
        assert!(Keyring::from_key(0, SecretKey::generate().unwrap()).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_under_any_path_round_trip(path: Vec<u8>, plaintext in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let rec = keyring().encrypt(&path, &plaintext).unwrap();
            prop_assert_eq!(&keyring().decrypt(&path, &rec).unwrap()[..], &plaintext[..]);
        }

        #[test]
        fn flipping_any_bit_fails(plaintext in proptest::collection::vec(any::<u8>(), 0..256), bit: usize) {
            let mut rec = keyring().encrypt(b"p", &plaintext).unwrap();
            let bit = bit % (rec.len() * 8);
            rec[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(keyring().decrypt(b"p", &rec).is_err());
        }

        #[test]
        fn another_path_fails(path: Vec<u8>, other: Vec<u8>, plaintext: Vec<u8>) {
            prop_assume!(path != other);
            let rec = keyring().encrypt(&path, &plaintext).unwrap();
            prop_assert_eq!(keyring().decrypt(&other, &rec).unwrap_err(), Error::Decrypt);
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let kr = Keyring::generate().unwrap();
        let rec = kr.encrypt(b"kv/app/db", b"hunter2").unwrap();
        assert_eq!(rec.len(), RECORD_OVERHEAD + 7);
        assert_eq!(rec[0], RECORD_VERSION);
        assert_eq!(&rec[1..5], &1u32.to_be_bytes());
        assert_eq!(&kr.decrypt(b"kv/app/db", &rec).unwrap()[..], b"hunter2");
    }

    #[test]
    fn nonces_are_fresh() {
        let kr = Keyring::generate().unwrap();
        let a = kr.encrypt(b"p", b"same").unwrap();
        let b = kr.encrypt(b"p", b"same").unwrap();
        assert_ne!(a[5..17], b[5..17]);
        assert_ne!(a, b);
    }

    #[test]
    fn rotation_keeps_old_terms_readable() {
        let mut kr = Keyring::generate().unwrap();
        let old = kr.encrypt(b"p", b"v1").unwrap();
        assert_eq!(kr.rotate().unwrap(), 2);
        let new = kr.encrypt(b"p", b"v2").unwrap();
        assert_eq!(&new[1..5], &2u32.to_be_bytes());
        assert_eq!(&kr.decrypt(b"p", &old).unwrap()[..], b"v1");
        assert_eq!(&kr.decrypt(b"p", &new).unwrap()[..], b"v2");
    }

    #[test]
    fn errors_are_distinct() {
        let kr = Keyring::generate().unwrap();
        let rec = kr.encrypt(b"p", b"v").unwrap();
        assert_eq!(kr.decrypt(b"p", &rec[..10]).unwrap_err(), Error::RecordTooShort { len: 10, min: RECORD_OVERHEAD });
        let mut bad = rec.clone();
        bad[0] = 9;
        assert_eq!(kr.decrypt(b"p", &bad).unwrap_err(), Error::UnsupportedRecordVersion(9));
        let mut bad = rec.clone();
        bad[1..5].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(kr.decrypt(b"p", &bad).unwrap_err(), Error::UnknownTerm(7));
        assert_eq!(kr.decrypt(b"q", &rec).unwrap_err(), Error::Decrypt);
        let other = Keyring::generate().unwrap();
        assert_eq!(other.decrypt(b"p", &rec).unwrap_err(), Error::Decrypt);
    }

    #[test]
    fn sealed_keyring_round_trip_and_wrong_root() {
        let mut kr = Keyring::generate().unwrap();
        kr.rotate().unwrap();
        let root = SecretKey::generate().unwrap();
        let sealed = kr.seal(&root).unwrap();
        let back = Keyring::unseal(&root, &sealed).unwrap();
        assert_eq!(back.terms().collect::<Vec<_>>(), vec![1, 2]);
        let rec = kr.encrypt(b"p", b"v").unwrap();
        assert_eq!(&back.decrypt(b"p", &rec).unwrap()[..], b"v");
        let wrong = SecretKey::generate().unwrap();
        assert_eq!(Keyring::unseal(&wrong, &sealed).unwrap_err(), Error::Decrypt);
        // A data record is not a keyring even under the right key.
        assert!(Keyring::unseal(&root, &rec).is_err());
    }

    #[test]
    fn debug_shows_terms_not_keys() {
        let kr = Keyring::generate().unwrap();
        assert_eq!(format!("{kr:?}"), "Keyring { terms: [1], .. }");
    }
}
