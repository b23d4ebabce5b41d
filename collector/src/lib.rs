//! The collector: OTLP in, Parquet out.
//!
//! ```text
//! grpc / http ─▶ convert (validate, OTLP → Arrow) ─▶ ingest (WAL, group commit, ack)
//!             ─▶ flush (sorted Parquet per hour, checkpoint) ─▶ compaction (merge, retention)
//! ```
//!
//! [`Collector::start`] recovers the store after a crash, then starts the
//! pipeline; [`grpc::router`] and [`http::router`] are the receivers.

mod attribute_maps;
pub mod compaction;
pub mod convert;
mod empty_leaves;
mod flush;
mod gather;
pub mod grpc;
pub mod http;
mod ingest;
mod memory;
pub mod sorted;
pub mod store;
#[cfg(test)]
mod test_requests;
mod text_columns;
pub mod wal;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::RwLock;

pub use compaction::{CompactionConfig, CompactionError, Compactor};
pub use flush::{FlushError, split_by_hour};
pub use ingest::{Ingest, IngestConfig, IngestError};
pub use memory::MemoryBudget;
pub use sorted::sort_for_storage;
pub use store::{Store, StoreError, Table};

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error(transparent)]
    Flush(#[from] FlushError),
    #[error(transparent)]
    Compaction(#[from] CompactionError),
    #[error(transparent)]
    Wal(#[from] wal::WalError),
}

/// Settings of the ingest pipeline and store upkeep.
#[derive(Debug, Clone)]
pub struct CollectorSettings {
    pub flush_interval: Duration,
    pub memory_limit: usize,
    pub compaction: CompactionConfig,
}

impl Default for CollectorSettings {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(1),
            memory_limit: 512 << 20,
            compaction: CompactionConfig::default(),
        }
    }
}

/// A running ingest pipeline.
pub struct Collector {
    ingest: Ingest,
}

impl Collector {
    /// Finishes any interrupted compaction, replays the WAL into Parquet, then
    /// starts the log thread, the flusher and the compactor. `data_dir` holds
    /// the WAL and the compaction journal; `store` holds the Parquet files.
    pub async fn start(
        store: Store,
        data_dir: &Path,
        settings: &CollectorSettings,
        store_lock: Arc<RwLock<()>>,
    ) -> Result<Self, CollectorError> {
        let wal_dir: PathBuf = data_dir.join("wal");
        let flusher = flush::Flusher::start(store.clone(), wal_dir.clone())?;
        let compactor = Compactor::new(
            store,
            data_dir.to_owned(),
            flusher.checkpoint(),
            store_lock,
            settings.compaction.clone(),
        );
        compactor.recover().await?;
        ingest::recover(&flusher, &wal_dir).await?;
        let config = IngestConfig {
            wal_dir,
            flush_interval: settings.flush_interval,
            // Flush early once a quarter of the budget is buffered.
            flush_bytes: settings.memory_limit / 4,
            memory_limit: settings.memory_limit,
        };
        let ingest = Ingest::start(&config, flusher)?;
        tokio::spawn(compactor.run());
        Ok(Self { ingest })
    }

    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }
}
