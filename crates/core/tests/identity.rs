//! Identity on a real 3-node cluster (in process): policies, token trees and TTLs, use counts,
//! AppRole and JWT logins, generate-root. TLS-certificate login needs the TLS front end and is
//! tested end to end in the root `tests/identity.rs`.

mod common;

use std::time::Duration;

use arca_core::auth::{AppRole, Credentials, JwtConfig, JwtRole, RoleConfig, TokenParams};
use arca_core::{Error, Operation, Reply, Request, TokenCreate, TokenInfo, TokenRef};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{call, data, Vault};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use zeroize::Zeroizing;

const APP_READ: &str = r#"path "secret/data/app/*" { capabilities = ["read"] }"#;
const CREATOR: &str = r#"
path "auth/token/create" { capabilities = ["update"] }
path "secret/data/app/private*" { capabilities = ["deny"] }
"#;

fn get(path: &str) -> Operation {
    Operation::KvGet { path: path.into(), version: None }
}

fn put(path: &str) -> Operation {
    Operation::KvPut { path: path.into(), data: data(&[("k", "v")]), cas: None }
}

fn create(policies: &[&str]) -> TokenCreate {
    TokenCreate { policies: policies.iter().map(|p| p.to_string()).collect(), renewable: true, ..Default::default() }
}

async fn new_token(
    vault: &Vault,
    core: usize,
    as_token: &str,
    spec: TokenCreate,
) -> Result<(String, TokenInfo), Error> {
    match call(&vault.cores[core], Some(as_token), Operation::TokenCreate(spec)).await? {
        Reply::TokenCreated { token, info } => Ok((token.to_string(), info)),
        other => panic!("{other:?}"),
    }
}

fn denied(result: Result<Reply, Error>) -> String {
    match result {
        Err(e @ Error::PermissionDenied(_)) => e.to_string(),
        other => panic!("expected permission denied, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn policies_limit_tokens_and_children_die_with_their_parents() {
    let v = Vault::start().await;
    v.root(0, put("app/db")).await;
    v.root(0, put("app/private/key")).await;
    v.root(0, put("other/x")).await;
    for (name, text) in [("app-read", APP_READ), ("creator", CREATOR)] {
        v.root(1, Operation::PolicyWrite { name: name.into(), text: text.into() }).await;
    }
    let (parent, parent_info) = new_token(&v, 0, &v.root, create(&["app-read", "creator"])).await.unwrap();
    assert_eq!(parent_info.policies, vec!["app-read", "creator", "default"]);

    // Compiled on every node at apply time: the first request on another node already sees it.
    for core in &v.cores {
        assert!(matches!(call(core, Some(&parent), get("app/db")).await.unwrap(), Reply::KvSecret { .. }));
    }
    let err = denied(call(&v.cores[2], Some(&parent), put("app/db")).await);
    assert!(err.contains("secret/data/app/db") && err.contains("'update'"), "{err}");
    assert!(!err.contains("app/*") && !err.contains("app-read"), "no policy contents: {err}");
    let err = denied(call(&v.cores[1], Some(&parent), put("app/new")).await);
    assert!(err.contains("'create'"), "a new secret needs create: {err}");
    let err = denied(call(&v.cores[1], Some(&parent), get("other/x")).await);
    assert!(err.contains("secret/data/other/x") && err.contains("'read'"), "{err}");
    denied(call(&v.cores[1], Some(&parent), get("app/private/key")).await);
    denied(call(&v.cores[1], Some(&parent), Operation::PolicyList).await);

    let caps = |paths: &[&str]| Operation::Capabilities {
        target: TokenRef::SelfToken,
        paths: paths.iter().map(|p| p.to_string()).collect(),
    };
    let Reply::Capabilities(c) =
        call(&v.cores[0], Some(&parent), caps(&["secret/data/app/db", "sys/seal"])).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(c, vec![("secret/data/app/db".into(), vec!["read".into()]), ("sys/seal".into(), vec!["deny".into()])]);

    // A child never holds more than its parent, and lives no longer.
    let err = denied(call(&v.cores[0], Some(&parent), Operation::TokenCreate(create(&["admin"]))).await);
    assert!(err.contains("\"admin\""), "{err}");
    denied(call(&v.cores[0], Some(&parent), Operation::TokenCreate(create(&["root"]))).await);
    let (child, child_info) = new_token(&v, 1, &parent, create(&["app-read"])).await.unwrap();
    assert_eq!(child_info.parent.as_deref(), Some(parent_info.accessor.as_str()));
    assert!(child_info.expires_ms <= parent_info.expires_ms);
    // The child lacks auth/token/create; orphans need auth/token/create-orphan.
    denied(call(&v.cores[2], Some(&child), Operation::TokenCreate(create(&[]))).await);
    let orphan = TokenCreate { orphan: true, ..create(&["app-read"]) };
    let err = denied(call(&v.cores[1], Some(&parent), Operation::TokenCreate(orphan)).await);
    assert!(err.contains("auth/token/create-orphan"), "{err}");

    // Revoking the parent revokes the child, on every node.
    v.root(2, Operation::TokenRevoke(TokenRef::Accessor(parent_info.accessor.clone()))).await;
    for core in &v.cores {
        for t in [&parent, &child] {
            assert!(
                matches!(call(core, Some(t), get("app/db")).await, Err(Error::BadToken)),
                "node {}",
                core.node().id()
            );
        }
    }
    let Reply::Accessors(live) = v.root(0, Operation::TokenListAccessors).await else { panic!() };
    assert!(!live.contains(&parent_info.accessor) && !live.contains(&child_info.accessor));

    // Deleting a policy takes effect at once; the built-in ones cannot be deleted.
    let (reader, _) = new_token(&v, 0, &v.root, create(&["app-read"])).await.unwrap();
    v.root(0, Operation::PolicyDelete { name: "app-read".into() }).await;
    denied(call(&v.cores[2], Some(&reader), get("app/db")).await);
    for builtin in ["root", "default"] {
        let err = call(&v.cores[0], Some(&v.root), Operation::PolicyDelete { name: builtin.into() }).await.unwrap_err();
        assert!(err.to_string().contains("built in"), "{err}");
    }
    let err = call(&v.cores[0], Some(&v.root), Operation::PolicyWrite { name: "bad".into(), text: "path {".into() })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    v.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ttls_expire_everywhere_renewals_stop_at_max_ttl_and_uses_run_out() {
    let v = Vault::start().await;
    v.root(0, put("app/db")).await;
    let spec = TokenCreate {
        ttl: Some(Duration::from_secs(2)),
        max_ttl: Some(Duration::from_secs(4)),
        ..create(&["default"])
    };
    let (token, info) = new_token(&v, 0, &v.root, spec).await.unwrap();
    let lookup = |t: &str| Operation::TokenLookup(TokenRef::Token(Zeroizing::new(t.to_string())));
    for core in &v.cores {
        assert!(matches!(
            call(core, Some(&token), Operation::TokenLookup(TokenRef::SelfToken)).await,
            Ok(Reply::Token(_))
        ));
    }
    // Renew extends, but never past the max TTL.
    let renew = |inc| Operation::TokenRenew { target: TokenRef::SelfToken, increment: Some(Duration::from_secs(inc)) };
    let Reply::Token(renewed) = call(&v.cores[1], Some(&token), renew(100)).await.unwrap() else { panic!() };
    assert_eq!(renewed.expires_ms, info.max_expires_ms, "capped at max TTL");
    let Reply::Token(seen) = v.root(2, lookup(&token)).await else { panic!() };
    assert_eq!(seen.expires_ms, info.max_expires_ms);

    tokio::time::sleep(Duration::from_millis((info.max_expires_ms.unwrap() - now_ms()).max(0) as u64 + 100)).await;
    for core in &v.cores {
        let r = call(core, Some(&token), Operation::TokenLookup(TokenRef::SelfToken)).await;
        assert!(matches!(r, Err(Error::BadToken)), "node {}: {r:?}", core.node().id());
    }
    // The leader purges it with a committed command.
    let Reply::Accessors(before) = v.root(0, Operation::TokenListAccessors).await else { panic!() };
    assert!(before.contains(&info.accessor));
    let leader = v.leader_core().await;
    assert!(leader.purge_expired().await.unwrap() >= 1);
    for i in 0..3 {
        let Reply::Accessors(after) = v.root(i, Operation::TokenListAccessors).await else { panic!() };
        assert!(!after.contains(&info.accessor), "purged on node {i}");
    }

    // Non-renewable tokens refuse renewal; use counts run out.
    let (fixed, _) = new_token(&v, 0, &v.root, TokenCreate { renewable: false, ..create(&["default"]) }).await.unwrap();
    let err = call(&v.cores[0], Some(&fixed), renew(10)).await.unwrap_err();
    assert!(err.to_string().contains("not renewable"), "{err}");
    let (limited, _) = new_token(&v, 0, &v.root, TokenCreate { num_uses: 2, ..create(&["default"]) }).await.unwrap();
    let self_lookup = || Operation::TokenLookup(TokenRef::SelfToken);
    let Reply::Token(first) = call(&v.cores[1], Some(&limited), self_lookup()).await.unwrap() else { panic!() };
    assert_eq!(first.uses_left, Some(1));
    call(&v.cores[2], Some(&limited), self_lookup()).await.unwrap();
    assert!(matches!(call(&v.cores[0], Some(&limited), self_lookup()).await, Err(Error::BadToken)));
    v.cluster.shutdown().await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn login(v: &Vault, core: usize, creds: Credentials) -> Result<(String, TokenInfo), Error> {
    let mut req = Request::new(None, Operation::Login(creds));
    req.remote = Some("127.0.0.1:4000".parse().unwrap());
    match v.cores[core].handle(req).await? {
        Reply::TokenCreated { token, info } => Ok((token.to_string(), info)),
        other => panic!("{other:?}"),
    }
}

fn approle_creds(role_id: &str, secret_id: &str) -> Credentials {
    Credentials::AppRole { role_id: role_id.into(), secret_id: Zeroizing::new(secret_id.into()) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approle_logins_honour_secret_id_ttl_uses_and_cidrs() {
    let v = Vault::start().await;
    v.root(0, Operation::PolicyWrite { name: "app-read".into(), text: APP_READ.into() }).await;
    v.root(0, put("app/db")).await;
    let role = |name: &str, uses, ttl, cidrs: &[&str]| {
        Operation::RoleWrite(RoleConfig::AppRole(AppRole {
            name: name.into(),
            token: TokenParams { policies: vec!["app-read".into()], ttl_secs: 60, ..Default::default() },
            secret_id_num_uses: uses,
            secret_id_ttl_secs: ttl,
            bound_cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }))
    };
    v.root(0, role("web", 1, 1, &[])).await;
    let Reply::RoleId(role_id) = v.root(1, Operation::AppRoleRoleId { name: "web".into() }).await else { panic!() };
    let secret_id = || async {
        match v.root(2, Operation::AppRoleSecretId { name: "web".into() }).await {
            Reply::SecretId { secret_id, .. } => secret_id.to_string(),
            other => panic!("{other:?}"),
        }
    };
    let once = secret_id().await;
    let (token, info) = login(&v, 1, approle_creds(&role_id, &once)).await.unwrap();
    assert_eq!((info.auth.method.as_str(), info.auth.role.as_str()), ("approle", "web"));
    assert!(info.policies.contains(&"app-read".to_string()));
    assert!(matches!(call(&v.cores[2], Some(&token), get("app/db")).await, Ok(Reply::KvSecret { .. })));

    let refused = |r: Result<(String, TokenInfo), Error>| match r {
        Err(e @ Error::LoginFailed(_)) => e.to_string(),
        other => panic!("expected a refused login, got {other:?}"),
    };
    let used_up = refused(login(&v, 0, approle_creds(&role_id, &once)).await);
    assert!(used_up.contains("invalid role_id or secret_id"), "{used_up}");
    let expiring = secret_id().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = refused(login(&v, 2, approle_creds(&role_id, &expiring)).await);
    assert_eq!(expired, used_up, "expired and used up look the same to the caller");
    let wrong = refused(login(&v, 0, approle_creds("not-a-role", &secret_id().await)).await);
    assert_eq!(wrong, used_up);

    // Updating the role keeps its role id; bound CIDRs refuse other origins.
    v.root(0, role("web", 0, 0, &["10.0.0.0/8"])).await;
    let Reply::RoleId(same) = v.root(0, Operation::AppRoleRoleId { name: "web".into() }).await else { panic!() };
    assert_eq!(same, role_id);
    let err = refused(login(&v, 0, approle_creds(&role_id, &secret_id().await)).await);
    assert!(err.contains("not allowed from this address"), "{err}");
    v.root(0, role("web", 0, 0, &["127.0.0.0/8"])).await;
    login(&v, 0, approle_creds(&role_id, &secret_id().await)).await.unwrap();

    // Deleting the role ends its logins.
    let spare = secret_id().await;
    v.root(0, Operation::RoleDelete { method: arca_core::auth::Method::AppRole, name: "web".into() }).await;
    refused(login(&v, 0, approle_creds(&role_id, &spare)).await);
    v.cluster.shutdown().await;
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    aud: &'a str,
    iss: &'a str,
    exp: i64,
    nbf: i64,
    team: &'a str,
}

fn claims(aud: &str, exp_in_secs: i64) -> Claims<'_> {
    let now = now_ms() / 1000;
    Claims {
        sub: "system:serviceaccount:prod:billing",
        aud,
        iss: "https://issuer.test",
        exp: now + exp_in_secs,
        nbf: now - 5,
        team: "billing",
    }
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Claims<'_>, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_logins_accept_rs256_and_es256_and_refuse_everything_else() {
    let v = Vault::start().await;
    v.root(0, Operation::PolicyWrite { name: "app-read".into(), text: APP_READ.into() }).await;
    let rsa_private = EncodingKey::from_rsa_pem(include_bytes!("fixtures/jwt-rs256-test-key.pem")).unwrap();
    let rsa_public = include_str!("fixtures/jwt-rs256-test-pub.pem").to_string();
    // The EC key is configured as a JWKS entry, the RSA key as PEM.
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ec_private = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap();
    let point = ec.public_key_raw();
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]});
    let config =
        JwtConfig { pem_keys: vec![rsa_public], jwks: jwks.to_string(), bound_issuer: "https://issuer.test".into() };
    v.root(0, Operation::JwtConfigWrite(config)).await;
    let role = JwtRole {
        name: "k8s".into(),
        bound_audiences: vec!["arca".into()],
        bound_claims: [("team".to_string(), vec!["billing".to_string()])].into(),
        token: TokenParams { policies: vec!["app-read".into()], ..Default::default() },
        ..Default::default()
    };
    v.root(1, Operation::RoleWrite(RoleConfig::Jwt(role))).await;
    let jwt = |token: String| Credentials::Jwt { role: "k8s".into(), jwt: Zeroizing::new(token) };

    let (_, info) = login(&v, 2, jwt(sign(Algorithm::RS256, &rsa_private, &claims("arca", 60), None))).await.unwrap();
    assert_eq!(info.auth.identity, "system:serviceaccount:prod:billing");
    assert!(info.policies.contains(&"app-read".to_string()));
    login(&v, 0, jwt(sign(Algorithm::ES256, &ec_private, &claims("arca", 60), Some("ec-1")))).await.unwrap();

    let other_ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let forged_key = EncodingKey::from_ec_pem(other_ec.serialize_pem().as_bytes()).unwrap();
    let header_none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&serde_json::json!({
            "sub": "x", "aud": "arca", "iss": "https://issuer.test", "exp": now_ms() / 1000 + 60, "team": "billing"
        }))
        .unwrap(),
    );
    let hs256 = sign(Algorithm::HS256, &EncodingKey::from_secret(b"guessable"), &claims("arca", 60), None);
    let wrong_team = Claims { team: "ops", ..claims("arca", 60) };
    for (what, token, expected) in [
        ("wrong audience", sign(Algorithm::RS256, &rsa_private, &claims("other", 60), None), "audience"),
        ("expired", sign(Algorithm::RS256, &rsa_private, &claims("arca", -120), None), "expired"),
        ("bad signature", sign(Algorithm::ES256, &forged_key, &claims("arca", 60), Some("ec-1")), "bad signature"),
        ("alg none", format!("{header_none}.{body}."), "supported algorithm"),
        ("HS256", hs256, "not allowed"),
        ("bound claim", sign(Algorithm::RS256, &rsa_private, &wrong_team, None), "claim \"team\""),
        ("garbage", "not.a.jwt".to_string(), "supported algorithm"),
    ] {
        match login(&v, 1, jwt(token)).await {
            Err(e @ Error::LoginFailed(_)) => {
                let msg = e.to_string();
                assert!(msg.contains(expected), "{what}: {msg}");
                assert!(!msg.contains("billing") && !msg.contains("arca\""), "{what}: reveals the role: {msg}");
            }
            other => panic!("{what}: expected refusal, got {other:?}"),
        }
    }
    v.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generate_root_needs_a_threshold_of_valid_shares() {
    use arca_core::ceremony::{decode_token, generate_otp, CeremonyStep, GenerateRootParams};
    let v = Vault::start().await;
    let otp = generate_otp().unwrap();
    let start = CeremonyStep::Start(GenerateRootParams::Otp(otp.clone()));
    let Reply::GenerateRoot { status, encoded_token: None } =
        call(&v.cores[1], None, Operation::GenerateRoot(start)).await.unwrap()
    else {
        panic!()
    };
    let nonce = status.nonce.unwrap();
    let gen = |share: &str| {
        Operation::GenerateRoot(CeremonyStep::Submit {
            nonce: Zeroizing::new(nonce.clone()),
            share: Zeroizing::new(share.into()),
        })
    };
    // A malformed share is refused and does not count.
    assert!(matches!(call(&v.cores[1], None, gen("garbage")).await, Err(Error::Share(_))));
    let Reply::GenerateRoot { status, encoded_token: None } = call(&v.cores[1], None, gen(&v.shares[0])).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(status.progress, 1);
    let Reply::GenerateRoot { encoded_token: Some(encoded), .. } =
        call(&v.cores[1], None, gen(&v.shares[2])).await.unwrap()
    else {
        panic!()
    };
    // What the last share holder got is not a token; the starter's pad makes it one.
    assert!(matches!(
        call(&v.cores[0], Some(&encoded), put("ops/x")).await,
        Err(Error::BadToken | Error::MissingToken)
    ));
    let new_root = decode_token(&encoded, &otp).unwrap();
    call(&v.cores[0], Some(&new_root), put("ops/x")).await.unwrap();
    // The old root token can be revoked; the new one goes on.
    call(&v.cores[0], Some(&v.root), Operation::TokenRevoke(TokenRef::SelfToken)).await.unwrap();
    assert!(matches!(call(&v.cores[2], Some(&v.root), get("ops/x")).await, Err(Error::BadToken)));
    call(&v.cores[2], Some(&new_root), get("ops/x")).await.unwrap();
    v.cluster.shutdown().await;
}
