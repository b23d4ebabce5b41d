//! The ingest path's CPU cost per span, one stage at a time:
//! prost decoding alone (the floor the issue names), the collector's
//! conversion of the protobuf bytes straight to Arrow, and Parquet encoding of
//! the converted batch.
//!
//! `cargo bench -p weft-benches --bench ingest`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use weft_benches::{SPANS_PER_REQUEST, realistic_request};
use weft_collector::convert::spans::{protobuf_to_record_batch, to_record_batch};
use weft_collector::store::{Table, encode_parquet};

fn ingest(c: &mut Criterion) {
    let request = realistic_request(42, 1_800_000_000_000_000_000);
    let bytes = request.encode_to_vec();
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(SPANS_PER_REQUEST as u64));
    group.bench_function("decode", |b| {
        b.iter(|| {
            ExportTraceServiceRequest::decode(bytes.as_slice()).map(|r| r.resource_spans.len())
        })
    });
    group.bench_function("protobuf_to_arrow", |b| {
        b.iter(|| protobuf_to_record_batch(&bytes).map(|batch| batch.num_rows()))
    });
    // Parquet is written for many requests at once; bench a flush of 16 of them.
    let batches: Vec<_> = (0..16)
        .filter_map(|i| to_record_batch(&realistic_request(i, 1_800_000_000_000_000_000)).ok())
        .collect();
    group.throughput(Throughput::Elements((16 * SPANS_PER_REQUEST) as u64));
    group.bench_function("parquet_encode", |b| {
        b.iter(|| encode_parquet(Table::Spans, &batches).map(|bytes| bytes.len()))
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
