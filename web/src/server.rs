//! Starting the roles: binds the listeners, logs the bound addresses (one line
//! each, `<name> listening addr=<ip:port>`), and runs until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::RwLock;
use weft_collector::{Collector, CollectorError, Store, StoreError};
use weft_query::{QueryEngine, QueryError};

use crate::config::{
    CollectorArgs, DemoArgs, HttpArgs, OtlpArgs, OutputFormat, QueryArgs, ServeArgs, SqlArgs,
    StoreArgs,
};
use crate::routes::{AppState, app};

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
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

async fn bind(name: &str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    tracing::info!(addr = %bound, "{name} listening");
    Ok(listener)
}

fn spawn_server(
    listener: TcpListener,
    router: axum::Router,
) -> tokio::task::JoinHandle<Result<(), ServerError>> {
    tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .map_err(ServerError::Serve)
    })
}

/// Starts the receivers; returns the collector and the bound OTLP/gRPC address.
async fn start_collector(
    store: &Store,
    args: &StoreArgs,
    otlp: &OtlpArgs,
    lock: Arc<RwLock<()>>,
) -> Result<(Collector, SocketAddr), ServerError> {
    let collector = Collector::start(store.clone(), &args.data_dir, &otlp.settings(), lock).await?;
    let grpc = bind("otlp-grpc", otlp.otlp_grpc_addr).await?;
    let grpc_addr = grpc.local_addr().map_err(|source| ServerError::Bind {
        addr: otlp.otlp_grpc_addr,
        source,
    })?;
    let http = bind("otlp-http", otlp.otlp_http_addr).await?;
    let ingest = collector.ingest().clone();
    spawn_server(
        grpc,
        weft_collector::grpc::router(ingest.clone(), otlp.max_request_bytes).into_axum_router(),
    );
    spawn_server(
        http,
        weft_collector::http::router(ingest, otlp.max_request_bytes),
    );
    Ok((collector, grpc_addr))
}

/// Starts the API listener; returns its bound address.
async fn start_query(
    store: &Store,
    http: &HttpArgs,
    lock: Option<Arc<RwLock<()>>>,
) -> Result<SocketAddr, ServerError> {
    let engine = Arc::new(QueryEngine::new(
        store.objects(),
        lock,
        http.limits.limits(),
    )?);
    let listener = bind("http", http.http_addr).await?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: http.http_addr,
        source,
    })?;
    spawn_server(listener, app(AppState { engine }));
    Ok(addr)
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
    let store = Store::local(&args.store.data_dir)?;
    let lock = Arc::new(RwLock::new(()));
    let (collector, grpc_addr) =
        start_collector(&store, &args.store, &args.otlp, Arc::clone(&lock)).await?;
    let http_addr = start_query(&store, &args.http, Some(lock)).await?;
    let demo = if args.demo.demo {
        Some(start_demo(&args.demo, grpc_addr).await?)
    } else {
        None
    };
    tracing::info!(data_dir = %args.store.data_dir.display(), "weft serve ready: open http://{http_addr}/");
    wait_for_shutdown().await;
    if let Some(demo) = demo {
        demo.shutdown().await;
    }
    shut_down(&collector).await;
    Ok(())
}

/// The Drone Delivery sample, exporting to this process's own OTLP/gRPC listener.
async fn start_demo(args: &DemoArgs, grpc_addr: SocketAddr) -> Result<samples::Demo, ServerError> {
    // A listener on 0.0.0.0 is reached through loopback.
    let host = if grpc_addr.ip().is_unspecified() {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        grpc_addr.ip()
    };
    let config = samples::Config {
        otlp_endpoint: format!("http://{}", SocketAddr::new(host, grpc_addr.port())),
        rate_per_sec: args.demo_rate,
        ..samples::Config::default()
    };
    Ok(samples::Demo::start(config).await?)
}

pub async fn collector(args: CollectorArgs) -> Result<(), ServerError> {
    let store = Store::local(&args.store.data_dir)?;
    let (collector, _) =
        start_collector(&store, &args.store, &args.otlp, Arc::new(RwLock::new(()))).await?;
    tracing::info!(data_dir = %args.store.data_dir.display(), "weft collector ready");
    wait_for_shutdown().await;
    shut_down(&collector).await;
    Ok(())
}

pub async fn query(args: QueryArgs) -> Result<(), ServerError> {
    let store = Store::local(&args.store.data_dir)?;
    start_query(&store, &args.http, None).await?;
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
