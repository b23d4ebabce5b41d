//! The DataFusion session over the store, and sandboxed SQL.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use object_store::ObjectStore;
use serde::Serialize;
use tokio::sync::RwLock;
use url::Url;

use crate::json;
use crate::sandbox::{self, Refusal};

/// Where the store is registered inside DataFusion's object store registry.
const STORE_URL: &str = "weft://store/";

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(
        "the query did not finish within its time limit of {0:?}; narrow it (a time range, a LIMIT) and try again"
    )]
    Timeout(Duration),
    #[error("{0}")]
    Invalid(String),
    #[error("the query needs more memory than its limit allows: {0}")]
    ResourcesExhausted(String),
    #[error("query failed: {0}")]
    Engine(DataFusionError),
}

impl QueryError {
    /// `true` when the query itself is at fault (a 4xx), `false` for a server fault.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, QueryError::Engine(_))
    }
}

impl From<DataFusionError> for QueryError {
    fn from(error: DataFusionError) -> Self {
        match error.find_root() {
            DataFusionError::Plan(_)
            | DataFusionError::SQL(..)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_) => QueryError::Invalid(error.strip_backtrace()),
            DataFusionError::ArrowError(arrow, _)
                if matches!(
                    arrow.as_ref(),
                    ArrowError::CastError(_)
                        | ArrowError::ParseError(_)
                        | ArrowError::DivideByZero
                        | ArrowError::ArithmeticOverflow(_)
                        | ArrowError::InvalidArgumentError(_)
                ) =>
            {
                QueryError::Invalid(error.strip_backtrace())
            }
            DataFusionError::ResourcesExhausted(_) => {
                QueryError::ResourcesExhausted(error.strip_backtrace())
            }
            _ => QueryError::Engine(error),
        }
    }
}

/// Bounds on one SQL query.
#[derive(Debug, Clone)]
pub struct QueryLimits {
    pub timeout: Duration,
    pub max_rows: usize,
    /// Memory for operators that buffer (sorts, joins, aggregates).
    pub memory_bytes: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_rows: 10_000,
            memory_bytes: 1 << 30,
        }
    }
}

fn parquet_listing() -> ListingOptions {
    ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(weft_schema::layout::PARQUET_SUFFIX)
}

/// Builds sessions over the store and runs SQL in them.
pub struct QueryEngine {
    runtime: Arc<RuntimeEnv>,
    /// The store itself, for the files this crate reads and writes directly (rollups).
    objects: Arc<dyn ObjectStore>,
    catalog: crate::catalog::Catalog,
    trace_index: crate::catalog::TraceIndex,
    attribute_keys: crate::catalog::KeyIndex,
    store_lock: Option<Arc<RwLock<()>>>,
    limits: QueryLimits,
}

impl QueryEngine {
    /// `store_lock`, when given, is held for reading while a query runs; the
    /// compactor of the same process holds it for writing while it swaps files.
    pub fn new(
        objects: Arc<dyn ObjectStore>,
        store_lock: Option<Arc<RwLock<()>>>,
        limits: QueryLimits,
    ) -> Result<Self, QueryError> {
        // New files must be seen by the next query, so file listings are not cached.
        let cache = CacheManagerConfig::default().with_list_files_cache_limit(0);
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(cache)
            .with_memory_limit(limits.memory_bytes, 1.0)
            .build_arc()?;
        let url = Url::parse(STORE_URL).map_err(|e| QueryError::Invalid(e.to_string()))?;
        runtime.register_object_store(&url, Arc::clone(&objects));
        Ok(Self {
            runtime,
            objects,
            catalog: crate::catalog::Catalog::default(),
            trace_index: crate::catalog::TraceIndex::default(),
            attribute_keys: crate::catalog::KeyIndex::default(),
            store_lock,
            limits,
        })
    }

    pub(crate) fn catalog_cache(&self) -> &crate::catalog::Catalog {
        &self.catalog
    }

    pub(crate) fn trace_index(&self) -> &crate::catalog::TraceIndex {
        &self.trace_index
    }

    pub(crate) fn key_index(&self) -> &crate::catalog::KeyIndex {
        &self.attribute_keys
    }

    pub(crate) fn store_lock(&self) -> Option<&Arc<RwLock<()>>> {
        self.store_lock.as_ref()
    }

    pub(crate) fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// A session with `spans` and `metrics` registered. The only place tables are
    /// registered, so that another engine can stand in for this one.
    pub fn session(&self) -> Result<SessionContext, QueryError> {
        let mut config = SessionConfig::new().with_information_schema(true);
        // Files live in hour directories below each table's directory.
        config
            .options_mut()
            .execution
            .listing_table_ignore_subdirectory = false;
        let parquet = &mut config.options_mut().execution.parquet;
        parquet.pushdown_filters = true;
        parquet.reorder_filters = true;
        let ctx = SessionContext::new_with_config_rt(config, Arc::clone(&self.runtime));
        for (name, dir, schema) in [
            (
                "spans",
                weft_schema::layout::SPANS_DIR,
                weft_schema::spans::schema(),
            ),
            (
                "metrics",
                weft_schema::layout::METRICS_DIR,
                weft_schema::metrics::schema(),
            ),
        ] {
            let url = ListingTableUrl::parse(format!("{STORE_URL}{dir}/"))?;
            let config = ListingTableConfig::new(url)
                .with_listing_options(parquet_listing())
                .with_schema(schema);
            ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
        }
        Ok(ctx)
    }

    /// The spans of the given hours (starts of UTC hours) only: their hour
    /// directories alone are listed, so no other file is opened, and
    /// DataFusion spreads those files' bytes over all its partitions (over the
    /// whole store, an hour's file falls to one partition and one core).
    pub(crate) async fn spans_of_hours(
        &self,
        hours: impl IntoIterator<Item = i64>,
    ) -> Result<DataFrame, QueryError> {
        let ctx = self.session()?;
        let urls = hours
            .into_iter()
            .map(|hour| {
                let dir = weft_schema::layout::hour_dir(weft_schema::layout::SPANS_DIR, hour);
                ListingTableUrl::parse(format!("{STORE_URL}{dir}/"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            // No hour: an empty frame of the table's shape.
            return Ok(ctx.table("spans").await?.limit(0, Some(0))?);
        }
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(parquet_listing())
            .with_schema(weft_schema::spans::schema());
        Ok(ctx.read_table(Arc::new(ListingTable::try_new(config)?))?)
    }

    /// Runs one read-only query within the time and row limits.
    pub async fn sql(&self, sql: &str) -> Result<SqlResult, QueryError> {
        sandbox::check(sql)?;
        let _reading = match &self.store_lock {
            Some(lock) => Some(lock.read().await),
            None => None,
        };
        let run = async {
            // A file can vanish between listing and reading when another process
            // compacts the store; the next listing no longer names it.
            let mut attempts = 0;
            loop {
                attempts += 1;
                match self.run(sql).await {
                    Err(QueryError::Engine(e)) if attempts < 3 && is_missing_file(&e) => continue,
                    other => return other,
                }
            }
        };
        tokio::time::timeout(self.limits.timeout, run)
            .await
            .map_err(|_| QueryError::Timeout(self.limits.timeout))?
    }

    /// Runs a frame built by this crate, under the store lock and the time limit.
    pub(crate) async fn collect(&self, frame: DataFrame) -> Result<Vec<RecordBatch>, QueryError> {
        let _reading = match &self.store_lock {
            Some(lock) => Some(lock.read().await),
            None => None,
        };
        tokio::time::timeout(self.limits.timeout, frame.collect())
            .await
            .map_err(|_| QueryError::Timeout(self.limits.timeout))?
            .map_err(QueryError::from)
    }

    async fn run(&self, sql: &str) -> Result<SqlResult, QueryError> {
        let ctx = self.session()?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = ctx.sql_with_options(sql, options).await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let mut stream = frame.execute_stream().await?;
        let mut batches = Vec::new();
        let mut rows = 0;
        let mut truncated = false;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let room = self.limits.max_rows - rows;
            if batch.num_rows() > room {
                batches.push(batch.slice(0, room));
                truncated = true;
                break;
            }
            rows += batch.num_rows();
            batches.push(batch);
        }
        Ok(SqlResult {
            schema,
            batches,
            truncated,
        })
    }
}

/// Whether a file the query was to read is gone (also when the Parquet
/// reader wraps the store's error in its own).
pub(crate) fn is_missing_file(error: &DataFusionError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if let Some(object_store::Error::NotFound { .. }) = error.downcast_ref() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// One column of a result.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SqlColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

/// A result as JSON: `{"columns": [...], "rows": [[...]], "truncated": bool}`.
#[derive(Debug, Clone, Serialize)]
pub struct SqlJson {
    pub columns: Vec<SqlColumn>,
    pub rows: Vec<Vec<serde_json::Value>>,
    /// `true` when the row limit cut the result short.
    pub truncated: bool,
}

/// The rows of a finished query.
#[derive(Debug, Clone)]
pub struct SqlResult {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    truncated: bool,
}

impl SqlResult {
    pub fn columns(&self) -> Vec<SqlColumn> {
        self.schema
            .fields()
            .iter()
            .map(|f| SqlColumn {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
            })
            .collect()
    }

    pub fn row_count(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    pub fn truncated(&self) -> bool {
        self.truncated
    }

    pub fn rows(&self) -> Vec<Vec<serde_json::Value>> {
        let mut rows = Vec::with_capacity(self.row_count());
        for batch in &self.batches {
            for row in 0..batch.num_rows() {
                rows.push(
                    batch
                        .columns()
                        .iter()
                        .map(|c| json::value(c.as_ref(), row))
                        .collect(),
                );
            }
        }
        rows
    }

    pub fn to_json(&self) -> SqlJson {
        SqlJson {
            columns: self.columns(),
            rows: self.rows(),
            truncated: self.truncated,
        }
    }

    /// CSV with a header row. Nested values are written as JSON text.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let header: Vec<String> = self
            .schema
            .fields()
            .iter()
            .map(|f| csv_field(f.name()))
            .collect();
        out.push_str(&header.join(","));
        out.push('\n');
        for row in self.rows() {
            let fields: Vec<String> = row
                .into_iter()
                .map(|value| match value {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(s) => csv_field(&s),
                    other => csv_field(&other.to_string()),
                })
                .collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        out
    }

    /// A text table for terminals.
    pub fn to_table(&self) -> Result<String, QueryError> {
        if self.batches.is_empty() {
            let empty = RecordBatch::new_empty(Arc::clone(&self.schema));
            return Ok(pretty_format_batches(&[empty])?.to_string());
        }
        Ok(pretty_format_batches(&self.batches)?.to_string())
    }
}

impl From<ArrowError> for QueryError {
    fn from(error: ArrowError) -> Self {
        QueryError::Engine(DataFusionError::ArrowError(Box::new(error), None))
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}
