//! Command-line flags, one block per concern. Every flag also reads a `WEFT_*`
//! environment variable; the doc comments are the `--help` text.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version,
    about = "Weft: a distributed tracing collector and visualizer. With no command, runs `weft serve`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Collector, query service and web UI in one process, on a local data directory.
    Serve(ServeArgs),
    /// OTLP receivers and the Parquet writer only.
    Collector(CollectorArgs),
    /// Query API, web UI and SQL endpoint only, over an existing store.
    Query(QueryArgs),
    /// Runs one SQL statement over the store and prints the result.
    Sql(SqlArgs),
}

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Where data lives: Parquet files, the write-ahead log and the compaction journal.
    #[arg(long, env = "WEFT_DATA_DIR", default_value = "./weft-data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct OtlpArgs {
    /// OTLP/gRPC listener. Port 0 picks a free port; the bound address is logged.
    #[arg(long, env = "WEFT_OTLP_GRPC_ADDR", default_value = "127.0.0.1:4317")]
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listener (`POST /v1/traces`, `POST /v1/metrics`).
    #[arg(long, env = "WEFT_OTLP_HTTP_ADDR", default_value = "127.0.0.1:4318")]
    pub otlp_http_addr: SocketAddr,
    /// Largest OTLP request accepted, in bytes, both as sent and decompressed; larger ones get 413.
    #[arg(long, env = "WEFT_MAX_REQUEST_BYTES", default_value_t = 16 << 20)]
    pub max_request_bytes: usize,
    /// Memory for data accepted but not yet written to Parquet, in MiB. Above it,
    /// receivers answer 503 / UNAVAILABLE with Retry-After so exporters back off.
    #[arg(long, env = "WEFT_MEMORY_LIMIT_MB", default_value_t = 512)]
    pub memory_limit_mb: usize,
    /// How often accepted data is written to Parquet, in milliseconds.
    #[arg(long, env = "WEFT_FLUSH_INTERVAL_MS", default_value_t = 1000)]
    pub flush_interval_ms: u64,
    /// Data older than this many hours is deleted.
    #[arg(long, env = "WEFT_RETENTION_HOURS", default_value_t = 168)]
    pub retention_hours: u64,
    /// How often small Parquet files are merged and old ones deleted, in seconds.
    #[arg(long, env = "WEFT_COMPACTION_INTERVAL_SECS", default_value_t = 30)]
    pub compaction_interval_secs: u64,
}

impl OtlpArgs {
    pub fn settings(&self) -> weft_collector::CollectorSettings {
        weft_collector::CollectorSettings {
            flush_interval: Duration::from_millis(self.flush_interval_ms.max(1)),
            memory_limit: self.memory_limit_mb.saturating_mul(1 << 20),
            compaction: weft_collector::CompactionConfig {
                interval: Duration::from_secs(self.compaction_interval_secs.max(1)),
                retention: Duration::from_secs(self.retention_hours.saturating_mul(3600)),
                ..weft_collector::CompactionConfig::default()
            },
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct QueryLimitArgs {
    /// Longest a SQL query may run, in seconds.
    #[arg(long, env = "WEFT_QUERY_TIMEOUT_SECS", default_value_t = 30)]
    pub query_timeout_secs: u64,
    /// Most rows a SQL query returns; the result says when it was cut short.
    #[arg(long, env = "WEFT_QUERY_MAX_ROWS", default_value_t = 10_000)]
    pub query_max_rows: usize,
    /// Memory one SQL query may use for sorts, joins and aggregates, in MiB.
    #[arg(long, env = "WEFT_QUERY_MEMORY_MB", default_value_t = 1024)]
    pub query_memory_mb: usize,
}

impl QueryLimitArgs {
    pub fn limits(&self) -> weft_query::QueryLimits {
        weft_query::QueryLimits {
            timeout: Duration::from_secs(self.query_timeout_secs.max(1)),
            max_rows: self.query_max_rows.max(1),
            memory_bytes: self.query_memory_mb.saturating_mul(1 << 20),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Web UI, JSON API and SQL endpoint.
    #[arg(long, env = "WEFT_HTTP_ADDR", default_value = "127.0.0.1:8686")]
    pub http_addr: SocketAddr,
    #[command(flatten)]
    pub limits: QueryLimitArgs,
    /// How often rollups (per-ten-minute request and edge counts of closed
    /// hours, which answer long ranges fast) are brought up to date, in seconds; 0 turns them off.
    #[arg(long, env = "WEFT_ROLLUP_INTERVAL_SECS", default_value_t = 60)]
    pub rollup_interval_secs: u64,
}

/// TLS and access tokens, for every listener the command opens.
#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// Certificate chain (PEM) for TLS on every listener; plain-text
    /// connections are then refused. Reloaded when the file changes or on SIGHUP.
    #[arg(long, env = "WEFT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "WEFT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM): the OTLP listeners then let in only clients
    /// presenting a certificate signed by one of them (mutual TLS).
    #[arg(long, env = "WEFT_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Like --tls-client-ca, for the UI/API listener.
    #[arg(long, env = "WEFT_HTTP_TLS_CLIENT_CA", requires = "tls_cert")]
    pub http_tls_client_ca: Option<PathBuf>,
    /// Requests need `Authorization: Bearer TOKEN` (OTLP, JSON API, SQL);
    /// browsers log in once on /login. /healthz stays open.
    #[arg(
        long,
        env = "WEFT_AUTH_TOKEN",
        hide_env_values = true,
        conflicts_with = "auth_token_file"
    )]
    pub auth_token: Option<crate::auth::Secret>,
    /// Like --auth-token, the token read from the first line of a file.
    #[arg(long, env = "WEFT_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub otlp: OtlpArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub demo: DemoArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Also run the Drone Delivery sample in this process, exporting to this
    /// server, so that the API and UI fill with traces within seconds.
    #[arg(long, env = "WEFT_DEMO")]
    pub demo: bool,
    /// Requests per second the demo's customers send.
    #[arg(long, env = "WEFT_DEMO_RATE", default_value_t = 5.0)]
    pub demo_rate: f64,
}

#[derive(Debug, Clone, Args)]
pub struct CollectorArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub otlp: OtlpArgs,
    #[command(flatten)]
    pub security: SecurityArgs,
}

#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub security: SecurityArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct SqlArgs {
    /// The query, e.g. "SELECT service_name, count(*) FROM spans GROUP BY 1".
    pub sql: String,
    #[command(flatten)]
    pub store: StoreArgs,
    /// How to print the result.
    #[arg(long, env = "WEFT_SQL_FORMAT", value_enum, default_value = "table")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub limits: QueryLimitArgs,
}
