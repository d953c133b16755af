//! The CLI's connection: an `arca_client::Client` (one TLS setup, failover between the members
//! in `--addr`, the token on every request) and the choice of which commands may fail over.

use std::path::Path;
use std::time::Duration;

use arca_client::raw::Services;
use arca_client::{Auth, Cause, ClientBuilder, RetryPolicy};

use super::{CliError, CliResult};

/// Where a command's requests may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Any member: a request that finds its member down, sealed or without a leader is sent to
    /// the next address in `--addr`, with backoff, for up to `RETRY_FOR`.
    Cluster,
    /// The first address only, one attempt: commands about that node (its seal status, an
    /// unseal share, a ceremony step, a join), which must not land on another member.
    Node,
}

/// How long a cluster-scoped command keeps trying members that are down or electing a leader.
/// An election takes 1–3 s; a person at a terminal should not wait much longer to hear that
/// the address is wrong.
const RETRY_FOR: Duration = Duration::from_secs(5);

pub struct Client {
    sdk: arca_client::Client,
    /// The settings `sdk` was built with, for a client to one member or with a long timeout.
    builder: ClientBuilder,
    identity: bool,
    /// The first address, which node-scoped commands talk to.
    pub addr: String,
}

impl Client {
    /// Connects to the members in `addrs` (comma-separated `https://host:port`), trusting the
    /// CA certificate `cacert`. With `identity` (certificate and key files), presents that
    /// client certificate. The token is used as given (no lookup, no renewal: one command is
    /// short).
    pub async fn connect(
        addrs: &str,
        cacert: Option<&Path>,
        token: Option<&str>,
        identity: Option<(&Path, &Path)>,
        scope: Scope,
    ) -> CliResult<Client> {
        let addrs: Vec<String> =
            addrs.split(',').map(str::trim).filter(|a| !a.is_empty()).map(|a| a.trim_end_matches('/').into()).collect();
        let first = addrs.first().cloned().ok_or_else(|| CliError::usage("--addr (ARCA_ADDR) is empty"))?;
        let cacert = cacert.ok_or_else(|| {
            CliError::usage("no CA certificate: set ARCA_CACERT (or --cacert) to the cluster's CA certificate (PEM)")
        })?;
        let mut builder = arca_client::Client::builder()
            .ca_cert_file(cacert)
            .auth(token.map_or(Auth::None, Auth::token))
            .token_lifecycle(false);
        builder = match scope {
            Scope::Cluster => builder.addrs(addrs).retry(RetryPolicy {
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                max_elapsed: RETRY_FOR,
            }),
            Scope::Node => builder.addr(first.clone()).retry(RetryPolicy::none()),
        };
        if let Some((cert, key)) = identity {
            let read =
                |p: &Path| std::fs::read(p).map_err(|e| CliError::new(format!("cannot read {}: {e}", p.display())));
            builder = builder.identity(read(cert)?, read(key)?);
        }
        let sdk = builder.clone().build().await?;
        let uri = if first.contains("://") { first } else { format!("https://{first}") };
        Ok(Client { sdk, builder, identity: identity.is_some(), addr: uri })
    }

    /// The SDK client: `rpc!` sends through it.
    pub fn sdk(&self) -> &arca_client::Client {
        &self.sdk
    }

    /// The stubs on the first member, for a request that cannot be resent (an upload stream).
    pub fn services(&self) -> Services {
        self.sdk.services()
    }

    /// The same connection settings, towards `addr` only, one attempt per request.
    pub async fn member(&self, addr: &str) -> CliResult<Client> {
        let sdk = self.builder.clone().only_addr(addr).retry(RetryPolicy::none()).build().await?;
        Ok(Client { sdk, builder: self.builder.clone(), identity: self.identity, addr: addr.to_string() })
    }

    /// The same client without the short per-request deadline, for requests that may run for
    /// hours (a backup of a large vault).
    pub async fn unhurried(&self) -> CliResult<Client> {
        let sdk = self.builder.clone().request_timeout(Duration::from_secs(24 * 3600)).build().await?;
        Ok(Client { sdk, builder: self.builder.clone(), identity: self.identity, addr: self.addr.clone() })
    }

    /// Whether a client certificate is presented.
    pub fn has_identity(&self) -> bool {
        self.identity
    }
}

impl From<arca_client::Error> for CliError {
    fn from(e: arca_client::Error) -> Self {
        match e {
            arca_client::Error::Config(m) => CliError::usage(m),
            // The SDK's hints say "the address" and "the CA the client trusts"; here they are
            // flags and environment variables.
            arca_client::Error::Unreachable { addrs, cause, detail, .. } => {
                let hint = match cause {
                    Cause::Refused => "nothing listens there: is the node running, and is ARCA_ADDR (--addr) right?",
                    Cause::Untrusted => {
                        "the server's certificate is not from the CA in ARCA_CACERT (--cacert), or does not name this host"
                    }
                    Cause::Unavailable => "",
                    other => other.hint(),
                };
                if hint.is_empty() {
                    CliError::new(format!("cannot reach {addrs}: {detail}"))
                } else {
                    CliError::new(format!("cannot reach {addrs}: {detail} ({hint})"))
                }
            }
            arca_client::Error::Status { code, message } if message.is_empty() => {
                CliError::new(format!("the server refused the request ({code:?})"))
            }
            other => CliError::new(other.to_string()),
        }
    }
}
