//! Operator ceremonies: generate-root and rekey, each collecting a threshold of unseal shares.
//!
//! Vault's shape: an explicit start fixes the ceremony's parameters and returns a random nonce;
//! every share must come with that nonce; cancelling needs it too. The nonce is handed out only
//! to the one who starts the ceremony (and echoed to those who submit with it), never by the
//! unauthenticated status call, so nobody who was not given it can add to, reset or cancel a
//! ceremony, or change what it will produce. Generate-root's result leaves the node only
//! encrypted under a one-time pad or OpenPGP key the starter chose, so the last share holder
//! learns nothing; rekey's new shares can each be encrypted to their holder's OpenPGP key.
//!
//! Ceremonies live in the memory of the node they were started on and die with its seal. One
//! left idle for [`IDLE_LIMIT`] may be replaced by a new start, so a stray or hostile start
//! cannot block the ceremony forever (it cannot hijack one: a replacement has a new nonce).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use arca_crypto::shamir::{ShareCollector, ShareConfig};
use arca_crypto::{constant_time_eq, PgpRecipient, SecretKey};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::init::InitRecord;
use crate::{Error, Result};

/// How long a ceremony may sit without a share before a new start may replace it.
pub const IDLE_LIMIT: Duration = Duration::from_secs(15 * 60);
/// Length in characters of a generate-root one-time pad: that of a token.
pub const OTP_LEN: usize = crate::token::TOKEN_PREFIX.len() + 43;
/// A pad's characters (Vault's: base62, so `bao operator generate-root -generate-otp` makes
/// valid pads and `-decode` undoes the encoding).
const OTP_ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// One step of a ceremony, with `P` the parameters fixed at its start.
pub enum CeremonyStep<P> {
    /// Starts a ceremony; refused while another is in progress (and not idle).
    Start(P),
    /// Whether a ceremony is in progress and how far; never reveals the nonce.
    Status,
    /// Adds one unseal share to the ceremony the nonce names.
    Submit { nonce: Zeroizing<String>, share: Zeroizing<String> },
    /// Discards the ceremony the nonce names.
    Cancel { nonce: Zeroizing<String> },
}

impl<P> CeremonyStep<P> {
    pub(crate) fn nonce(&self) -> Option<&str> {
        match self {
            CeremonyStep::Submit { nonce, .. } | CeremonyStep::Cancel { nonce } => Some(nonce.as_str()),
            _ => None,
        }
    }

    pub(crate) fn share(&self) -> Option<&str> {
        match self {
            CeremonyStep::Submit { share, .. } => Some(share.as_str()),
            _ => None,
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            CeremonyStep::Start(_) => "init",
            CeremonyStep::Status => "status",
            CeremonyStep::Submit { .. } => "update",
            CeremonyStep::Cancel { .. } => "cancel",
        }
    }
}

/// Generate-root's parameter: how the new root token leaves the node.
pub enum GenerateRootParams {
    /// XORed with this one-time pad: [`OTP_LEN`] random base62 characters.
    Otp(Zeroizing<String>),
    /// Encrypted to this OpenPGP key (base64 of the binary message `gpg --decrypt` opens).
    Pgp(Box<PgpRecipient>),
}

impl GenerateRootParams {
    /// From a start request's fields (empty means not given): exactly one of a one-time pad
    /// and an OpenPGP key.
    pub fn from_fields(otp: &str, pgp_key: &str) -> Result<GenerateRootParams> {
        match (otp.is_empty(), pgp_key.is_empty()) {
            (false, true) => Ok(GenerateRootParams::Otp(Zeroizing::new(otp.to_string()))),
            (true, false) => {
                let mut keys = parse_pgp_keys(&[pgp_key.to_string()], "pgp_key")?;
                Ok(GenerateRootParams::Pgp(Box::new(keys.remove(0))))
            }
            (true, true) => Err(Error::InvalidArgument(
                "missing otp or pgp_key: otp_length random letters and digits, which the new root token will be \
                 XORed with, or an OpenPGP public key it will be encrypted to"
                    .into(),
            )),
            (false, false) => Err(Error::InvalidArgument("give either otp or pgp_key, not both".into())),
        }
    }

    /// The new root token as it is handed out.
    pub(crate) fn wrap(&self, token: &str) -> Result<String> {
        match self {
            GenerateRootParams::Otp(otp) => encode_token(token, otp),
            GenerateRootParams::Pgp(key) => pgp_encrypt(key, token),
        }
    }
}

/// Rekey's parameters: the new share set and, optionally, one OpenPGP key per new share.
#[derive(Debug, Clone)]
pub struct RekeyParams {
    pub shares: u8,
    pub threshold: u8,
    /// Empty, or exactly `shares` keys: share `i` is handed out encrypted to key `i`.
    pub pgp_keys: Vec<PgpRecipient>,
}

impl RekeyParams {
    /// A new share set handed out in plain text.
    pub fn new(shares: u8, threshold: u8) -> RekeyParams {
        RekeyParams { shares, threshold, pgp_keys: vec![] }
    }

    /// The new shares as they are handed out: as they are, or each encrypted to its holder's
    /// key. Done before the rekey is written, so a failure cannot leave a root key whose
    /// shares nobody holds.
    pub(crate) fn hand_out(&self, shares: &[Zeroizing<String>]) -> Result<Vec<Zeroizing<String>>> {
        if self.pgp_keys.is_empty() {
            return Ok(shares.to_vec());
        }
        shares.iter().zip(&self.pgp_keys).map(|(s, key)| pgp_encrypt(key, s).map(Zeroizing::new)).collect()
    }
}

/// Parses the holders' public keys a ceremony's start names (`field` names them in errors).
pub fn parse_pgp_keys(encoded: &[String], field: &str) -> Result<Vec<PgpRecipient>> {
    if encoded.len() > usize::from(u8::MAX) {
        return Err(Error::InvalidArgument(format!("{field} names {} keys; at most 255 shares exist", encoded.len())));
    }
    encoded
        .iter()
        .enumerate()
        .map(|(i, k)| {
            PgpRecipient::parse(k, &format!("{field}[{i}]")).map_err(|e| Error::InvalidArgument(e.to_string()))
        })
        .collect()
}

fn pgp_encrypt(key: &PgpRecipient, text: &str) -> Result<String> {
    let message = key.encrypt(text.as_bytes()).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(STANDARD.encode(message))
}

/// What a ceremony step reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CeremonyStatus {
    pub started: bool,
    /// Only in the reply to the start and to a submission (whose sender had it already).
    pub nonce: Option<String>,
    pub progress: u8,
    /// Shares of the current set needed.
    pub required: u8,
    /// Rekey: the new share set fixed at start.
    pub new_shares: u8,
    pub new_threshold: u8,
    /// Generate-root: bytes of one-time pad expected at start.
    pub otp_length: usize,
    /// Fingerprints of the OpenPGP keys the result is encrypted to, in share order.
    pub pgp_fingerprints: Vec<String>,
    /// The step completed the ceremony.
    pub complete: bool,
}

pub(crate) trait Params {
    fn validate(&self) -> Result<()>;
    fn describe(&self, status: &mut CeremonyStatus);
}

impl Params for GenerateRootParams {
    fn validate(&self) -> Result<()> {
        match self {
            GenerateRootParams::Otp(otp) => otp_bytes(otp).map(drop),
            GenerateRootParams::Pgp(_) => Ok(()),
        }
    }

    fn describe(&self, status: &mut CeremonyStatus) {
        if let GenerateRootParams::Pgp(key) = self {
            status.pgp_fingerprints = vec![key.fingerprint()];
        }
    }
}

impl Params for RekeyParams {
    fn validate(&self) -> Result<()> {
        if !(2..=self.shares).contains(&self.threshold) {
            return Err(Error::InvalidArgument(format!(
                "invalid new share set: need 2 <= threshold ({}) <= shares ({}) <= 255",
                self.threshold, self.shares
            )));
        }
        if !self.pgp_keys.is_empty() && self.pgp_keys.len() != usize::from(self.shares) {
            return Err(Error::InvalidArgument(format!(
                "pgp_keys names {} keys for {} new shares: give one key per share, in the order the shares go out",
                self.pgp_keys.len(),
                self.shares
            )));
        }
        Ok(())
    }

    fn describe(&self, status: &mut CeremonyStatus) {
        status.new_shares = self.shares;
        status.new_threshold = self.threshold;
        status.pgp_fingerprints = self.pgp_keys.iter().map(PgpRecipient::fingerprint).collect();
    }
}

/// A pad as Vault's new-style OTPs are: exactly [`OTP_LEN`] base62 characters, used as bytes.
/// (Each pad byte carries log2(62) ≈ 5.95 bits, so the XOR hides all but a fraction of a bit
/// per token character, which has 6; Vault makes the same trade for CLI compatibility.)
fn otp_bytes(otp: &str) -> Result<&[u8]> {
    let otp = otp.trim();
    if otp.len() != OTP_LEN || !otp.bytes().all(|b| OTP_ALPHABET.contains(&b)) {
        return Err(Error::InvalidArgument(format!(
            "the OTP must be {OTP_LEN} letters and digits (got {} characters); 'arca operator generate-root --init' \
             or 'bao operator generate-root -generate-otp' makes one",
            otp.len()
        )));
    }
    Ok(otp.as_bytes())
}

/// The token XOR the one-time pad, base64 without padding (Vault's encoding): what
/// generate-root hands out.
pub(crate) fn encode_token(token: &str, otp: &str) -> Result<String> {
    let pad = otp_bytes(otp)?;
    if token.len() != pad.len() {
        return Err(Error::Internal("a root token does not have the one-time pad's length".into()));
    }
    let mixed = Zeroizing::new(token.bytes().zip(pad.iter()).map(|(t, p)| t ^ p).collect::<Vec<u8>>());
    Ok(STANDARD_NO_PAD.encode(&mixed[..]))
}

/// Undoes [`encode_token`] (the CLI's `--decode`).
pub fn decode_token(encoded: &str, otp: &str) -> Result<Zeroizing<String>> {
    let pad = otp_bytes(otp)?;
    let mixed = Zeroizing::new(
        STANDARD_NO_PAD
            .decode(encoded.trim().trim_end_matches('='))
            .map_err(|_| Error::InvalidArgument("the encoded token is not valid base64".into()))?,
    );
    if mixed.len() != pad.len() {
        return Err(Error::InvalidArgument("the encoded token and the OTP differ in length".into()));
    }
    let plain = Zeroizing::new(mixed.iter().zip(pad.iter()).map(|(m, p)| m ^ p).collect::<Vec<u8>>());
    let token = std::str::from_utf8(&plain)
        .ok()
        .filter(|t| crate::token::well_formed(t))
        .ok_or_else(|| Error::InvalidArgument("the OTP does not decode this token (wrong OTP?)".into()))?;
    Ok(Zeroizing::new(token.to_string()))
}

/// [`OTP_LEN`] fresh random base62 characters (rejection sampling: no character is likelier
/// than another).
pub fn generate_otp() -> Result<Zeroizing<String>> {
    let mut pad = Zeroizing::new(String::with_capacity(OTP_LEN));
    let mut byte = Zeroizing::new([0u8; 1]);
    while pad.len() < OTP_LEN {
        arca_crypto::random_bytes(&mut byte[..]).map_err(|e| Error::Internal(e.to_string()))?;
        // 248 = 4 × 62: bytes at or above it would favour the first characters.
        if byte[0] < 248 {
            pad.push(OTP_ALPHABET[usize::from(byte[0] % 62)] as char);
        }
    }
    Ok(pad)
}

/// A ceremony in progress on this node.
pub(crate) struct Ceremony<P> {
    nonce: Zeroizing<String>,
    params: P,
    collector: ShareCollector,
    last: Instant,
}

impl<P: Params> Ceremony<P> {
    fn status(&self, reveal: bool) -> CeremonyStatus {
        let p = self.collector.progress();
        let mut s = CeremonyStatus {
            started: true,
            nonce: reveal.then(|| self.nonce.to_string()),
            progress: p.provided as u8,
            required: p.threshold as u8,
            otp_length: OTP_LEN,
            ..Default::default()
        };
        self.params.describe(&mut s);
        s
    }

    fn idle(&self) -> bool {
        self.last.elapsed() >= IDLE_LIMIT
    }
}

/// What a step came to.
pub(crate) enum Stepped<P> {
    Status(CeremonyStatus),
    /// The threshold was reached and the shares reconstruct the root key.
    Done {
        params: P,
        root: SecretKey,
        status: CeremonyStatus,
    },
}

fn wrong_nonce() -> Error {
    Error::PermissionDenied(
        "the nonce does not match the ceremony in progress on this node; ask whoever started it for its nonce".into(),
    )
}

fn none_in_progress(what: &str) -> Error {
    Error::InvalidArgument(format!("no {what} ceremony is in progress on this node; start one with init"))
}

/// Runs one step against `slot`. `what` names the ceremony in messages.
pub(crate) fn step<P: Params>(
    slot: &Mutex<Option<Ceremony<P>>>,
    init: &InitRecord,
    what: &str,
    step: CeremonyStep<P>,
) -> Result<Stepped<P>> {
    let mut slot = slot.lock().expect("ceremony lock");
    if slot.as_ref().is_some_and(Ceremony::idle) {
        *slot = None;
    }
    let required = init.threshold;
    let idle = || CeremonyStatus { required, otp_length: OTP_LEN, ..Default::default() };
    match step {
        CeremonyStep::Status => Ok(Stepped::Status(slot.as_ref().map_or_else(idle, |c| c.status(false)))),
        CeremonyStep::Start(params) => {
            if slot.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "a {what} ceremony is already in progress on this node; finish it, or cancel it with its nonce"
                )));
            }
            params.validate()?;
            let nonce = Zeroizing::new(crate::token::random_id(16)?);
            let c =
                Ceremony { nonce, params, collector: ShareCollector::new(share_config(init)), last: Instant::now() };
            let status = c.status(true);
            *slot = Some(c);
            Ok(Stepped::Status(status))
        }
        CeremonyStep::Cancel { nonce } => {
            let c = slot.as_ref().ok_or_else(|| none_in_progress(what))?;
            if !constant_time_eq(nonce.as_bytes(), c.nonce.as_bytes()) {
                return Err(wrong_nonce());
            }
            *slot = None;
            Ok(Stepped::Status(idle()))
        }
        CeremonyStep::Submit { nonce, share } => {
            let c = slot.as_mut().ok_or_else(|| none_in_progress(what))?;
            if !constant_time_eq(nonce.as_bytes(), c.nonce.as_bytes()) {
                return Err(wrong_nonce());
            }
            c.collector.add(&share).map_err(Error::Share)?;
            c.last = Instant::now();
            if !c.collector.is_complete() {
                return Ok(Stepped::Status(c.status(true)));
            }
            // A failed reconstruction resets the progress but keeps the ceremony (and nonce).
            let (root, _) = c.collector.recover(&init.sealed_keyring).map_err(Error::Share)?;
            let c = slot.take().expect("ceremony present");
            let mut status = c.status(true);
            status.progress = status.required;
            status.complete = true;
            Ok(Stepped::Done { params: c.params, root, status })
        }
    }
}

fn share_config(init: &InitRecord) -> ShareConfig {
    init.share_config()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_time_pad_round_trips_and_hides_the_token() {
        let (token, _) = crate::token::generate().unwrap();
        let otp = generate_otp().unwrap();
        let encoded = encode_token(&token, &otp).unwrap();
        assert!(!encoded.contains(&token[5..15]));
        assert_eq!(decode_token(&encoded, &otp).unwrap().as_str(), token.as_str());
        let other = generate_otp().unwrap();
        assert!(decode_token(&encoded, &other).is_err());
        assert!(encode_token(&token, "c2hvcnQ=").is_err());
    }
}
