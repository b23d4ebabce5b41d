//! TLS on the listeners, with rustls: certificates from PEM files, mutual TLS
//! against a client CA, and reloading when the files change or on SIGHUP.
//!
//! Handshakes run in their own tasks, so one slow or silent client does not
//! hold up the others; `TlsListener` hands finished connections to
//! `axum::serve`, which serves OTLP/gRPC, OTLP/HTTP and the UI alike.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How often the certificate files are checked for changes.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// What a plain-text HTTP client gets from a TLS listener, instead of silence.
const PLAIN_TEXT_REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain; charset=utf-8\r\n\
connection: close\r\n\
content-length: 50\r\n\
\r\n\
This Weft listener speaks TLS only: use https://.\n";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a PEM certificate list: {source}")]
    Certificate {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {source}")]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("client CA {path}: {source}")]
    ClientCa {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The PEM files one listener's TLS is made of.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With a client CA, only clients presenting a certificate it signed get in.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }

    /// Reads the files and builds a server configuration offering `alpn`.
    fn load(&self, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = read_certificates(&self.cert)?;
        let key =
            PrivateKeyDer::from_pem_slice(&read(&self.key)?).map_err(|source| TlsError::Key {
                path: self.key.clone(),
                source,
            })?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
        };
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Certificate {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(read_certificates(path)?);
    if added == 0 {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|source| TlsError::ClientCa {
            path: path.to_owned(),
            source,
        })
}

/// ALPN for listeners that speak gRPC: HTTP/2 only.
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// ALPN for the HTTP listeners: HTTP/2 preferred, HTTP/1.1 welcome.
pub const ALPN_HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];

/// One listener's current server configuration; replaced in place on reload,
/// so new connections use the new certificate and open ones keep theirs.
#[derive(Clone)]
pub struct LiveConfig {
    name: &'static str,
    files: TlsFiles,
    alpn: &'static [&'static [u8]],
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl LiveConfig {
    pub fn load(
        name: &'static str,
        files: TlsFiles,
        alpn: &'static [&'static [u8]],
    ) -> Result<Self, TlsError> {
        let config = files.load(alpn)?;
        Ok(Self {
            name,
            files,
            alpn,
            current: Arc::new(RwLock::new(Arc::new(config))),
        })
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(config) => Arc::clone(&config),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        TlsAcceptor::from(config)
    }

    /// Loads the files again; on failure the old configuration stays in use.
    fn reload(&self) {
        match self.files.load(self.alpn) {
            Ok(config) => {
                let mut current = match self.current.write() {
                    Ok(current) => current,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *current = Arc::new(config);
                tracing::info!(listener = self.name, "TLS certificate reloaded");
            }
            Err(error) => {
                tracing::warn!(listener = self.name, %error, "TLS reload failed; keeping the previous certificate");
            }
        }
    }
}

/// Reloads every configuration when one of its files changes (checked every
/// two seconds) or when the process gets SIGHUP.
pub fn spawn_reloader(configs: Vec<LiveConfig>) {
    if configs.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let stamps = |configs: &[LiveConfig]| -> Vec<Option<(SystemTime, u64)>> {
            configs
                .iter()
                .flat_map(|c| c.files.paths())
                .map(|path| {
                    let meta = std::fs::metadata(path).ok()?;
                    Some((meta.modified().ok()?, meta.len()))
                })
                .collect()
        };
        let mut seen = stamps(&configs);
        let mut hangup = hangup_signal();
        let mut ticks = tokio::time::interval(RELOAD_CHECK_INTERVAL);
        loop {
            let by_signal = tokio::select! {
                _ = ticks.tick() => false,
                _ = next_hangup(&mut hangup) => true,
            };
            let now = stamps(&configs);
            if by_signal || now != seen {
                if by_signal {
                    tracing::info!("SIGHUP: reloading TLS certificates");
                }
                seen = now;
                configs.iter().for_each(LiveConfig::reload);
            }
        }
    });
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    match hangup {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}

/// A TCP listener that yields connections once their TLS handshake is done.
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: LiveConfig) -> std::io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (ready_tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            while !ready_tx.is_closed() {
                let (mut stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(listener = config.name, %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                crate::server::send_without_delay(&mut stream);
                let acceptor = config.acceptor();
                let ready_tx = ready_tx.clone();
                let name = config.name;
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, acceptor)).await
                    {
                        Ok(Ok(tls)) => {
                            let _ = ready_tx.send((tls, peer)).await;
                        }
                        Ok(Err(reason)) => {
                            tracing::info!(listener = name, %peer, %reason, "TLS connection refused");
                        }
                        Err(_) => {
                            tracing::info!(listener = name, %peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(Self { local_addr, ready })
    }
}

/// The handshake, after a look at the first byte: a plain-text client gets a
/// readable refusal rather than a handshake error it cannot explain.
async fn handshake(
    mut stream: TcpStream,
    acceptor: TlsAcceptor,
) -> Result<TlsStream<TcpStream>, String> {
    let mut first = [0u8; 1];
    let read = stream.peek(&mut first).await.map_err(|e| e.to_string())?;
    if read == 0 {
        return Err("closed before the handshake".to_owned());
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        let _ = stream.write_all(PLAIN_TEXT_REFUSAL).await;
        let _ = stream.shutdown().await;
        return Err("plain text on a TLS listener".to_owned());
    }
    acceptor.accept(stream).await.map_err(|e| e.to_string())
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task only ends once this receiver is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_text_refusal_has_the_length_it_declares() {
        let text = std::str::from_utf8(PLAIN_TEXT_REFUSAL).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}
