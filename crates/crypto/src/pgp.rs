//! Encrypting unseal shares and root tokens to an operator's OpenPGP key.
//!
//! Vault's ceremonies can hand each new share (and a generated root token) out encrypted to a
//! PGP key its holder named, so the person who submits the last share, the terminal's
//! scrollback and any log of the response see only ciphertext that one holder can open with
//! `gpg --decrypt`. Keys come as Vault takes them: base64 of the binary (transferable) public
//! key, as `gpg --export <id> | base64` prints; an ASCII-armored key is accepted too.
//!
//! The recipient is chosen as GnuPG would: a subkey whose newest binding signature is valid,
//! flags it for encryption, is neither expired nor revoked; failing that, the primary key when
//! its algorithm can encrypt (old RSA keys without subkeys). Every binding signature is verified
//! first, so a key someone tampered with is refused rather than half used.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use pgp::composed::{Deserializable, MessageBuilder, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::SignatureType;
use pgp::types::KeyDetails;

use crate::{Error, Result};

/// Largest public key accepted, encoded (a 16384-bit RSA key with a few user ids is far less).
const MAX_KEY_LEN: usize = 64 * 1024;

/// One holder's public key, checked and ready to encrypt to.
#[derive(Debug, Clone)]
pub struct PgpRecipient {
    key: SignedPublicKey,
    /// Index into `key.public_subkeys` of the encryption subkey; `None` for the primary key.
    subkey: Option<usize>,
}

impl PgpRecipient {
    /// Parses and checks a public key given as base64 of its binary form or as ASCII armor.
    /// `which` names the key in errors ("pgp_keys[2]").
    pub fn parse(encoded: &str, which: &str) -> Result<PgpRecipient> {
        let bad = |why: String| Error::PgpKey { which: which.to_string(), why };
        let encoded = encoded.trim();
        if encoded.len() > MAX_KEY_LEN {
            return Err(bad(format!("it is {} bytes, over the {MAX_KEY_LEN}-byte limit", encoded.len())));
        }
        let binary = if encoded.starts_with("-----BEGIN PGP") {
            encoded.as_bytes().to_vec()
        } else {
            let compact: String = encoded.split_whitespace().collect();
            STANDARD.decode(compact).map_err(|_| {
                bad("it is neither base64 of a binary public key (`gpg --export <id> | base64 -w0`) nor ASCII armor"
                    .into())
            })?
        };
        let (key, _) = SignedPublicKey::from_reader_single(&binary[..])
            .map_err(|e| bad(format!("it is not an OpenPGP public key ({e})")))?;
        key.verify_bindings().map_err(|e| bad(format!("a self-signature does not verify ({e})")))?;
        if key.details.revocation_signatures.iter().any(|s| s.typ() == Some(SignatureType::KeyRevocation)) {
            return Err(bad("the key is revoked".into()));
        }
        let now = std::time::SystemTime::now();
        let subkey = key.public_subkeys.iter().position(|s| encrypts(s, now));
        if subkey.is_none() && !key.primary_key.algorithm().can_encrypt() {
            return Err(bad(format!(
                "key {} has no valid encryption subkey (export a key that can encrypt, e.g. made by `gpg --quick-gen-key`)",
                hex::encode_upper(key.fingerprint().as_bytes())
            )));
        }
        Ok(PgpRecipient { key, subkey })
    }

    /// The primary key's fingerprint in hex, as `gpg --fingerprint` shows it (without spaces).
    pub fn fingerprint(&self) -> String {
        hex::encode(self.key.fingerprint().as_bytes())
    }

    /// Encrypts `plaintext` to this key: a binary OpenPGP message (SEIPD v1, AES-256) that
    /// `gpg --decrypt` opens.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let rng = rand::rngs::OsRng;
        let mut builder =
            MessageBuilder::from_bytes("", plaintext.to_vec()).seipd_v1(rng, SymmetricKeyAlgorithm::AES256);
        let added = match self.subkey {
            Some(i) => builder.encrypt_to_key(rng, &self.key.public_subkeys[i]).map(drop),
            None => builder.encrypt_to_key(rng, &self.key.primary_key).map(drop),
        };
        added.map_err(|_| Error::Encrypt)?;
        builder.to_vec(rng).map_err(|_| Error::Encrypt)
    }
}

/// Whether a subkey may be encrypted to now: its newest binding signature flags it for
/// encryption and has not expired, no revocation is bound to it, and its algorithm can encrypt.
fn encrypts(subkey: &SignedPublicSubKey, now: std::time::SystemTime) -> bool {
    if !subkey.key.algorithm().can_encrypt() {
        return false;
    }
    if subkey.signatures.iter().any(|s| s.typ() == Some(SignatureType::SubkeyRevocation)) {
        return false;
    }
    let Some(binding) = subkey
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
        .max_by_key(|s| s.created().map(|t| t.as_secs()))
    else {
        return false;
    };
    let flags = binding.key_flags();
    if !(flags.encrypt_comms() || flags.encrypt_storage()) {
        return false;
    }
    match binding.key_expiration_time() {
        Some(valid_for) if valid_for.as_secs() != 0 => {
            let created =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(subkey.key.created_at().as_secs().into());
            created + std::time::Duration::from(valid_for) > now
        }
        _ => true,
    }
}
