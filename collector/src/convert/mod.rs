//! OTLP messages to Arrow record batches, and the checks that decide which
//! items of a request are accepted.

mod attributes;
mod hex;
pub mod metrics;
mod sizing;
pub mod spans;
pub mod validate;
pub mod wire;

pub use hex::hex;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;

/// `columns` as a batch of `schema`, each column's buffers cut down to what
/// its values use if they hold more than a sixteenth over.
///
/// Builders grow by doubling from guessed capacities, so a fresh batch held
/// 1.75 times the bytes its values need (1,963 against 1,124 per span of the
/// ingest benchmark's requests, 4.5 times their protobuf). A batch waits for
/// its flush in memory, so that slack was most of the collector's memory at
/// a steady rate, and counted against its memory limit.
pub(crate) fn fitted_batch(
    schema: SchemaRef,
    mut columns: Vec<ArrayRef>,
) -> Result<RecordBatch, ArrowError> {
    for column in &mut columns {
        // Cutting down copies; builders sized from the last batch
        // (`sizing`) seldom leave enough over to be worth it.
        let used = column.to_data().get_slice_memory_size()?;
        if column.get_buffer_memory_size() > used + used / 16 {
            column.shrink_to_fit();
        }
    }
    RecordBatch::try_new(schema, columns)
}
