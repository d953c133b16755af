//! Unseal shares: Shamir's secret sharing of the root key over GF(256).
//!
//! `vsss-rs` does the mathematics; this module owns what a human hands back to us. A raw
//! `vsss-rs` share is `[x][y_0..y_31]` and combining the wrong ones "succeeds" with a wrong key,
//! so every share we give out is framed:
//!
//! ```text
//! base64( [format u8 = 1][share-set id 8][threshold u8][x u8][y 32][checksum 4] )
//! ```
//!
//! * the **share-set id** is random per split: shares from another cluster, or from before a
//!   rekey, are rejected by name instead of producing a wrong key;
//! * the **threshold** lets a node report progress without trusting anything else;
//! * the **checksum** (first 4 bytes of SHA-256 over the rest) catches typos. It is not a MAC:
//!   the final word on a combined key is always the AEAD canary, [`ShareCollector::recover`]
//!   decrypting the sealed keyring.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use getrandom::rand_core::UnwrapErr;
use getrandom::SysRng;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::{random_bytes, Error, Keyring, Result, SecretKey, KEY_LEN};

const SHARE_FORMAT: u8 = 1;
const CHECKSUM_LEN: usize = 4;
const BODY_LEN: usize = 1 + 8 + 1 + 1 + KEY_LEN;
/// Length in bytes of a decoded share.
pub const SHARE_LEN: usize = BODY_LEN + CHECKSUM_LEN;

/// Identifies one split of one root key. Not secret; shown to operators to match shares up.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShareSetId(pub [u8; 8]);

impl fmt::Display for ShareSetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ShareSetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShareSetId({self})")
    }
}

/// How a root key was split: everything about a share set that is not secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareConfig {
    pub set: ShareSetId,
    pub threshold: u8,
    pub shares: u8,
}

/// One parsed unseal share. Its `y` bytes are key material: zeroized on drop, never printed.
pub struct Share {
    set: ShareSetId,
    threshold: u8,
    x: u8,
    y: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("set", &self.set)
            .field("threshold", &self.threshold)
            .field("number", &self.x)
            .finish_non_exhaustive()
    }
}

impl Share {
    /// Parses the base64 form an operator types in. Surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Share> {
        let bytes = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| Error::ShareNotBase64)?);
        if bytes.len() != SHARE_LEN {
            return Err(Error::ShareWrongLength { got: bytes.len(), expected: SHARE_LEN });
        }
        if bytes[0] != SHARE_FORMAT {
            return Err(Error::ShareUnsupportedVersion(bytes[0]));
        }
        let (body, checksum) = bytes.split_at(BODY_LEN);
        if Sha256::digest(body)[..CHECKSUM_LEN] != *checksum {
            return Err(Error::ShareChecksum);
        }
        let mut y = Zeroizing::new([0u8; KEY_LEN]);
        y.copy_from_slice(&body[11..]);
        Ok(Share { set: ShareSetId(body[1..9].try_into().expect("8 bytes")), threshold: body[9], x: body[10], y })
    }

    /// The base64 form handed to an operator.
    pub fn encode(&self) -> Zeroizing<String> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(SHARE_LEN));
        bytes.push(SHARE_FORMAT);
        bytes.extend_from_slice(&self.set.0);
        bytes.push(self.threshold);
        bytes.push(self.x);
        bytes.extend_from_slice(&self.y[..]);
        let checksum = Sha256::digest(&bytes[..]);
        bytes.extend_from_slice(&checksum[..CHECKSUM_LEN]);
        Zeroizing::new(STANDARD.encode(&bytes[..]))
    }

    pub fn set(&self) -> ShareSetId {
        self.set
    }

    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// The share's number within its set (1-based, as printed to operators).
    pub fn number(&self) -> u8 {
        self.x
    }

    fn raw(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity(1 + KEY_LEN);
        raw.push(self.x);
        raw.extend_from_slice(&self.y[..]);
        raw
    }
}

/// Splits `root` into `shares` unseal shares, any `threshold` of which reconstruct it.
pub fn split(root: &SecretKey, threshold: usize, shares: usize) -> Result<(ShareConfig, Vec<Share>)> {
    if !(2..=shares).contains(&threshold) || shares > 255 {
        return Err(Error::InvalidShareConfig { threshold, shares });
    }
    let mut set = [0u8; 8];
    random_bytes(&mut set)?;
    // Probe the OS RNG with an error path first: `UnwrapErr` below panics on failure, and a
    // failure between two calls this close together is not a case worth a second code path.
    random_bytes(&mut [0u8; 1])?;
    let raw = vsss_rs::Gf256::split_bytes(threshold, shares, root.expose(), UnwrapErr(SysRng))
        .map_err(|e| Error::Split(format!("{e:?}")))?;
    let config = ShareConfig { set: ShareSetId(set), threshold: threshold as u8, shares: shares as u8 };
    let out = raw
        .into_iter()
        .map(|mut r| {
            let mut y = Zeroizing::new([0u8; KEY_LEN]);
            y.copy_from_slice(&r[1..]);
            let share = Share { set: config.set, threshold: config.threshold, x: r[0], y };
            r.zeroize();
            share
        })
        .collect();
    Ok((config, out))
}

/// Combines raw shares. With fewer than the threshold this returns a *wrong* key without any
/// error: callers must verify the result (see [`ShareCollector::recover`]).
fn combine_unverified(shares: &[Share]) -> Result<SecretKey> {
    let mut raw: Vec<Vec<u8>> = shares.iter().map(Share::raw).collect();
    let combined = vsss_rs::Gf256::combine_bytes(&raw).map_err(|_| Error::SharesDoNotReconstruct);
    raw.iter_mut().for_each(|r| r.zeroize());
    let mut combined = Zeroizing::new(combined?);
    SecretKey::from_slice(&combined).ok_or(Error::SharesDoNotReconstruct).inspect(|_| combined.zeroize())
}

/// What an unseal attempt has collected so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub provided: usize,
    pub threshold: usize,
}

/// Accumulates shares one at a time (each operator types their own) for one share set.
///
/// A share that is malformed, duplicated or from another set is refused with its own error and
/// leaves the progress as it was. Only a complete set that fails the canary resets progress,
/// because then we cannot know which share was bad.
pub struct ShareCollector {
    config: ShareConfig,
    shares: Vec<Share>,
}

impl fmt::Debug for ShareCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareCollector").field("config", &self.config).field("provided", &self.shares.len()).finish()
    }
}

impl ShareCollector {
    pub fn new(config: ShareConfig) -> Self {
        ShareCollector { config, shares: Vec::new() }
    }

    pub fn progress(&self) -> Progress {
        Progress { provided: self.shares.len(), threshold: self.config.threshold as usize }
    }

    pub fn is_complete(&self) -> bool {
        self.shares.len() >= self.config.threshold as usize
    }

    /// Discards every share collected so far.
    pub fn reset(&mut self) {
        self.shares.clear();
    }

    /// Adds one share in its base64 form.
    pub fn add(&mut self, text: &str) -> Result<Progress> {
        let share = Share::parse(text)?;
        if share.set != self.config.set || share.threshold != self.config.threshold {
            return Err(Error::MixedShares { expected: self.config.set.to_string(), got: share.set.to_string() });
        }
        if self.shares.iter().any(|s| s.x == share.x) {
            return Err(Error::DuplicateShare(share.x));
        }
        if !self.is_complete() {
            self.shares.push(share);
        }
        Ok(self.progress())
    }

    /// Reconstructs the root key from a complete set and proves it by opening the sealed
    /// keyring. Progress is reset whatever the outcome: on success the shares are no longer
    /// needed, on failure they cannot be trusted.
    pub fn recover(&mut self, sealed_keyring: &[u8]) -> Result<(SecretKey, Keyring)> {
        if !self.is_complete() {
            let p = self.progress();
            return Err(Error::NotEnoughShares { have: p.provided, threshold: p.threshold });
        }
        let shares = std::mem::take(&mut self.shares);
        verify(combine_unverified(&shares)?, sealed_keyring)
    }
}

fn verify(root: SecretKey, sealed_keyring: &[u8]) -> Result<(SecretKey, Keyring)> {
    match Keyring::unseal(&root, sealed_keyring) {
        Ok(keyring) => Ok((root, keyring)),
        Err(Error::Decrypt) => Err(Error::SharesDoNotReconstruct),
        Err(other) => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn setup(t: usize, n: usize) -> (SecretKey, Vec<u8>, ShareConfig, Vec<Share>) {
        let root = SecretKey::generate().unwrap();
        let sealed = Keyring::generate().unwrap().seal(&root).unwrap();
        let (config, shares) = split(&root, t, n).unwrap();
        (root, sealed, config, shares)
    }

    fn encoded(shares: &[Share]) -> Vec<String> {
        shares.iter().map(|s| s.encode().to_string()).collect()
    }

    #[test]
    fn share_config_bounds() {
        let root = SecretKey::generate().unwrap();
        for (t, n) in [(1, 3), (0, 3), (4, 3), (2, 256), (300, 300)] {
            assert_eq!(split(&root, t, n).unwrap_err(), Error::InvalidShareConfig { threshold: t, shares: n });
        }
        assert_eq!(split(&root, 255, 255).unwrap().1.len(), 255);
        assert_eq!(split(&root, 2, 2).unwrap().1.len(), 2);
    }

    #[test]
    fn shares_are_base64_of_fixed_length_and_round_trip() {
        let (_, _, config, shares) = setup(3, 5);
        for s in &shares {
            let text = s.encode();
            assert_eq!(STANDARD.decode(text.as_str()).unwrap().len(), SHARE_LEN);
            let back = Share::parse(&format!("  {}\n", text.as_str())).unwrap();
            assert_eq!((back.set, back.threshold, back.x), (config.set, 3, s.x));
            assert_eq!(back.y[..], s.y[..]);
        }
    }

    #[test]
    fn fewer_than_threshold_silently_combine_to_a_wrong_key_which_the_canary_catches() {
        let (root, sealed, _, shares) = setup(3, 5);
        let wrong = combine_unverified(&shares[..2]).unwrap();
        assert_ne!(wrong, root, "vsss-rs combines a short set into garbage, not an error");
        assert_eq!(verify(wrong, &sealed).unwrap_err(), Error::SharesDoNotReconstruct);
    }

    #[test]
    fn collector_reports_progress_and_recovers() {
        let (root, sealed, config, shares) = setup(3, 5);
        let mut c = ShareCollector::new(config);
        let texts = encoded(&shares);
        assert_eq!(c.add(&texts[4]).unwrap(), Progress { provided: 1, threshold: 3 });
        assert_eq!(c.add(&texts[0]).unwrap(), Progress { provided: 2, threshold: 3 });
        assert_eq!(c.recover(&sealed).unwrap_err(), Error::NotEnoughShares { have: 2, threshold: 3 });
        assert_eq!(c.add(&texts[2]).unwrap(), Progress { provided: 3, threshold: 3 });
        let (got, keyring) = c.recover(&sealed).unwrap();
        assert_eq!(got, root);
        assert_eq!(keyring.active_term(), 1);
        assert_eq!(c.progress().provided, 0);
    }

    #[test]
    fn every_bad_share_has_its_own_error_and_keeps_progress() {
        let (_, _, config, shares) = setup(3, 5);
        let texts = encoded(&shares);
        let mut c = ShareCollector::new(config);
        c.add(&texts[0]).unwrap();

        assert_eq!(c.add("not base64 !!").unwrap_err(), Error::ShareNotBase64);
        let short = STANDARD.encode(&STANDARD.decode(&texts[1]).unwrap()[..20]);
        assert_eq!(c.add(&short).unwrap_err(), Error::ShareWrongLength { got: 20, expected: SHARE_LEN });
        let mut raw = STANDARD.decode(&texts[1]).unwrap();
        raw[20] ^= 1;
        assert_eq!(c.add(&STANDARD.encode(&raw)).unwrap_err(), Error::ShareChecksum);
        let mut raw = STANDARD.decode(&texts[1]).unwrap();
        raw[0] = 7;
        assert_eq!(c.add(&STANDARD.encode(&raw)).unwrap_err(), Error::ShareUnsupportedVersion(7));
        assert_eq!(c.add(&texts[0]).unwrap_err(), Error::DuplicateShare(shares[0].x));

        let (_, _, other_config, other) = setup(3, 5);
        let err = c.add(&other[1].encode()).unwrap_err();
        assert_eq!(err, Error::MixedShares { expected: config.set.to_string(), got: other_config.set.to_string() });
        assert!(err.to_string().contains("different share set"));

        assert_eq!(c.progress().provided, 1, "refused shares must not count or reset progress");
    }

    #[test]
    fn a_forged_share_with_valid_framing_fails_the_canary_and_resets() {
        let (_, sealed, config, mut shares) = setup(2, 3);
        shares[1].y[0] ^= 0x55; // re-encoding recomputes the checksum: only the canary can tell
        let mut c = ShareCollector::new(config);
        c.add(&shares[0].encode()).unwrap();
        c.add(&shares[1].encode()).unwrap();
        assert_eq!(c.recover(&sealed).unwrap_err(), Error::SharesDoNotReconstruct);
        assert_eq!(c.progress().provided, 0);
    }

    #[test]
    fn debug_does_not_show_share_bytes() {
        let (_, _, _, shares) = setup(2, 2);
        let shown = format!("{:?}", shares[0]);
        assert!(!shown.contains(&hex::encode(&shares[0].y[..4])), "{shown}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any T <= N <= 16 and any subset of at least T shares, in any order, reconstructs.
        #[test]
        fn any_sufficient_subset_recovers(n in 2usize..=16, t_seed: usize, pick_seed: u64) {
            let t = 2 + t_seed % (n - 1);
            let (root, sealed, config, shares) = setup(t, n);
            // A pseudo-random subset of size >= t, in a pseudo-random order.
            let mut order: Vec<usize> = (0..n).collect();
            let mut s = pick_seed | 1;
            for i in (1..n).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                order.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let take = t + (pick_seed as usize % (n - t + 1));
            let mut c = ShareCollector::new(config);
            for &i in &order[..take] {
                c.add(&shares[i].encode()).unwrap();
            }
            let (got, _) = c.recover(&sealed).unwrap();
            prop_assert_eq!(got, root);
        }
    }
}
