//! TLS for the client API port, with client certificates captured for the cert login method.
//!
//! tonic's built-in TLS can only accept client certificates from CAs fixed at startup, but the
//! CAs that cert-login roles trust are replicated configuration that changes at runtime. So the
//! API port terminates TLS itself:
//!
//! * the server *asks* for a client certificate but does not require one (tokens authenticate
//!   most requests);
//! * a presented certificate is accepted at the TLS layer after checking only the handshake
//!   signature, which proves the client holds its private key. It is **not trusted** for
//!   anything at this point: the certificate chain reaches the core as [`ClientInfo::certs`],
//!   and only the cert login method gives it meaning, by verifying it against the CA of a role.
//!   Every other operation ignores it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arca_raft::TlsConfig;
use futures::Stream;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;
use tracing::debug;

use crate::{Error, Result};

/// A client slower than this to finish its handshake is dropped, so idle sockets cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; further connections wait in the kernel's accept queue.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// What the connection tells a request about its client. Inserted into every request's
/// extensions by tonic.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub remote: Option<SocketAddr>,
    /// The presented chain (DER, end entity first); empty when none was presented. Proven to be
    /// held by the client, not trusted (see the module documentation).
    pub certs: Arc<Vec<Vec<u8>>>,
}

/// Accepts any client certificate whose holder proves possession of its key; trust is decided
/// later, per login role.
#[derive(Debug)]
struct ProofOfPossession {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ProofOfPossession {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        // Deliberately no chain check here: see the module documentation.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The API port's TLS configuration: this node's certificate, HTTP/2 only.
pub(crate) fn acceptor(tls: &TlsConfig) -> Result<TlsAcceptor> {
    let bad = |what: &str, e: &dyn std::fmt::Display| Error::Serve(format!("API TLS {what}: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad("certificate", &e))?;
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem).map_err(|e| bad("key", &e))?;
    let verifier = Arc::new(ProofOfPossession { algorithms: provider.signature_verification_algorithms });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("protocol versions", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| bad("certificate or key", &e))?;
    // h2 for gRPC; HTTP/1.1 for the Vault-compatible API (most Vault clients speak it).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// One accepted TLS connection. It is closed once nothing has been read or written for
/// `idle` (an error from a read that would otherwise wait on), so a client that completes the
/// handshake and then stays silent does not hold a connection forever.
pub(crate) struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: ClientInfo,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl TlsConnection {
    fn new(stream: TlsStream<TcpStream>, info: ClientInfo, idle: Duration) -> TlsConnection {
        let last = Instant::now();
        TlsConnection { stream, info, idle, last, timer: Box::pin(tokio::time::sleep_until(last + idle)) }
    }

    fn active(&mut self, bytes: usize) {
        if bytes > 0 {
            self.last = Instant::now();
        }
    }

    /// Called while a read waits: fails the read once the connection has been idle too long.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let deadline = self.last + self.idle;
            if Instant::now() >= deadline {
                debug!(remote = ?self.info.remote, idle = ?self.idle, "closing an idle connection");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle")));
            }
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = ClientInfo;

    fn connect_info(&self) -> ClientInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let read = buf.filled().len() - before;
                self.active(read);
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_idle(cx),
        }
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.active(n);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            self.active(n);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts TCP connections and completes TLS handshakes concurrently (a slow client never holds
/// up the next one), yielding finished connections.
pub(crate) fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    idle: Duration,
) -> impl Stream<Item = io::Result<TlsConnection>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<TlsConnection>(MAX_PENDING_HANDSHAKES);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else { return };
            let (tcp, remote) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let certs = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| c.iter().map(|d| d.to_vec()).collect())
                            .unwrap_or_default();
                        let info = ClientInfo { remote: Some(remote), certs: Arc::new(certs) };
                        let _ = tx.send(TlsConnection::new(stream, info, idle)).await;
                    }
                    Ok(Err(e)) => debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (Ok(c), rx)) })
}
