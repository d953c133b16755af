//! Token, Policy and Auth services: translation between the protobuf messages and the core's
//! identity types. All decisions are the core's.

use std::time::Duration;

use arca_core::auth::{AppRole, CertRole, Credentials, JwtConfig, JwtRole, Method, RoleConfig, TokenParams};
use arca_core::{Operation, Reply, TokenCreate, TokenRef};
use tonic::{Request as GrpcRequest, Response, Status};
use zeroize::Zeroizing;

use super::{Api, R};
use crate::proto;

fn token_info(t: arca_core::TokenInfo) -> proto::TokenInfo {
    proto::TokenInfo {
        accessor: t.accessor,
        policies: t.policies,
        display_name: t.display_name,
        created_ms: t.created_ms,
        expires_ms: t.expires_ms.unwrap_or(0),
        max_expires_ms: t.max_expires_ms.unwrap_or(0),
        renewable: t.renewable,
        uses_left: t.uses_left,
        parent_accessor: t.parent.unwrap_or_default(),
        meta: t.meta.into_iter().collect(),
        auth_method: t.auth.method,
        role: t.auth.role,
        identity: t.auth.identity,
    }
}

fn target(t: Option<&proto::TokenTarget>) -> TokenRef {
    use proto::token_target::Target;
    match t.and_then(|t| t.target.as_ref()) {
        Some(Target::Token(tok)) if !tok.is_empty() => TokenRef::Token(Zeroizing::new(tok.clone())),
        Some(Target::Accessor(a)) if !a.is_empty() => TokenRef::Accessor(a.clone()),
        _ => TokenRef::SelfToken,
    }
}

fn secs(s: u64) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(s))
}

impl Api {
    async fn token_reply<T>(&self, req: &GrpcRequest<T>, op: Operation) -> R<proto::TokenInfo> {
        let t = self.call_as(req, op, Reply::into_token).await?;
        Ok(Response::new(token_info(t)))
    }

    async fn login<T>(&self, req: &GrpcRequest<T>, creds: Credentials) -> R<proto::LoginResponse> {
        let arca_core::TokenCreated { token, info } =
            self.call_as(req, Operation::Login(creds), Reply::into_token_created).await?;
        Ok(Response::new(proto::LoginResponse { token: token.to_string(), info: Some(token_info(info)) }))
    }

    async fn done<T, U: Default>(&self, req: &GrpcRequest<T>, op: Operation) -> R<U> {
        self.call(req, op).await?;
        Ok(Response::new(U::default()))
    }

    async fn role<T>(&self, req: &GrpcRequest<T>, method: Method, name: &str) -> Result<RoleConfig, Status> {
        let r = self.call_as(req, Operation::RoleRead { method, name: name.to_string() }, Reply::into_role).await?;
        Ok(r)
    }
}

#[tonic::async_trait]
impl proto::token_server::Token for Api {
    async fn create(&self, req: GrpcRequest<proto::CreateTokenRequest>) -> R<proto::CreateTokenResponse> {
        let r = req.get_ref();
        let op = Operation::TokenCreate(TokenCreate {
            policies: r.policies.clone(),
            ttl: secs(r.ttl_seconds),
            max_ttl: secs(r.max_ttl_seconds),
            display_name: r.display_name.clone(),
            meta: r.meta.clone().into_iter().collect(),
            orphan: r.orphan,
            no_default_policy: r.no_default_policy,
            renewable: r.renewable.unwrap_or(true),
            num_uses: r.num_uses,
        });
        let arca_core::TokenCreated { token, info } = self.call_as(&req, op, Reply::into_token_created).await?;
        Ok(Response::new(proto::CreateTokenResponse { token: token.to_string(), info: Some(token_info(info)) }))
    }

    async fn lookup(&self, req: GrpcRequest<proto::TokenTarget>) -> R<proto::TokenInfo> {
        let op = Operation::TokenLookup(target(Some(req.get_ref())));
        self.token_reply(&req, op).await
    }

    async fn renew(&self, req: GrpcRequest<proto::RenewRequest>) -> R<proto::TokenInfo> {
        let r = req.get_ref();
        let op = Operation::TokenRenew { target: target(r.target.as_ref()), increment: secs(r.increment_seconds) };
        self.token_reply(&req, op).await
    }

    async fn revoke(&self, req: GrpcRequest<proto::TokenTarget>) -> R<proto::RevokeResponse> {
        let op = Operation::TokenRevoke(target(Some(req.get_ref())));
        self.done(&req, op).await
    }

    async fn revoke_orphan(&self, req: GrpcRequest<proto::TokenTarget>) -> R<proto::RevokeResponse> {
        let op = Operation::TokenRevokeOrphan(target(Some(req.get_ref())));
        self.done(&req, op).await
    }

    async fn list_accessors(&self, req: GrpcRequest<proto::ListAccessorsRequest>) -> R<proto::ListAccessorsResponse> {
        let accessors = self.call_as(&req, Operation::TokenListAccessors, Reply::into_accessors).await?;
        Ok(Response::new(proto::ListAccessorsResponse { accessors }))
    }

    async fn capabilities(&self, req: GrpcRequest<proto::CapabilitiesRequest>) -> R<proto::CapabilitiesResponse> {
        let r = req.get_ref();
        let op = Operation::Capabilities { target: target(r.target.as_ref()), paths: r.paths.clone() };
        let caps = self.call_as(&req, op, Reply::into_capabilities).await?;
        Ok(Response::new(proto::CapabilitiesResponse {
            paths: caps
                .into_iter()
                .map(|(path, capabilities)| proto::PathCapabilities { path, capabilities })
                .collect(),
        }))
    }
}

#[tonic::async_trait]
impl proto::policy_server::Policy for Api {
    async fn write(&self, req: GrpcRequest<proto::WritePolicyRequest>) -> R<proto::WritePolicyResponse> {
        let r = req.get_ref();
        self.done(&req, Operation::PolicyWrite { name: r.name.clone(), text: r.policy.clone() }).await
    }

    async fn read(&self, req: GrpcRequest<proto::ReadPolicyRequest>) -> R<proto::PolicyDocument> {
        let (name, text) =
            self.call_as(&req, Operation::PolicyRead { name: req.get_ref().name.clone() }, Reply::into_policy).await?;
        Ok(Response::new(proto::PolicyDocument { name, policy: text }))
    }

    async fn list(&self, req: GrpcRequest<proto::ListPoliciesRequest>) -> R<proto::ListPoliciesResponse> {
        let names = self.call_as(&req, Operation::PolicyList, Reply::into_names).await?;
        Ok(Response::new(proto::ListPoliciesResponse { names }))
    }

    async fn delete(&self, req: GrpcRequest<proto::DeletePolicyRequest>) -> R<proto::DeletePolicyResponse> {
        self.done(&req, Operation::PolicyDelete { name: req.get_ref().name.clone() }).await
    }
}

fn params(p: Option<&proto::TokenParams>) -> TokenParams {
    let p = p.cloned().unwrap_or_default();
    TokenParams { policies: p.policies, ttl_secs: p.ttl_seconds, max_ttl_secs: p.max_ttl_seconds, num_uses: p.num_uses }
}

fn proto_params(p: TokenParams) -> Option<proto::TokenParams> {
    Some(proto::TokenParams {
        policies: p.policies,
        ttl_seconds: p.ttl_secs,
        max_ttl_seconds: p.max_ttl_secs,
        num_uses: p.num_uses,
    })
}

fn method(m: i32) -> Result<Method, Status> {
    match proto::AuthMethod::try_from(m) {
        Ok(proto::AuthMethod::Approle) => Ok(Method::AppRole),
        Ok(proto::AuthMethod::Cert) => Ok(Method::Cert),
        Ok(proto::AuthMethod::Jwt) => Ok(Method::Jwt),
        _ => Err(Status::invalid_argument("method must be one of approle, cert, jwt")),
    }
}

fn wrong_kind(name: &str) -> Status {
    Status::internal(format!("role {name:?} is stored as another kind"))
}

#[tonic::async_trait]
impl proto::auth_server::Auth for Api {
    async fn login_app_role(&self, req: GrpcRequest<proto::AppRoleLoginRequest>) -> R<proto::LoginResponse> {
        let r = req.get_ref();
        let creds = Credentials::AppRole { role_id: r.role_id.clone(), secret_id: Zeroizing::new(r.secret_id.clone()) };
        self.login(&req, creds).await
    }

    async fn login_cert(&self, req: GrpcRequest<proto::CertLoginRequest>) -> R<proto::LoginResponse> {
        let role = &req.get_ref().role;
        let creds = Credentials::Cert { role: (!role.is_empty()).then(|| role.clone()) };
        self.login(&req, creds).await
    }

    async fn login_jwt(&self, req: GrpcRequest<proto::JwtLoginRequest>) -> R<proto::LoginResponse> {
        let r = req.get_ref();
        let creds = Credentials::Jwt { role: r.role.clone(), jwt: Zeroizing::new(r.jwt.clone()) };
        self.login(&req, creds).await
    }

    async fn write_app_role(&self, req: GrpcRequest<proto::AppRole>) -> R<proto::WriteRoleResponse> {
        let r = req.get_ref();
        let role = AppRole {
            name: r.name.clone(),
            role_id: String::new(),
            token: params(r.token.as_ref()),
            secret_id_ttl_secs: r.secret_id_ttl_seconds,
            secret_id_num_uses: r.secret_id_num_uses,
            bound_cidrs: r.bound_cidrs.clone(),
        };
        self.done(&req, Operation::RoleWrite(RoleConfig::AppRole(role))).await
    }

    async fn read_app_role(&self, req: GrpcRequest<proto::RoleName>) -> R<proto::AppRole> {
        let name = &req.get_ref().name;
        let RoleConfig::AppRole(r) = self.role(&req, Method::AppRole, name).await? else {
            return Err(wrong_kind(name));
        };
        Ok(Response::new(proto::AppRole {
            name: r.name,
            role_id: r.role_id,
            token: proto_params(r.token),
            secret_id_ttl_seconds: r.secret_id_ttl_secs,
            secret_id_num_uses: r.secret_id_num_uses,
            bound_cidrs: r.bound_cidrs,
        }))
    }

    async fn read_role_id(&self, req: GrpcRequest<proto::RoleName>) -> R<proto::RoleIdResponse> {
        let role_id = self
            .call_as(&req, Operation::AppRoleRoleId { name: req.get_ref().name.clone() }, Reply::into_role_id)
            .await?;
        Ok(Response::new(proto::RoleIdResponse { role_id }))
    }

    async fn generate_secret_id(&self, req: GrpcRequest<proto::RoleName>) -> R<proto::SecretIdResponse> {
        let arca_core::SecretIdIssued { secret_id, accessor, expires_ms } = self
            .call_as(&req, Operation::AppRoleSecretId { name: req.get_ref().name.clone() }, Reply::into_secret_id)
            .await?;
        Ok(Response::new(proto::SecretIdResponse {
            secret_id: secret_id.to_string(),
            accessor,
            expires_ms: expires_ms.unwrap_or(0),
        }))
    }

    async fn write_cert_role(&self, req: GrpcRequest<proto::CertRole>) -> R<proto::WriteRoleResponse> {
        let r = req.get_ref();
        let role = CertRole {
            name: r.name.clone(),
            ca_pem: r.ca_pem.clone(),
            allowed_common_names: r.allowed_common_names.clone(),
            allowed_dns_sans: r.allowed_dns_sans.clone(),
            token: params(r.token.as_ref()),
        };
        self.done(&req, Operation::RoleWrite(RoleConfig::Cert(role))).await
    }

    async fn read_cert_role(&self, req: GrpcRequest<proto::RoleName>) -> R<proto::CertRole> {
        let name = &req.get_ref().name;
        let RoleConfig::Cert(r) = self.role(&req, Method::Cert, name).await? else { return Err(wrong_kind(name)) };
        Ok(Response::new(proto::CertRole {
            name: r.name,
            ca_pem: r.ca_pem,
            allowed_common_names: r.allowed_common_names,
            allowed_dns_sans: r.allowed_dns_sans,
            token: proto_params(r.token),
        }))
    }

    async fn write_jwt_role(&self, req: GrpcRequest<proto::JwtRole>) -> R<proto::WriteRoleResponse> {
        let r = req.get_ref();
        let role = JwtRole {
            name: r.name.clone(),
            bound_audiences: r.bound_audiences.clone(),
            bound_subject: r.bound_subject.clone(),
            bound_claims: r.bound_claims.iter().map(|(k, v)| (k.clone(), v.values.clone())).collect(),
            user_claim: r.user_claim.clone(),
            allowed_algs: r.allowed_algs.clone(),
            leeway_secs: r.leeway_seconds,
            token: params(r.token.as_ref()),
        };
        self.done(&req, Operation::RoleWrite(RoleConfig::Jwt(role))).await
    }

    async fn read_jwt_role(&self, req: GrpcRequest<proto::RoleName>) -> R<proto::JwtRole> {
        let name = &req.get_ref().name;
        let RoleConfig::Jwt(r) = self.role(&req, Method::Jwt, name).await? else { return Err(wrong_kind(name)) };
        Ok(Response::new(proto::JwtRole {
            name: r.name,
            bound_audiences: r.bound_audiences,
            bound_subject: r.bound_subject,
            bound_claims: r.bound_claims.into_iter().map(|(k, values)| (k, proto::StringList { values })).collect(),
            user_claim: r.user_claim,
            allowed_algs: r.allowed_algs,
            leeway_seconds: r.leeway_secs,
            token: proto_params(r.token),
        }))
    }

    async fn write_jwt_config(&self, req: GrpcRequest<proto::JwtConfig>) -> R<proto::WriteRoleResponse> {
        let r = req.get_ref();
        let config =
            JwtConfig { pem_keys: r.pem_keys.clone(), jwks: r.jwks.clone(), bound_issuer: r.bound_issuer.clone() };
        self.done(&req, Operation::JwtConfigWrite(config)).await
    }

    async fn read_jwt_config(&self, req: GrpcRequest<proto::ReadJwtConfigRequest>) -> R<proto::JwtConfig> {
        let c = self.call_as(&req, Operation::JwtConfigRead, Reply::into_jwt_config).await?;
        Ok(Response::new(proto::JwtConfig { pem_keys: c.pem_keys, jwks: c.jwks, bound_issuer: c.bound_issuer }))
    }

    async fn list_roles(&self, req: GrpcRequest<proto::ListRolesRequest>) -> R<proto::ListRolesResponse> {
        let method = method(req.get_ref().method)?;
        let names = self.call_as(&req, Operation::RoleList { method }, Reply::into_names).await?;
        Ok(Response::new(proto::ListRolesResponse { names }))
    }

    async fn delete_role(&self, req: GrpcRequest<proto::DeleteRoleRequest>) -> R<proto::DeleteRoleResponse> {
        let r = req.get_ref();
        let op = Operation::RoleDelete { method: method(r.method)?, name: r.name.clone() };
        self.done(&req, op).await
    }
}
