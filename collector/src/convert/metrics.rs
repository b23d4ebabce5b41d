//! OTLP metric requests to `metrics` record batches: one row per data point.
//! Pure: no I/O, no `.await`.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, RecordBatch,
    StringBuilder, TimestampNanosecondBuilder, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::error::ArrowError;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
    NumberDataPoint, SummaryDataPoint, exemplar, exponential_histogram_data_point::Buckets,
    metric::Data, number_data_point,
};
use weft_schema::TIME_ZONE;
use weft_schema::metrics::{self, metric_type};

use super::attributes::AttributeColumns;
use super::hex::hex;
use super::spans::{ResourceContext, list_of_structs, nanos};

pub fn data_point_count(metric: &Metric) -> usize {
    match &metric.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

pub fn request_data_point_count(request: &ExportMetricsServiceRequest) -> usize {
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(data_point_count)
        .sum()
}

/// Converts every data point of `request` (already validated) into one batch.
pub fn to_record_batch(request: &ExportMetricsServiceRequest) -> Result<RecordBatch, ArrowError> {
    let mut builder = MetricBatchBuilder::with_capacity(request_data_point_count(request));
    for resource_metrics in &request.resource_metrics {
        let resource = ResourceContext::new(
            resource_metrics.resource.as_ref(),
            &resource_metrics.schema_url,
        );
        for scope_metrics in &resource_metrics.scope_metrics {
            for metric in &scope_metrics.metrics {
                builder.append_metric(&resource, scope_metrics.scope.as_ref(), metric)?;
            }
        }
    }
    builder.finish()
}

fn temporality_name(value: i32) -> &'static str {
    match AggregationTemporality::try_from(value) {
        Ok(AggregationTemporality::Delta) => "delta",
        Ok(AggregationTemporality::Cumulative) => "cumulative",
        _ => "unspecified",
    }
}

fn u64_list() -> ListBuilder<UInt64Builder> {
    ListBuilder::new(UInt64Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::UInt64,
        false,
    )))
}

fn f64_list() -> ListBuilder<Float64Builder> {
    ListBuilder::new(Float64Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Float64,
        false,
    )))
}

/// Everything a data point row shares with its metric.
struct MetricContext<'a> {
    resource: &'a ResourceContext<'a>,
    scope: Option<&'a InstrumentationScope>,
    metric: &'a Metric,
    metric_type: &'static str,
    temporality: Option<&'static str>,
    is_monotonic: Option<bool>,
}

struct ExemplarColumns {
    offsets: Vec<i32>,
    time: TimestampNanosecondBuilder,
    value: Float64Builder,
    value_int: Int64Builder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    attributes: AttributeColumns,
}

impl ExemplarColumns {
    fn new() -> Self {
        Self {
            offsets: vec![0],
            time: TimestampNanosecondBuilder::new().with_timezone(TIME_ZONE),
            value: Float64Builder::new(),
            value_int: Int64Builder::new(),
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            attributes: AttributeColumns::with_capacity(0, 0),
        }
    }

    fn append(&mut self, exemplars: &[Exemplar]) {
        for e in exemplars {
            self.time.append_value(nanos(e.time_unix_nano));
            match e.value {
                Some(exemplar::Value::AsDouble(d)) => {
                    self.value.append_value(d);
                    self.value_int.append_null();
                }
                Some(exemplar::Value::AsInt(i)) => {
                    self.value.append_value(i as f64);
                    self.value_int.append_value(i);
                }
                None => {
                    self.value.append_null();
                    self.value_int.append_null();
                }
            }
            self.trace_id
                .append_option((!e.trace_id.is_empty()).then(|| hex(&e.trace_id)));
            self.span_id
                .append_option((!e.span_id.is_empty()).then(|| hex(&e.span_id)));
            self.attributes.append(&e.filtered_attributes);
        }
        let last = self.offsets.last().copied().unwrap_or_default();
        self.offsets
            .push(last.saturating_add(i32::try_from(exemplars.len()).unwrap_or(i32::MAX)));
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let (attributes, types) = self.attributes.finish();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.value_int.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            attributes,
            types,
        ];
        list_of_structs(
            metrics::exemplar_type(),
            std::mem::take(&mut self.offsets),
            columns,
        )
    }
}

/// Column builders for the `metrics` table.
pub struct MetricBatchBuilder {
    service_name: StringBuilder,
    metric_name: StringBuilder,
    metric_description: StringBuilder,
    unit: StringBuilder,
    metric_type: StringBuilder,
    aggregation_temporality: StringBuilder,
    is_monotonic: BooleanBuilder,
    start_time: TimestampNanosecondBuilder,
    time: TimestampNanosecondBuilder,
    value: Float64Builder,
    value_int: Int64Builder,
    count: UInt64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_counts: ListBuilder<UInt64Builder>,
    explicit_bounds: ListBuilder<Float64Builder>,
    scale: Int32Builder,
    zero_count: UInt64Builder,
    zero_threshold: Float64Builder,
    positive_offset: Int32Builder,
    positive_bucket_counts: ListBuilder<UInt64Builder>,
    negative_offset: Int32Builder,
    negative_bucket_counts: ListBuilder<UInt64Builder>,
    quantile_offsets: Vec<i32>,
    quantile_valid: Vec<bool>,
    quantile: Float64Builder,
    quantile_value: Float64Builder,
    flags: UInt32Builder,
    exemplars: ExemplarColumns,
    attributes: AttributeColumns,
    resource_attributes: AttributeColumns,
    resource_schema_url: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attributes: AttributeColumns,
}

/// The per-type values of one data point.
#[derive(Default)]
struct PointValues<'a> {
    value: Option<f64>,
    value_int: Option<i64>,
    count: Option<u64>,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    bucket_counts: Option<&'a [u64]>,
    explicit_bounds: Option<&'a [f64]>,
    scale: Option<i32>,
    zero_count: Option<u64>,
    zero_threshold: Option<f64>,
    positive: Option<&'a Buckets>,
    negative: Option<&'a Buckets>,
    quantiles: Option<Vec<(f64, f64)>>,
}

/// The fields every data point type has.
struct PointCommon<'a> {
    attributes: &'a [KeyValue],
    start_time_unix_nano: u64,
    time_unix_nano: u64,
    flags: u32,
    exemplars: &'a [Exemplar],
}

impl MetricBatchBuilder {
    pub fn with_capacity(rows: usize) -> Self {
        let timestamps =
            || TimestampNanosecondBuilder::with_capacity(rows).with_timezone(TIME_ZONE);
        Self {
            service_name: StringBuilder::new(),
            metric_name: StringBuilder::new(),
            metric_description: StringBuilder::new(),
            unit: StringBuilder::new(),
            metric_type: StringBuilder::new(),
            aggregation_temporality: StringBuilder::new(),
            is_monotonic: BooleanBuilder::new(),
            start_time: timestamps(),
            time: timestamps(),
            value: Float64Builder::with_capacity(rows),
            value_int: Int64Builder::with_capacity(rows),
            count: UInt64Builder::with_capacity(rows),
            sum: Float64Builder::with_capacity(rows),
            min: Float64Builder::with_capacity(rows),
            max: Float64Builder::with_capacity(rows),
            bucket_counts: u64_list(),
            explicit_bounds: f64_list(),
            scale: Int32Builder::new(),
            zero_count: UInt64Builder::new(),
            zero_threshold: Float64Builder::new(),
            positive_offset: Int32Builder::new(),
            positive_bucket_counts: u64_list(),
            negative_offset: Int32Builder::new(),
            negative_bucket_counts: u64_list(),
            quantile_offsets: vec![0],
            quantile_valid: Vec::with_capacity(rows),
            quantile: Float64Builder::new(),
            quantile_value: Float64Builder::new(),
            flags: UInt32Builder::with_capacity(rows),
            exemplars: ExemplarColumns::new(),
            attributes: AttributeColumns::with_capacity(rows, 4),
            resource_attributes: AttributeColumns::with_capacity(rows, 8),
            resource_schema_url: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            scope_attributes: AttributeColumns::with_capacity(rows, 0),
        }
    }

    fn append_metric(
        &mut self,
        resource: &ResourceContext<'_>,
        scope: Option<&InstrumentationScope>,
        metric: &Metric,
    ) -> Result<(), ArrowError> {
        let Some(data) = &metric.data else {
            return Ok(());
        };
        let context = |metric_type, temporality: Option<i32>, is_monotonic| MetricContext {
            resource,
            scope,
            metric,
            metric_type,
            temporality: temporality.map(temporality_name),
            is_monotonic,
        };
        match data {
            Data::Gauge(gauge) => {
                let ctx = context(metric_type::GAUGE, None, None);
                for p in &gauge.data_points {
                    self.append_number(&ctx, p)?;
                }
            }
            Data::Sum(sum) => {
                let ctx = context(
                    metric_type::SUM,
                    Some(sum.aggregation_temporality),
                    Some(sum.is_monotonic),
                );
                for p in &sum.data_points {
                    self.append_number(&ctx, p)?;
                }
            }
            Data::Histogram(h) => {
                let ctx = context(
                    metric_type::HISTOGRAM,
                    Some(h.aggregation_temporality),
                    None,
                );
                for p in &h.data_points {
                    self.append_histogram(&ctx, p)?;
                }
            }
            Data::ExponentialHistogram(h) => {
                let ctx = context(
                    metric_type::EXPONENTIAL_HISTOGRAM,
                    Some(h.aggregation_temporality),
                    None,
                );
                for p in &h.data_points {
                    self.append_exponential(&ctx, p)?;
                }
            }
            Data::Summary(s) => {
                let ctx = context(metric_type::SUMMARY, None, None);
                for p in &s.data_points {
                    self.append_summary(&ctx, p)?;
                }
            }
        }
        Ok(())
    }

    fn append_number(
        &mut self,
        ctx: &MetricContext<'_>,
        p: &NumberDataPoint,
    ) -> Result<(), ArrowError> {
        let (value, value_int) = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => (Some(d), None),
            Some(number_data_point::Value::AsInt(i)) => (Some(i as f64), Some(i)),
            None => (None, None),
        };
        let common = PointCommon {
            attributes: &p.attributes,
            start_time_unix_nano: p.start_time_unix_nano,
            time_unix_nano: p.time_unix_nano,
            flags: p.flags,
            exemplars: &p.exemplars,
        };
        self.append_row(
            ctx,
            &common,
            PointValues {
                value,
                value_int,
                ..Default::default()
            },
        )
    }

    fn append_histogram(
        &mut self,
        ctx: &MetricContext<'_>,
        p: &HistogramDataPoint,
    ) -> Result<(), ArrowError> {
        let common = PointCommon {
            attributes: &p.attributes,
            start_time_unix_nano: p.start_time_unix_nano,
            time_unix_nano: p.time_unix_nano,
            flags: p.flags,
            exemplars: &p.exemplars,
        };
        let values = PointValues {
            count: Some(p.count),
            sum: p.sum,
            min: p.min,
            max: p.max,
            bucket_counts: Some(&p.bucket_counts),
            explicit_bounds: Some(&p.explicit_bounds),
            ..Default::default()
        };
        self.append_row(ctx, &common, values)
    }

    fn append_exponential(
        &mut self,
        ctx: &MetricContext<'_>,
        p: &ExponentialHistogramDataPoint,
    ) -> Result<(), ArrowError> {
        let common = PointCommon {
            attributes: &p.attributes,
            start_time_unix_nano: p.start_time_unix_nano,
            time_unix_nano: p.time_unix_nano,
            flags: p.flags,
            exemplars: &p.exemplars,
        };
        let values = PointValues {
            count: Some(p.count),
            sum: p.sum,
            min: p.min,
            max: p.max,
            scale: Some(p.scale),
            zero_count: Some(p.zero_count),
            zero_threshold: Some(p.zero_threshold),
            positive: p.positive.as_ref(),
            negative: p.negative.as_ref(),
            ..Default::default()
        };
        self.append_row(ctx, &common, values)
    }

    fn append_summary(
        &mut self,
        ctx: &MetricContext<'_>,
        p: &SummaryDataPoint,
    ) -> Result<(), ArrowError> {
        let common = PointCommon {
            attributes: &p.attributes,
            start_time_unix_nano: p.start_time_unix_nano,
            time_unix_nano: p.time_unix_nano,
            flags: p.flags,
            exemplars: &[],
        };
        let values = PointValues {
            count: Some(p.count),
            sum: Some(p.sum),
            quantiles: Some(
                p.quantile_values
                    .iter()
                    .map(|q| (q.quantile, q.value))
                    .collect(),
            ),
            ..Default::default()
        };
        self.append_row(ctx, &common, values)
    }

    fn append_row(
        &mut self,
        ctx: &MetricContext<'_>,
        common: &PointCommon<'_>,
        v: PointValues<'_>,
    ) -> Result<(), ArrowError> {
        self.service_name.append_value(&ctx.resource.service_name);
        self.metric_name.append_value(&ctx.metric.name);
        self.metric_description
            .append_option(non_empty(&ctx.metric.description));
        self.unit.append_option(non_empty(&ctx.metric.unit));
        self.metric_type.append_value(ctx.metric_type);
        self.aggregation_temporality.append_option(ctx.temporality);
        self.is_monotonic.append_option(ctx.is_monotonic);
        self.start_time.append_option(
            (common.start_time_unix_nano != 0).then(|| nanos(common.start_time_unix_nano)),
        );
        self.time.append_value(nanos(common.time_unix_nano));
        self.value.append_option(v.value);
        self.value_int.append_option(v.value_int);
        self.count.append_option(v.count);
        self.sum.append_option(v.sum);
        self.min.append_option(v.min);
        self.max.append_option(v.max);
        append_u64_list(&mut self.bucket_counts, v.bucket_counts);
        match v.explicit_bounds {
            Some(bounds) => {
                self.explicit_bounds.values().append_slice(bounds);
                self.explicit_bounds.append(true);
            }
            None => self.explicit_bounds.append(false),
        }
        self.scale.append_option(v.scale);
        self.zero_count.append_option(v.zero_count);
        self.zero_threshold.append_option(v.zero_threshold);
        let is_exponential = v.scale.is_some();
        self.positive_offset
            .append_option(v.positive.map(|b| b.offset));
        append_u64_list(
            &mut self.positive_bucket_counts,
            v.positive
                .map(|b| b.bucket_counts.as_slice())
                .or(is_exponential.then_some(&[])),
        );
        self.negative_offset
            .append_option(v.negative.map(|b| b.offset));
        append_u64_list(
            &mut self.negative_bucket_counts,
            v.negative
                .map(|b| b.bucket_counts.as_slice())
                .or(is_exponential.then_some(&[])),
        );
        match v.quantiles {
            Some(quantiles) => {
                for (q, value) in &quantiles {
                    self.quantile.append_value(*q);
                    self.quantile_value.append_value(*value);
                }
                let last = self.quantile_offsets.last().copied().unwrap_or_default();
                self.quantile_offsets
                    .push(last.saturating_add(i32::try_from(quantiles.len()).unwrap_or(i32::MAX)));
                self.quantile_valid.push(true);
            }
            None => {
                let last = self.quantile_offsets.last().copied().unwrap_or_default();
                self.quantile_offsets.push(last);
                self.quantile_valid.push(false);
            }
        }
        self.flags.append_value(common.flags);
        self.exemplars.append(common.exemplars);
        self.attributes.append(common.attributes);
        self.resource_attributes
            .append_shared(&ctx.resource.attributes)?;
        self.resource_schema_url
            .append_option(non_empty(ctx.resource.schema_url));
        self.scope_name
            .append_option(ctx.scope.map(|s| s.name.as_str()));
        self.scope_version
            .append_option(ctx.scope.and_then(|s| non_empty(&s.version)));
        self.scope_attributes.append(
            ctx.scope
                .map(|s| s.attributes.as_slice())
                .unwrap_or_default(),
        );
        Ok(())
    }

    pub fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let quantiles = {
            let columns: Vec<ArrayRef> = vec![
                Arc::new(self.quantile.finish()),
                Arc::new(self.quantile_value.finish()),
            ];
            let list = list_of_structs(
                metrics::quantile_type(),
                std::mem::take(&mut self.quantile_offsets),
                columns,
            )?;
            // Rows that are not summaries hold NULL rather than an empty list.
            let nulls = datafusion::arrow::buffer::NullBuffer::from(std::mem::take(
                &mut self.quantile_valid,
            ));
            let list = list.to_data().into_builder().nulls(Some(nulls)).build()?;
            datafusion::arrow::array::make_array(list)
        };
        let (attributes, attribute_types) = self.attributes.finish();
        let (resource_attributes, resource_attribute_types) = self.resource_attributes.finish();
        let (scope_attributes, scope_attribute_types) = self.scope_attributes.finish();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.service_name.finish()),
            Arc::new(self.metric_name.finish()),
            Arc::new(self.metric_description.finish()),
            Arc::new(self.unit.finish()),
            Arc::new(self.metric_type.finish()),
            Arc::new(self.aggregation_temporality.finish()),
            Arc::new(self.is_monotonic.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.time.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.value_int.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.sum.finish()),
            Arc::new(self.min.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.bucket_counts.finish()),
            Arc::new(self.explicit_bounds.finish()),
            Arc::new(self.scale.finish()),
            Arc::new(self.zero_count.finish()),
            Arc::new(self.zero_threshold.finish()),
            Arc::new(self.positive_offset.finish()),
            Arc::new(self.positive_bucket_counts.finish()),
            Arc::new(self.negative_offset.finish()),
            Arc::new(self.negative_bucket_counts.finish()),
            quantiles,
            Arc::new(self.flags.finish()),
            self.exemplars.finish()?,
            attributes,
            attribute_types,
            resource_attributes,
            resource_attribute_types,
            Arc::new(self.resource_schema_url.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            scope_attributes,
            scope_attribute_types,
        ];
        super::fitted_batch(metrics::schema(), columns)
    }
}

fn append_u64_list(builder: &mut ListBuilder<UInt64Builder>, values: Option<&[u64]>) {
    match values {
        Some(values) => {
            builder.values().append_slice(values);
            builder.append(true);
        }
        None => builder.append(false),
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}
