//! Starting the roles: binds the listeners, logs the bound addresses (one line
//! each, `<name> listening addr=<ip:port>`), and runs until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::RwLock;
use weft_collector::{Collector, CollectorError, Store, StoreError};
use weft_query::{QueryEngine, QueryError};

use crate::auth::{AuthError, AuthToken};
use crate::config::{
    CollectorArgs, DemoArgs, HttpArgs, OtlpArgs, OutputFormat, QueryArgs, SecurityArgs, ServeArgs,
    SqlArgs, StoreArgs,
};
use crate::routes::{AppState, app};
use crate::tls::{ALPN_GRPC, ALPN_HTTP, LiveConfig, TlsError, TlsFiles, TlsListener};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Collector(#[from] CollectorError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("the demo could not start: {0}")]
    Demo(#[from] samples::SampleError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(
        "--demo sends its spans over plain-text loopback and cannot be combined with --tls-cert; \
         run the sample on its own against a TLS Weft instead"
    )]
    DemoWithTls,
}

/// TLS and the access token, as the flags ask; each listener takes its part.
struct Security {
    args: SecurityArgs,
    token: Option<AuthToken>,
    /// Every TLS configuration handed out, reloaded together.
    live: Vec<LiveConfig>,
}

impl Security {
    fn new(args: &SecurityArgs) -> Result<Self, ServerError> {
        let secure_cookie = args.tls_cert.is_some();
        let token = match (&args.auth_token, &args.auth_token_file) {
            (Some(secret), _) => Some(AuthToken::new(secret, secure_cookie)),
            (None, Some(path)) => Some(AuthToken::new(
                &crate::auth::read_token_file(path)?,
                secure_cookie,
            )),
            (None, None) => None,
        };
        Ok(Self {
            args: args.clone(),
            token,
            live: Vec::new(),
        })
    }

    /// The TLS configuration of one listener, or `None` without `--tls-cert`.
    fn tls(
        &mut self,
        name: &'static str,
        alpn: &'static [&'static [u8]],
        client_ca: Option<&std::path::Path>,
    ) -> Result<Option<LiveConfig>, ServerError> {
        let (Some(cert), Some(key)) = (&self.args.tls_cert, &self.args.tls_key) else {
            return Ok(None);
        };
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: client_ca.map(ToOwned::to_owned),
        };
        let config = LiveConfig::load(name, files, alpn)?;
        self.live.push(config.clone());
        Ok(Some(config))
    }

    fn otlp_client_ca(&self) -> Option<std::path::PathBuf> {
        self.args.tls_client_ca.clone()
    }

    fn http_client_ca(&self) -> Option<std::path::PathBuf> {
        self.args.http_tls_client_ca.clone()
    }

    /// Starts watching the certificate files; logs what protects the listeners.
    fn start(self) {
        if self.token.is_some() && self.args.tls_cert.is_none() {
            tracing::warn!(
                "--auth-token without --tls-cert: the token and the login cookie cross the network in plain text"
            );
        }
        crate::tls::spawn_reloader(self.live);
    }
}

/// Turns off Nagle's algorithm on an accepted connection. With it on, the
/// last small frame of a response (a gRPC status, say) waits until the
/// client acknowledges the previous one, and clients delay that
/// acknowledgement by up to 40 ms: the tail of every acknowledgement's
/// latency.
pub(crate) fn send_without_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
}

/// `listener`, its connections accepted with Nagle's algorithm off.
fn without_delay(
    listener: TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr> {
    listener.tap_io(send_without_delay)
}

async fn bind(name: &str, addr: SocketAddr, tls: bool) -> Result<TcpListener, ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    tracing::info!(addr = %bound, tls, "{name} listening");
    Ok(listener)
}

/// Binds `addr` and serves `router` on it, over TLS when `tls` is given;
/// returns the bound address.
async fn serve_on(
    name: &str,
    addr: SocketAddr,
    router: axum::Router,
    tls: Option<LiveConfig>,
) -> Result<SocketAddr, ServerError> {
    let listener = bind(name, addr, tls.is_some()).await?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    match tls {
        None => {
            let listener = without_delay(listener);
            tokio::spawn(log_failure(name.to_owned(), axum::serve(listener, router)));
        }
        Some(config) => {
            let listener = TlsListener::new(listener, config)
                .map_err(|source| ServerError::Bind { addr, source })?;
            tokio::spawn(log_failure(name.to_owned(), axum::serve(listener, router)));
        }
    }
    Ok(bound)
}

async fn log_failure(
    name: String,
    server: impl std::future::IntoFuture<Output = std::io::Result<()>>,
) {
    if let Err(error) = server.await {
        tracing::error!(%error, "{name} stopped serving");
    }
}

/// Starts the receivers; returns the collector and the bound OTLP/gRPC address.
async fn start_collector(
    store: &Store,
    args: &StoreArgs,
    otlp: &OtlpArgs,
    security: &mut Security,
    lock: Arc<RwLock<()>>,
) -> Result<(Collector, SocketAddr), ServerError> {
    let client_ca = security.otlp_client_ca();
    let grpc_tls = security.tls("otlp-grpc", ALPN_GRPC, client_ca.as_deref())?;
    let http_tls = security.tls("otlp-http", ALPN_HTTP, client_ca.as_deref())?;
    let collector = Collector::start(store.clone(), &args.data_dir, &otlp.settings(), lock).await?;
    let ingest = collector.ingest().clone();
    let mut grpc =
        weft_collector::grpc::router(ingest.clone(), otlp.max_request_bytes).into_axum_router();
    let mut http = weft_collector::http::router(ingest, otlp.max_request_bytes);
    if let Some(token) = &security.token {
        grpc = grpc.layer(axum::middleware::from_fn_with_state(
            token.clone(),
            crate::auth::otlp_grpc,
        ));
        http = http.layer(axum::middleware::from_fn_with_state(
            token.clone(),
            crate::auth::otlp_http,
        ));
    }
    let grpc_addr = serve_on("otlp-grpc", otlp.otlp_grpc_addr, grpc, grpc_tls).await?;
    serve_on("otlp-http", otlp.otlp_http_addr, http, http_tls).await?;
    Ok((collector, grpc_addr))
}

/// Starts the API listener; returns its bound address.
async fn start_query(
    store: &Store,
    http: &HttpArgs,
    security: &mut Security,
    lock: Option<Arc<RwLock<()>>>,
) -> Result<SocketAddr, ServerError> {
    let client_ca = security.http_client_ca();
    let tls = security.tls("http", ALPN_HTTP, client_ca.as_deref())?;
    let engine = Arc::new(QueryEngine::new(
        store.objects(),
        lock,
        http.limits.limits(),
    )?);
    if http.rollup_interval_secs > 0 {
        let every = std::time::Duration::from_secs(http.rollup_interval_secs);
        tokio::spawn(maintain_rollups(Arc::clone(&engine), every));
    }
    let router = app(AppState { engine }, security.token.clone());
    serve_on("http", http.http_addr, router, tls).await
}

/// Keeps the rollups of closed hours up to date, until the process ends.
async fn maintain_rollups(engine: Arc<QueryEngine>, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        match engine.maintain_rollups(now_ns).await {
            Ok(report) if report.built + report.deleted > 0 => {
                tracing::info!(
                    built = report.built,
                    deleted = report.deleted,
                    "rollups updated"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "rollups not updated; will retry"),
        }
    }
}

async fn wait_for_shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn shut_down(collector: &Collector) {
    tracing::info!("shutting down: writing buffered data to Parquet");
    if let Err(error) = collector.ingest().flush().await {
        tracing::warn!(%error, "final flush failed; the write-ahead log keeps the data for the next start");
    }
}

pub async fn serve(args: ServeArgs) -> Result<(), ServerError> {
    if args.demo.demo && args.security.tls_cert.is_some() {
        return Err(ServerError::DemoWithTls);
    }
    let mut security = Security::new(&args.security)?;
    let store = Store::local(&args.store.data_dir)?;
    let lock = Arc::new(RwLock::new(()));
    let (collector, grpc_addr) = start_collector(
        &store,
        &args.store,
        &args.otlp,
        &mut security,
        Arc::clone(&lock),
    )
    .await?;
    let http_addr = start_query(&store, &args.http, &mut security, Some(lock)).await?;
    let demo = if args.demo.demo {
        Some(start_demo(&args.demo, grpc_addr, &args.security).await?)
    } else {
        None
    };
    let scheme = if args.security.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    security.start();
    tracing::info!(data_dir = %args.store.data_dir.display(), "weft serve ready: open {scheme}://{http_addr}/");
    wait_for_shutdown().await;
    if let Some(demo) = demo {
        demo.shutdown().await;
    }
    shut_down(&collector).await;
    Ok(())
}

/// The Drone Delivery sample, exporting to this process's own OTLP/gRPC listener.
async fn start_demo(
    args: &DemoArgs,
    grpc_addr: SocketAddr,
    security: &SecurityArgs,
) -> Result<samples::Demo, ServerError> {
    // A listener on 0.0.0.0 is reached through loopback.
    let host = if grpc_addr.ip().is_unspecified() {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        grpc_addr.ip()
    };
    let config = samples::Config {
        otlp_endpoint: format!("http://{}", SocketAddr::new(host, grpc_addr.port())),
        rate_per_sec: args.demo_rate,
        otlp_headers: demo_headers(security)?,
        ..samples::Config::default()
    };
    Ok(samples::Demo::start(config).await?)
}

/// The demo's exporters present the server's own token.
fn demo_headers(security: &SecurityArgs) -> Result<Vec<(String, String)>, ServerError> {
    let token = match (&security.auth_token, &security.auth_token_file) {
        (Some(secret), _) => secret.expose().to_owned(),
        (None, Some(path)) => crate::auth::read_token_file(path)?.expose().to_owned(),
        (None, None) => return Ok(Vec::new()),
    };
    Ok(vec![(
        "authorization".to_owned(),
        format!("Bearer {token}"),
    )])
}

pub async fn collector(args: CollectorArgs) -> Result<(), ServerError> {
    let mut security = Security::new(&args.security)?;
    let store = Store::local(&args.store.data_dir)?;
    let (collector, _) = start_collector(
        &store,
        &args.store,
        &args.otlp,
        &mut security,
        Arc::new(RwLock::new(())),
    )
    .await?;
    security.start();
    tracing::info!(data_dir = %args.store.data_dir.display(), "weft collector ready");
    wait_for_shutdown().await;
    shut_down(&collector).await;
    Ok(())
}

pub async fn query(args: QueryArgs) -> Result<(), ServerError> {
    let mut security = Security::new(&args.security)?;
    let store = Store::local(&args.store.data_dir)?;
    start_query(&store, &args.http, &mut security, None).await?;
    security.start();
    tracing::info!(data_dir = %args.store.data_dir.display(), "weft query ready");
    wait_for_shutdown().await;
    Ok(())
}

/// Runs one statement and returns the text to print.
pub async fn sql(args: SqlArgs) -> Result<String, ServerError> {
    let store = Store::local(&args.store.data_dir)?;
    let engine = QueryEngine::new(store.objects(), None, args.limits.limits())?;
    let result = engine.sql(&args.sql).await?;
    let mut text = match args.format {
        OutputFormat::Table => result.to_table()?,
        OutputFormat::Csv => result.to_csv(),
        OutputFormat::Json => serde_json::to_string(&result.to_json()).unwrap_or_default(),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    if result.truncated() {
        tracing::warn!(
            rows = result.row_count(),
            "result cut at the row limit (--query-max-rows)"
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;

    #[tokio::test]
    async fn plain_connections_are_accepted_without_delay() -> Result<(), Box<dyn std::error::Error>>
    {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut listener = without_delay(listener);
        let _client = tokio::net::TcpStream::connect(addr).await?;
        let (accepted, _) = listener.accept().await;
        assert!(accepted.nodelay()?, "Nagle's algorithm is still on");
        Ok(())
    }
}
