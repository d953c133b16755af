//! JWT login (Kubernetes service accounts, CI workload identities, OIDC ID tokens). Keys are
//! configured by the operator, as PEM public keys or a JWKS document: the server never fetches
//! anything over the network, so a login cannot be steered to an attacker's key server.
//!
//! Only asymmetric algorithms are accepted (RS256, ES256, EdDSA; per role narrower). HMAC
//! algorithms are refused outright: with a public key configured, accepting HS256 would let
//! anyone who knows the public key forge tokens (the classic algorithm confusion), and `none`
//! is not an algorithm at all.

use std::collections::BTreeMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::TokenParams;
use crate::{Error, Result};

/// Algorithms a role may allow.
pub const SUPPORTED_ALGS: [&str; 3] = ["RS256", "ES256", "EdDSA"];
/// Leeway on `exp` and `nbf` when a role does not set one.
pub const DEFAULT_LEEWAY_SECS: u64 = 10;
const MAX_LEEWAY_SECS: u64 = 300;

/// One verification key and the algorithm its type implies.
struct VerificationKey {
    kid: Option<String>,
    key: DecodingKey,
    alg: Algorithm,
}

/// Method-wide configuration: where verification keys come from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct JwtConfig {
    /// PEM public keys (RSA, EC P-256 or Ed25519).
    pub pem_keys: Vec<String>,
    /// A JWKS document (`{"keys": [...]}`), for issuers that publish one (Kubernetes, CI).
    pub jwks: String,
    /// If set, the `iss` claim must equal it.
    pub bound_issuer: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct JwtRole {
    pub name: String,
    /// The `aud` claim must contain one of these. Required: a token minted for another service
    /// must not log in here.
    pub bound_audiences: Vec<String>,
    /// If set, `sub` must equal it.
    pub bound_subject: String,
    /// Each named claim must equal one of the listed values (strings, or string lists).
    pub bound_claims: BTreeMap<String, Vec<String>>,
    /// The claim that names the identity; default `sub`.
    pub user_claim: String,
    /// Empty: all of [`SUPPORTED_ALGS`].
    pub allowed_algs: Vec<String>,
    /// 0: [`DEFAULT_LEEWAY_SECS`].
    pub leeway_secs: u64,
    pub token: TokenParams,
}

fn parse_alg(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        "EdDSA" => Some(Algorithm::EdDSA),
        _ => None,
    }
}

impl JwtConfig {
    pub fn validate(&self) -> Result<()> {
        let keys = self.keys().map_err(Error::InvalidArgument)?;
        if keys.is_empty() {
            return Err(Error::InvalidArgument(
                "JWT config needs at least one verification key (pem_keys or jwks)".into(),
            ));
        }
        Ok(())
    }

    /// Every configured key.
    fn keys(&self) -> std::result::Result<Vec<VerificationKey>, String> {
        let mut out = Vec::new();
        for (i, pem) in self.pem_keys.iter().enumerate() {
            let pem = pem.as_bytes();
            let (key, alg) = DecodingKey::from_rsa_pem(pem)
                .map(|k| (k, Algorithm::RS256))
                .or_else(|_| DecodingKey::from_ec_pem(pem).map(|k| (k, Algorithm::ES256)))
                .or_else(|_| DecodingKey::from_ed_pem(pem).map(|k| (k, Algorithm::EdDSA)))
                .map_err(|_| format!("pem key {} is not an RSA, EC P-256 or Ed25519 public key in PEM", i + 1))?;
            out.push(VerificationKey { kid: None, key, alg });
        }
        if !self.jwks.trim().is_empty() {
            let set: JwkSet =
                serde_json::from_str(&self.jwks).map_err(|e| format!("jwks is not a JWKS document: {e}"))?;
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("jwks key unusable: {e}"))?;
                let alg = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                    // Symmetric keys would allow HMAC algorithms; refuse them.
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_) => {
                        return Err("jwks holds a symmetric key; only public keys are accepted".into())
                    }
                };
                out.push(VerificationKey { kid: jwk.common.key_id.clone(), key, alg });
            }
        }
        Ok(out)
    }
}

impl JwtRole {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.bound_audiences.is_empty() {
            return Err(Error::InvalidArgument(format!("JWT role {:?} needs at least one bound audience", self.name)));
        }
        if let Some(a) = self.allowed_algs.iter().find(|a| parse_alg(a).is_none()) {
            return Err(Error::InvalidArgument(format!(
                "JWT role {:?}: algorithm {a:?} is not allowed (use {})",
                self.name,
                SUPPORTED_ALGS.join(", ")
            )));
        }
        if self.leeway_secs > MAX_LEEWAY_SECS {
            return Err(Error::InvalidArgument(format!("leeway is at most {MAX_LEEWAY_SECS} s")));
        }
        Ok(())
    }

    fn algs(&self) -> Vec<Algorithm> {
        match self.allowed_algs.is_empty() {
            true => SUPPORTED_ALGS.iter().filter_map(|a| parse_alg(a)).collect(),
            false => self.allowed_algs.iter().filter_map(|a| parse_alg(a)).collect(),
        }
    }

    /// Verifies `jwt` against the configured keys and this role's bindings; returns the
    /// identity (the user claim). Errors name what failed, never the expected values.
    pub fn verify(&self, config: &JwtConfig, jwt: &str) -> std::result::Result<String, String> {
        let header = jsonwebtoken::decode_header(jwt)
            .map_err(|_| "not a JWT signed with a supported algorithm (RS256, ES256, EdDSA)".to_string())?;
        if !self.algs().contains(&header.alg) {
            return Err(format!("the signing algorithm {:?} is not allowed by this role", header.alg));
        }
        let leeway = if self.leeway_secs == 0 { DEFAULT_LEEWAY_SECS } else { self.leeway_secs };
        let mut validation = Validation::new(header.alg);
        validation.leeway = leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "aud"]);
        validation.set_audience(&self.bound_audiences);
        if !config.bound_issuer.is_empty() {
            validation.set_issuer(&[&config.bound_issuer]);
        }
        let keys = config.keys()?;
        // A key id narrows the keys tried; keys without one (PEM) are tried for any token.
        let candidates = keys
            .iter()
            .filter(|k| k.alg == header.alg && (header.kid.is_none() || k.kid.is_none() || k.kid == header.kid));
        let mut last = "no configured key matches the token's algorithm or key id".to_string();
        for candidate in candidates {
            match jsonwebtoken::decode::<BTreeMap<String, Value>>(jwt, &candidate.key, &validation) {
                Ok(data) => return self.check_claims(&data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind::*;
                    last = match e.kind() {
                        InvalidSignature => "bad signature".into(),
                        ExpiredSignature => "the token has expired".into(),
                        ImmatureSignature => "the token is not valid yet (nbf)".into(),
                        InvalidAudience => "audience (aud) not accepted by this role".into(),
                        InvalidIssuer => "issuer (iss) not accepted".into(),
                        MissingRequiredClaim(c) => format!("the token has no {c:?} claim"),
                        _ => "the token is malformed".into(),
                    };
                    // A signature that verified but failed a claim will fail with every key.
                    if !matches!(e.kind(), InvalidSignature) {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    fn check_claims(&self, claims: &BTreeMap<String, Value>) -> std::result::Result<String, String> {
        let as_strings = |v: &Value| -> Vec<String> {
            match v {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
                Value::Bool(b) => vec![b.to_string()],
                Value::Number(n) => vec![n.to_string()],
                _ => vec![],
            }
        };
        if !self.bound_subject.is_empty()
            && claims.get("sub").and_then(Value::as_str) != Some(self.bound_subject.as_str())
        {
            return Err("subject (sub) not accepted by this role".into());
        }
        for (claim, allowed) in &self.bound_claims {
            let got = claims.get(claim).map(as_strings).unwrap_or_default();
            if !got.iter().any(|g| allowed.contains(g)) {
                return Err(format!("claim {claim:?} not accepted by this role"));
            }
        }
        let user_claim = if self.user_claim.is_empty() { "sub" } else { self.user_claim.as_str() };
        claims
            .get(user_claim)
            .and_then(|v| as_strings(v).into_iter().next())
            .ok_or_else(|| format!("the token has no {user_claim:?} claim to name the identity"))
    }
}
