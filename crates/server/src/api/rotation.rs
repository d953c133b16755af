//! The Rotation service.

use arca_core::rotation::{RotationConfig, RotationStatus, Schedule, Window};
use arca_core::{Operation, Reply};
use tonic::{Request as GrpcRequest, Response, Status};

use super::{status, Api, R};
use crate::proto;

/// Defaults for what a request leaves at zero.
const DEFAULT_MAX_ATTEMPTS: u32 = 5;
const DEFAULT_BACKOFF_MS: u64 = 1_000;

fn config_from(c: &proto::RotationConfig) -> Result<RotationConfig, Status> {
    let schedule = match (c.every_ms, c.cron.as_str()) {
        (0, "") => {
            return Err(Status::invalid_argument("give a schedule: an interval (every_ms) or a cron expression"))
        }
        (ms, "") => Schedule::Every { ms },
        (0, expr) => Schedule::Cron { expr: expr.to_string() },
        _ => return Err(Status::invalid_argument("give either an interval or a cron expression, not both")),
    };
    Ok(RotationConfig {
        path: c.path.clone(),
        rotator: c.rotator.parse().map_err(status)?,
        params: c.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        schedule,
        window: if c.window.is_empty() { None } else { Some(Window::parse(&c.window).map_err(status)?) },
        max_attempts: if c.max_attempts == 0 { DEFAULT_MAX_ATTEMPTS } else { c.max_attempts },
        backoff_ms: if c.backoff_ms == 0 { DEFAULT_BACKOFF_MS } else { c.backoff_ms },
        enabled: true,
        // Set by the vault from the caller's token.
        configured_by: String::new(),
    })
}

fn config_to(c: RotationConfig) -> proto::RotationConfig {
    let (every_ms, cron) = match c.schedule {
        Schedule::Every { ms } => (ms, String::new()),
        Schedule::Cron { expr } => (0, expr),
    };
    proto::RotationConfig {
        path: c.path,
        rotator: format!("{:?}", c.rotator).to_lowercase(),
        params: c.params.into_iter().collect(),
        every_ms,
        cron,
        window: c
            .window
            .map(|w| {
                format!("{:02}:{:02}-{:02}:{:02}", w.start_min / 60, w.start_min % 60, w.end_min / 60, w.end_min % 60)
            })
            .unwrap_or_default(),
        max_attempts: c.max_attempts,
        backoff_ms: c.backoff_ms,
    }
}

fn status_to(s: RotationStatus) -> proto::RotationStatus {
    let st = s.state;
    proto::RotationStatus {
        enabled: s.config.enabled,
        config: Some(config_to(s.config)),
        step: format!("{:?}", st.step).to_lowercase(),
        rotation_id: st.rotation_id,
        pending_version: st.pending_version.unwrap_or(0),
        attempts: st.attempts,
        retry_at_ms: st.retry_at_ms.unwrap_or(0),
        next_run_ms: st.next_run_ms,
        last_started_ms: st.last_started_ms.unwrap_or(0),
        last_finished_ms: st.last_finished_ms.unwrap_or(0),
        last_error: st.last_error,
        failed: st.failed,
        rotations: st.rotations,
    }
}

impl Api {
    async fn ack<T>(&self, req: &GrpcRequest<T>, op: Operation) -> R<proto::RotationAck> {
        self.call_as(req, op, Reply::into_done).await?;
        Ok(Response::new(proto::RotationAck {}))
    }
}

#[tonic::async_trait]
impl proto::rotation_server::Rotation for Api {
    async fn set(&self, req: GrpcRequest<proto::RotationConfig>) -> R<proto::RotationAck> {
        let config = config_from(req.get_ref())?;
        self.ack(&req, Operation::RotationSet(config)).await
    }

    async fn disable(&self, req: GrpcRequest<proto::RotationPath>) -> R<proto::RotationAck> {
        self.ack(&req, Operation::RotationDisable { path: req.get_ref().path.clone() }).await
    }

    async fn now(&self, req: GrpcRequest<proto::RotationPath>) -> R<proto::RotationAck> {
        self.ack(&req, Operation::RotationNow { path: req.get_ref().path.clone() }).await
    }

    async fn status(&self, req: GrpcRequest<proto::RotationPath>) -> R<proto::RotationStatusList> {
        let path = Some(req.get_ref().path.clone()).filter(|p| !p.is_empty());
        let list = self.call_as(&req, Operation::RotationStatus { path }, Reply::into_rotations).await?;
        Ok(Response::new(proto::RotationStatusList { rotations: list.into_iter().map(status_to).collect() }))
    }

    async fn register_function(&self, req: GrpcRequest<proto::RotationFunction>) -> R<proto::RotationAck> {
        let r = req.get_ref();
        let op = Operation::RotationFunctionRegister { name: r.name.clone(), sha256: r.sha256.clone() };
        self.ack(&req, op).await
    }

    async fn list_functions(&self, req: GrpcRequest<proto::RotationAck>) -> R<proto::RotationFunctionList> {
        let list = self.call_as(&req, Operation::RotationFunctionList, Reply::into_functions).await?;
        Ok(Response::new(proto::RotationFunctionList {
            functions: list.into_iter().map(|(name, sha256)| proto::RotationFunction { name, sha256 }).collect(),
        }))
    }
}
