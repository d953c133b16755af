//! The client API: gRPC services translating to and from [`arca_core`]. The only place where
//! core errors become gRPC statuses.

mod audit;
mod identity;
mod rotation;
mod snapshot;
mod watch;

use arca_core::ceremony::{self, CeremonyStatus, CeremonyStep, GenerateRootParams, RekeyParams};
use arca_core::{Core, Error as CoreError, Operation, Reply, Request, SecretData};
use tonic::{Request as GrpcRequest, Response, Status};
use zeroize::Zeroizing;

use crate::proto;

/// Maps a core error to the gRPC status a client sees. The message is the core's, which is
/// written for users and never contains a secret.
pub(crate) fn status(e: CoreError) -> Status {
    let msg = e.to_string();
    match e {
        CoreError::Sealed | CoreError::Cluster(_) | CoreError::JoinFailed { .. } | CoreError::AuditUnavailable => {
            Status::unavailable(msg)
        }
        CoreError::NotInitialized
        | CoreError::CasMismatch { .. }
        | CoreError::Rotation(_)
        | CoreError::FailedPrecondition(_) => Status::failed_precondition(msg),
        CoreError::AlreadyInitialized => Status::already_exists(msg),
        CoreError::InvalidArgument(_) | CoreError::Share(_) => Status::invalid_argument(msg),
        CoreError::MissingToken | CoreError::BadToken | CoreError::LoginFailed(_) => Status::unauthenticated(msg),
        CoreError::PermissionDenied(_) => Status::permission_denied(msg),
        CoreError::NotFound(_) => Status::not_found(msg),
        CoreError::Conflict => Status::aborted(msg),
        // gRPC's own meaning: the deadline passed, and a change may have completed anyway.
        CoreError::WriteUnconfirmed => Status::deadline_exceeded(msg),
        CoreError::Storage(_) | CoreError::Corrupt { .. } | CoreError::Internal(_) => Status::internal(msg),
        CoreError::RateLimited { .. } => Status::resource_exhausted(msg),
    }
}

/// The token from `authorization` metadata (`Bearer <token>` or the bare token).
pub(crate) fn token<T>(req: &GrpcRequest<T>) -> Option<Zeroizing<String>> {
    let raw = req.metadata().get("authorization")?.to_str().ok()?;
    let t = raw.strip_prefix("Bearer ").unwrap_or(raw).trim();
    (!t.is_empty()).then(|| Zeroizing::new(t.to_string()))
}

#[derive(Clone)]
pub(crate) struct Api {
    pub core: Core,
    /// Open watch streams and audit tails per token.
    pub streams: std::sync::Arc<crate::limits::StreamSlots>,
}

impl Api {
    async fn call<T>(&self, req: &GrpcRequest<T>, op: Operation) -> Result<Reply, Status> {
        let client = req.extensions().get::<crate::tls::ClientInfo>();
        if let Some(seen) = req.extensions().get::<crate::limits::Seen>() {
            seen.mark();
        }
        let request = Request {
            token: token(req),
            remote: client.and_then(|c| c.remote),
            client_certs: client.map(|c| c.certs.to_vec()).unwrap_or_default(),
            request_id: None,
            op,
        };
        self.core.handle(request).await.map_err(status)
    }

    /// Runs `op` and takes its reply as `into` (one of `Reply::into_*`) gives it.
    async fn call_as<T, R>(
        &self,
        req: &GrpcRequest<T>,
        op: Operation,
        into: fn(Reply) -> arca_core::Result<R>,
    ) -> Result<R, Status> {
        into(self.call(req, op).await?).map_err(status)
    }
}

fn u8_arg(v: u32, name: &str) -> Result<u8, Status> {
    u8::try_from(v).map_err(|_| Status::invalid_argument(format!("{name} must be at most 255")))
}

fn seal_status(s: arca_core::SealStatus) -> proto::SealStatusResponse {
    proto::SealStatusResponse {
        initialized: s.initialized,
        sealed: s.sealed,
        threshold: s.threshold.into(),
        shares: s.shares.into(),
        progress: s.progress.into(),
        share_set: s.share_set,
        node_id: s.node_id,
    }
}

fn member(m: arca_core::Member) -> proto::Member {
    proto::Member { id: m.id, raft_addr: m.raft_addr, api_addr: m.api_addr, voter: m.voter, leader: m.leader }
}

fn version(v: arca_core::VersionMetadata) -> proto::VersionMetadata {
    proto::VersionMetadata {
        version: v.version,
        created_ms: v.created_ms,
        deleted_ms: v.deleted_ms.unwrap_or(0),
        destroyed: v.destroyed,
    }
}

fn metadata(m: arca_core::SecretMetadata) -> proto::SecretMetadata {
    proto::SecretMetadata {
        path: m.path,
        current_version: m.current_version,
        max_versions: m.max_versions,
        created_ms: m.created_ms,
        updated_ms: m.updated_ms,
        versions: m.versions.into_values().map(version).collect(),
        pending_version: m.pending_version.unwrap_or(0),
        previous_version: m.previous_version.unwrap_or(0),
    }
}

pub(crate) type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl proto::sys_server::Sys for Api {
    async fn init(&self, req: GrpcRequest<proto::InitRequest>) -> R<proto::InitResponse> {
        let op = Operation::Init {
            shares: u8_arg(req.get_ref().shares, "shares")?,
            threshold: u8_arg(req.get_ref().threshold, "threshold")?,
        };
        let i = self.call_as(&req, op, Reply::into_init).await?;
        Ok(Response::new(proto::InitResponse {
            shares: i.shares.iter().map(|s| s.to_string()).collect(),
            threshold: i.threshold.into(),
            root_token: i.root_token.to_string(),
        }))
    }

    async fn unseal(&self, req: GrpcRequest<proto::UnsealRequest>) -> R<proto::SealStatusResponse> {
        let op = Operation::Unseal { share: Zeroizing::new(req.get_ref().share.clone()), reset: req.get_ref().reset };
        let s = self.call_as(&req, op, Reply::into_seal_status).await?;
        Ok(Response::new(seal_status(s)))
    }

    async fn seal(&self, req: GrpcRequest<proto::SealRequest>) -> R<proto::SealStatusResponse> {
        self.call(&req, Operation::Seal).await?;
        let s = self.call_as(&req, Operation::SealStatus, Reply::into_seal_status).await?;
        Ok(Response::new(seal_status(s)))
    }

    async fn seal_status(&self, req: GrpcRequest<proto::SealStatusRequest>) -> R<proto::SealStatusResponse> {
        let s = self.call_as(&req, Operation::SealStatus, Reply::into_seal_status).await?;
        Ok(Response::new(seal_status(s)))
    }

    async fn health(&self, req: GrpcRequest<proto::HealthRequest>) -> R<proto::HealthResponse> {
        let h = self.call_as(&req, Operation::Health, Reply::into_health).await?;
        Ok(Response::new(proto::HealthResponse {
            initialized: h.initialized,
            sealed: h.sealed,
            node_id: h.node_id,
            leader_id: h.leader_id.unwrap_or(0),
            is_leader: h.is_leader,
            applied_index: h.applied_index,
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    async fn leader(&self, req: GrpcRequest<proto::LeaderRequest>) -> R<proto::LeaderResponse> {
        let leader = self.call_as(&req, Operation::Leader, Reply::into_leader).await?;
        Ok(Response::new(proto::LeaderResponse { leader: leader.map(member) }))
    }

    async fn members(&self, req: GrpcRequest<proto::MembersRequest>) -> R<proto::MembersResponse> {
        let m = self.call_as(&req, Operation::Members, Reply::into_members).await?;
        Ok(Response::new(proto::MembersResponse { members: m.into_iter().map(member).collect() }))
    }

    async fn autopilot_state(
        &self,
        req: GrpcRequest<proto::AutopilotStateRequest>,
    ) -> R<proto::AutopilotStateResponse> {
        let a = self.call_as(&req, Operation::AutopilotState, Reply::into_autopilot).await?;
        Ok(Response::new(proto::AutopilotStateResponse {
            healthy: a.healthy,
            failure_tolerance: a.failure_tolerance as u64,
            leader: a.leader,
            servers: a
                .servers
                .into_iter()
                .map(|s| proto::ServerHealth {
                    member: Some(proto::Member {
                        id: s.id,
                        raft_addr: s.raft_addr,
                        api_addr: s.api_addr,
                        voter: s.voter,
                        leader: s.leader,
                    }),
                    last_contact_ms: s.last_contact.map(|d| d.as_millis() as u64),
                    last_index: s.last_index,
                    healthy: s.healthy,
                })
                .collect(),
        }))
    }

    async fn join(&self, req: GrpcRequest<proto::JoinRequest>) -> R<proto::JoinResponse> {
        let r = req.get_ref();
        self.call(&req, Operation::Join { peer: r.peer.clone(), non_voter: r.non_voter }).await?;
        Ok(Response::new(proto::JoinResponse {}))
    }

    type SnapshotSaveStream = snapshot::SaveStream;

    async fn snapshot_save(&self, req: GrpcRequest<proto::SnapshotSaveRequest>) -> R<Self::SnapshotSaveStream> {
        Api::snapshot_save(self, req).await
    }

    async fn snapshot_restore(
        &self,
        req: GrpcRequest<tonic::Streaming<proto::SnapshotChunk>>,
    ) -> R<proto::SnapshotRestoreResponse> {
        Api::snapshot_restore(self, req).await
    }

    async fn remove_peer(&self, req: GrpcRequest<proto::RemovePeerRequest>) -> R<proto::RemovePeerResponse> {
        self.call(&req, Operation::RemovePeer { id: req.get_ref().node_id }).await?;
        Ok(Response::new(proto::RemovePeerResponse {}))
    }

    async fn generate_root(&self, req: GrpcRequest<proto::GenerateRootRequest>) -> R<proto::GenerateRootResponse> {
        let r = req.get_ref();
        let params = || GenerateRootParams::from_fields(&r.otp, &r.pgp_key).map_err(status);
        let op = Operation::GenerateRoot(ceremony_step(r.action, &r.nonce, &r.share, params)?);
        let (status, encoded_token) = self.call_as(&req, op, Reply::into_generate_root).await?;
        Ok(Response::new(proto::GenerateRootResponse {
            status: Some(ceremony_status(status)),
            encoded_token: encoded_token.unwrap_or_default(),
        }))
    }

    async fn rotate(&self, req: GrpcRequest<proto::RotateRequest>) -> R<proto::RotateResponse> {
        let term = self.call_as(&req, Operation::KeyringRotate, Reply::into_term).await?;
        Ok(Response::new(proto::RotateResponse { term }))
    }

    async fn key_status(&self, req: GrpcRequest<proto::KeyStatusRequest>) -> R<proto::KeyStatusResponse> {
        let k = self.call_as(&req, Operation::KeyringStatus, Reply::into_keyring).await?;
        Ok(Response::new(proto::KeyStatusResponse {
            terms: k.terms,
            active_term: k.active_term,
            rewrap_target_term: k.rewrap.as_ref().map_or(0, |r| r.target_term),
            rewrap_done: k.rewrap.as_ref().is_some_and(|r| r.done),
            rewrapped: k.rewrap.as_ref().map_or(0, |r| r.rewrapped),
            records_on_old_terms: k.records_on_old_terms,
        }))
    }

    async fn rekey(&self, req: GrpcRequest<proto::RekeyRequest>) -> R<proto::RekeyResponse> {
        let r = req.get_ref();
        let params = || -> Result<RekeyParams, Status> {
            Ok(RekeyParams {
                shares: u8_arg(r.shares, "shares")?,
                threshold: u8_arg(r.threshold, "threshold")?,
                pgp_keys: ceremony::parse_pgp_keys(&r.pgp_keys, "pgp_keys").map_err(status)?,
            })
        };
        let op = Operation::Rekey(ceremony_step(r.action, &r.nonce, &r.share, params)?);
        let (status, shares) = self.call_as(&req, op, Reply::into_rekey).await?;
        Ok(Response::new(proto::RekeyResponse {
            status: Some(ceremony_status(status)),
            shares: shares.iter().map(|s| s.to_string()).collect(),
        }))
    }
}

fn ceremony_step<P>(
    action: i32,
    nonce: &str,
    share: &str,
    params: impl FnOnce() -> Result<P, Status>,
) -> Result<CeremonyStep<P>, Status> {
    let nonce = || Zeroizing::new(nonce.to_string());
    match proto::CeremonyAction::try_from(action) {
        Ok(proto::CeremonyAction::Unspecified | proto::CeremonyAction::Status) => Ok(CeremonyStep::Status),
        Ok(proto::CeremonyAction::Init) => Ok(CeremonyStep::Start(params()?)),
        Ok(proto::CeremonyAction::Update) => {
            Ok(CeremonyStep::Submit { nonce: nonce(), share: Zeroizing::new(share.to_string()) })
        }
        Ok(proto::CeremonyAction::Cancel) => Ok(CeremonyStep::Cancel { nonce: nonce() }),
        Err(_) => Err(Status::invalid_argument(format!("unknown ceremony action {action}"))),
    }
}

fn ceremony_status(s: CeremonyStatus) -> proto::CeremonyStatus {
    proto::CeremonyStatus {
        started: s.started,
        nonce: s.nonce.unwrap_or_default(),
        progress: s.progress.into(),
        required: s.required.into(),
        complete: s.complete,
        otp_length: s.otp_length as u32,
        new_shares: s.new_shares.into(),
        new_threshold: s.new_threshold.into(),
        pgp_fingerprints: s.pgp_fingerprints,
    }
}

#[tonic::async_trait]
impl proto::kv_server::Kv for Api {
    async fn put(&self, req: GrpcRequest<proto::PutRequest>) -> R<proto::VersionMetadata> {
        let r = req.get_ref();
        let op = Operation::KvPut {
            path: r.path.clone(),
            data: SecretData(r.data.clone().into_iter().collect()),
            cas: r.cas,
        };
        let arca_core::KvWritten { version: v, .. } = self.call_as(&req, op, Reply::into_kv_written).await?;
        Ok(Response::new(version(v)))
    }

    async fn get(&self, req: GrpcRequest<proto::GetRequest>) -> R<proto::GetResponse> {
        let r = req.get_ref();
        let op = if r.stage.is_empty() {
            Operation::KvGet { path: r.path.clone(), version: (r.version != 0).then_some(r.version) }
        } else {
            Operation::KvGetStage { path: r.path.clone(), stage: r.stage.parse().map_err(status)? }
        };
        let arca_core::KvSecret { data, version: v, .. } = self.call_as(&req, op, Reply::into_kv_secret).await?;
        Ok(Response::new(proto::GetResponse {
            data: data.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            metadata: Some(version(v)),
        }))
    }

    async fn list(&self, req: GrpcRequest<proto::ListRequest>) -> R<proto::ListResponse> {
        let keys =
            self.call_as(&req, Operation::KvList { prefix: req.get_ref().prefix.clone() }, Reply::into_kv_keys).await?;
        Ok(Response::new(proto::ListResponse { keys }))
    }

    async fn delete(&self, req: GrpcRequest<proto::VersionsRequest>) -> R<proto::SecretMetadata> {
        let r = req.get_ref();
        self.meta_reply(&req, Operation::KvDelete { path: r.path.clone(), versions: r.versions.clone() }).await
    }

    async fn undelete(&self, req: GrpcRequest<proto::VersionsRequest>) -> R<proto::SecretMetadata> {
        let r = req.get_ref();
        self.meta_reply(&req, Operation::KvUndelete { path: r.path.clone(), versions: r.versions.clone() }).await
    }

    async fn destroy(&self, req: GrpcRequest<proto::VersionsRequest>) -> R<proto::SecretMetadata> {
        let r = req.get_ref();
        self.meta_reply(&req, Operation::KvDestroy { path: r.path.clone(), versions: r.versions.clone() }).await
    }

    async fn get_metadata(&self, req: GrpcRequest<proto::MetadataRequest>) -> R<proto::SecretMetadata> {
        self.meta_reply(&req, Operation::KvMetadata { path: req.get_ref().path.clone() }).await
    }

    async fn set_max_versions(&self, req: GrpcRequest<proto::SetMaxVersionsRequest>) -> R<proto::SecretMetadata> {
        let r = req.get_ref();
        let settings = arca_core::MetadataSettings { max_versions: Some(r.max_versions), ..Default::default() };
        self.meta_reply(&req, Operation::KvSetMetadata { path: r.path.clone(), settings }).await
    }

    async fn delete_metadata(&self, req: GrpcRequest<proto::MetadataRequest>) -> R<proto::DeleteMetadataResponse> {
        self.call(&req, Operation::KvDeleteMetadata { path: req.get_ref().path.clone() }).await?;
        Ok(Response::new(proto::DeleteMetadataResponse {}))
    }
}

impl Api {
    async fn meta_reply<T>(&self, req: &GrpcRequest<T>, op: Operation) -> R<proto::SecretMetadata> {
        let m = self.call_as(req, op, Reply::into_kv_metadata).await?;
        Ok(Response::new(metadata(m)))
    }
}
