//! Test requests and file metadata shared by the page writers' tests.

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use datafusion::parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::convert::spans::to_record_batch;

/// A string attribute.
pub(crate) fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// Span number `n` (from 1): its trace and span ids made from `n`, named
/// "s", 100 ns long, without attributes.
pub(crate) fn numbered_span(n: usize) -> Span {
    Span {
        trace_id: (n as u128 * 7919).to_be_bytes().to_vec(),
        span_id: (n as u64).to_be_bytes().to_vec(),
        name: "s".into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_000_000_100,
        ..Default::default()
    }
}

/// One request of `resources`, each with `spans_each` spans made by `span`
/// from their numbers, which run from `first + 1` on, so that requests
/// interleave when sorted.
pub(crate) fn request_of(
    resources: &[Vec<KeyValue>],
    spans_each: usize,
    first: usize,
    span: &dyn Fn(usize) -> Span,
) -> RecordBatch {
    let mut next = first;
    let resource_spans = resources
        .iter()
        .map(|resource| ResourceSpans {
            resource: Some(Resource {
                attributes: resource.clone(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..spans_each)
                    .map(|_| {
                        next += 1;
                        span(next)
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    to_record_batch(&ExportTraceServiceRequest { resource_spans }).expect("valid test request")
}

/// The metadata of a Parquet file, page index included.
pub(crate) fn metadata_of(file: &Bytes) -> Result<ParquetMetaData, Box<dyn std::error::Error>> {
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file.clone(), options)?;
    Ok(builder.metadata().as_ref().clone())
}

/// The index of the leaf column at `path` (`a.b.c`).
pub(crate) fn leaf_at(metadata: &ParquetMetaData, path: &str) -> usize {
    let descriptor = metadata.file_metadata().schema_descr();
    (0..descriptor.num_columns())
        .find(|&leaf| descriptor.column(leaf).path().string() == path)
        .expect("a leaf at that path")
}
