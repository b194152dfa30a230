//! TLS for the gRPC port, optionally mutual (client certificates signed by
//! `server.tls.client_ca`), from PEM files, with reload: [`TlsReloader::reload`]
//! re-reads the files (holdless calls it on SIGHUP) and new connections use the new
//! certificate; established connections keep theirs. A reload that fails (missing
//! file, key not matching) keeps the previous certificate and logs a warning.
//!
//! holdless does its own TLS accept loop rather than tonic's `tls_config` so that the
//! configuration can be swapped at run time; each handshake runs in its own task
//! (a slow client never stalls the accept loop), bounded in number and time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::TlsSettings;

/// Most TLS handshakes in progress at once; further connections wait in the backlog.
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// A client that has not finished its handshake within this is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            message: "no PEM certificate found".into(),
        });
    }
    Ok(certs)
}

/// Builds the rustls server configuration (HTTP/2 only) from the PEM files.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&settings.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&settings.key)?).map_err(|e| TlsError::Pem {
        path: settings.key.clone(),
        message: format!("no usable private key: {e}"),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match settings.client_ca.as_deref() {
        Some(ca) if !ca.as_os_str().is_empty() => {
            let mut roots = RootCertStore::empty();
            for cert in certs(ca)? {
                roots.add(cert).map_err(|e| TlsError::Pem {
                    path: ca.to_owned(),
                    message: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The current TLS configuration, replaceable while serving.
pub struct TlsReloader {
    settings: TlsSettings,
    current: ArcSwap<ServerConfig>,
}

impl TlsReloader {
    pub fn load(settings: TlsSettings) -> Result<Self, TlsError> {
        let config = server_config(&settings)?;
        Ok(Self {
            settings,
            current: ArcSwap::new(config),
        })
    }

    /// Re-reads the PEM files; on error the previous configuration stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.settings)?;
        self.current.store(config);
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// The same certificate for an HTTP/1.1 server (the console): ALPN says
    /// `http/1.1` instead of `h2`, or a browser would pick HTTP/2.
    fn http1_acceptor(&self) -> TlsAcceptor {
        let mut config = (*self.current.load_full()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

/// Accepts TCP connections on `listener` and yields them once their TLS handshake has
/// completed. Stops accepting (and closes the listener) when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<TlsReloader>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    incoming_with(listener, tls, TlsReloader::acceptor)
}

/// [`incoming`] for the console's HTTP/1.1 server (same certificate, same reload).
pub fn incoming_http1(
    listener: TcpListener,
    tls: Arc<TlsReloader>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    incoming_with(listener, tls, TlsReloader::http1_acceptor)
}

fn incoming_with(
    listener: TcpListener,
    tls: Arc<TlsReloader>,
    acceptor: fn(&TlsReloader) -> TlsAcceptor,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
        loop {
            let permit = tokio::select! {
                _ = tx.closed() => return,
                p = handshakes.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => return,
                r = listener.accept() => match r {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, do not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor(&tls);
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
