//! The metrics explorer's questions: which metrics exist in a time range, and
//! one metric as series over time buckets, one per service.
//!
//! What a bucket's value is depends on the metric type: a gauge's mean; a
//! delta sum's total per second; a cumulative sum's mean level; for
//! histograms, p50/p95/p99 estimated from the merged bucket counts (linear
//! within a bucket, as Prometheus' `histogram_quantile` does); for
//! exponential histograms and summaries, the mean (sum / count).

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use datafusion::prelude::{cast, col, lit};
use weft_schema::metrics as m;

use crate::engine::{QueryEngine, QueryError};
use crate::traces::timestamp;

/// A metric seen in a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricInfo {
    pub name: String,
    pub metric_type: String,
    pub unit: String,
    pub services: Vec<String>,
    pub points: u64,
}

/// One line of a metric chart: `(bucket start, value)` for buckets with data.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSeries {
    pub label: String,
    pub points: Vec<(i64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricChart {
    pub metric_type: String,
    pub unit: String,
    pub temporality: String,
    pub series: Vec<MetricSeries>,
}

/// Points read for one metric; more are not charted (the chart says so).
pub const MAX_POINTS: usize = 200_000;

fn time_filter(start_ns: i64, end_ns: i64) -> datafusion::prelude::Expr {
    col(m::TIME)
        .gt_eq(timestamp(start_ns))
        .and(col(m::TIME).lt_eq(timestamp(end_ns)))
}

fn text(batch: &RecordBatch, index: usize, row: usize) -> String {
    let column = batch.column(index).as_string::<i32>();
    if column.is_null(row) {
        String::new()
    } else {
        column.value(row).to_owned()
    }
}

/// The value at quantile `q` of a histogram with `counts` over `bounds`
/// (bucket i holds values up to `bounds[i]`; the last is open).
pub fn histogram_quantile(q: f64, bounds: &[f64], counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        if count > 0 && (seen + count) as f64 >= rank {
            let lower = if i == 0 {
                0f64.min(bounds.first().copied().unwrap_or(0.0))
            } else {
                bounds[i - 1]
            };
            // The open last bucket: its lower bound is the best estimate.
            let Some(&upper) = bounds.get(i) else {
                return Some(lower);
            };
            let within = (rank - seen as f64) / count as f64;
            return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
        }
        seen += count;
    }
    bounds.last().copied()
}

#[derive(Default)]
struct Accumulator {
    values: f64,
    points: u64,
    count: u64,
    sum: f64,
    bounds: Vec<f64>,
    buckets: Vec<u64>,
}

impl QueryEngine {
    /// Every metric with data in the range, by name.
    pub async fn metric_names(
        &self,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<MetricInfo>, QueryError> {
        let frame = self
            .session()?
            .table("metrics")
            .await?
            .filter(time_filter(start_ns, end_ns))?
            .aggregate(
                vec![
                    col(m::METRIC_NAME),
                    col(m::METRIC_TYPE),
                    col(m::UNIT),
                    col(m::SERVICE_NAME),
                ],
                vec![datafusion::functions_aggregate::expr_fn::count(lit(1)).alias("points")],
            )?;
        let mut metrics: BTreeMap<(String, String), MetricInfo> = BTreeMap::new();
        for batch in self.collect(frame).await? {
            let points = batch.column(4).as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                let (name, metric_type) = (text(&batch, 0, row), text(&batch, 1, row));
                let info = metrics
                    .entry((name.clone(), metric_type.clone()))
                    .or_insert_with(|| MetricInfo {
                        name,
                        metric_type,
                        unit: text(&batch, 2, row),
                        services: Vec::new(),
                        points: 0,
                    });
                info.services.push(text(&batch, 3, row));
                info.points += u64::try_from(points.value(row)).unwrap_or_default();
            }
        }
        Ok(metrics
            .into_values()
            .map(|mut info| {
                info.services.sort();
                info
            })
            .collect())
    }

    /// One metric (optionally of one service) per time bucket of `step_ns`.
    pub async fn metric_chart(
        &self,
        name: &str,
        service: Option<&str>,
        start_ns: i64,
        end_ns: i64,
        step_ns: i64,
    ) -> Result<MetricChart, QueryError> {
        if step_ns <= 0 {
            return Err(QueryError::Invalid("the step must be positive".into()));
        }
        let mut filter = time_filter(start_ns, end_ns).and(col(m::METRIC_NAME).eq(lit(name)));
        if let Some(service) = service {
            filter = filter.and(col(m::SERVICE_NAME).eq(lit(service)));
        }
        let frame = self
            .session()?
            .table("metrics")
            .await?
            .filter(filter)?
            .select(vec![
                col(m::SERVICE_NAME),
                ((cast(col(m::TIME), DataType::Int64) - lit(start_ns)) / lit(step_ns))
                    .alias("bucket"),
                col(m::METRIC_TYPE),
                col(m::UNIT),
                cast(col(m::AGGREGATION_TEMPORALITY), DataType::Utf8).alias("temporality"),
                col(m::VALUE),
                col(m::COUNT),
                col(m::SUM),
                col(m::BUCKET_COUNTS),
                col(m::EXPLICIT_BOUNDS),
            ])?
            .limit(0, Some(MAX_POINTS))?;
        let mut chart = MetricChart::default();
        let mut cells: BTreeMap<(String, i64), Accumulator> = BTreeMap::new();
        for batch in self.collect(frame).await? {
            let bucket = batch.column(1).as_primitive::<Int64Type>();
            let value = batch.column(5).as_primitive::<Float64Type>();
            let count = batch.column(6).as_primitive::<UInt64Type>();
            let sum = batch.column(7).as_primitive::<Float64Type>();
            let bucket_counts = batch.column(8).as_list::<i32>();
            let bounds = batch.column(9).as_list::<i32>();
            for row in 0..batch.num_rows() {
                if chart.metric_type.is_empty() {
                    chart.metric_type = text(&batch, 2, row);
                    chart.unit = text(&batch, 3, row);
                    chart.temporality = text(&batch, 4, row);
                }
                let cell = cells
                    .entry((text(&batch, 0, row), bucket.value(row)))
                    .or_default();
                cell.points += 1;
                if !value.is_null(row) {
                    cell.values += value.value(row);
                }
                if !count.is_null(row) {
                    cell.count += count.value(row);
                }
                if !sum.is_null(row) {
                    cell.sum += sum.value(row);
                }
                if !bucket_counts.is_null(row) && !bounds.is_null(row) {
                    let row_bounds: Vec<f64> = bounds
                        .value(row)
                        .as_primitive::<Float64Type>()
                        .values()
                        .to_vec();
                    let row_counts: Vec<u64> = bucket_counts
                        .value(row)
                        .as_primitive::<UInt64Type>()
                        .values()
                        .to_vec();
                    if cell.bounds.is_empty() {
                        cell.bounds = row_bounds;
                        cell.buckets = vec![0; row_counts.len()];
                    }
                    // Points with other bounds cannot be merged bucket by bucket; they count in the mean only.
                    if cell.bounds.len() + 1 == row_counts.len()
                        && cell.buckets.len() == row_counts.len()
                    {
                        for (total, add) in cell.buckets.iter_mut().zip(row_counts) {
                            *total += add;
                        }
                    }
                }
            }
        }
        let step_seconds = step_ns as f64 / 1e9;
        let mut series: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
        for ((service, bucket), cell) in cells {
            let time = start_ns + bucket * step_ns;
            let mut push = |label: String, value: Option<f64>| {
                if let Some(value) = value.filter(|v| v.is_finite()) {
                    series.entry(label).or_default().push((time, value));
                }
            };
            match (chart.metric_type.as_str(), chart.temporality.as_str()) {
                ("histogram", _) => {
                    for (q, name) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
                        push(
                            format!("{service} {name}"),
                            histogram_quantile(q, &cell.bounds, &cell.buckets),
                        );
                    }
                }
                ("exponential_histogram" | "summary", _) => {
                    push(
                        format!("{service} mean"),
                        (cell.count > 0).then(|| cell.sum / cell.count as f64),
                    );
                }
                ("sum", "delta") => push(
                    format!("{service} per second"),
                    Some(cell.values / step_seconds),
                ),
                _ => push(service, Some(cell.values / cell.points.max(1) as f64)),
            }
        }
        chart.series = series
            .into_iter()
            .map(|(label, points)| MetricSeries { label, points })
            .collect();
        Ok(chart)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        // 10 values ≤ 10, 10 in (10, 20], none above.
        let bounds = [10.0, 20.0];
        let counts = [10, 10, 0];
        assert_eq!(histogram_quantile(0.5, &bounds, &counts), Some(10.0));
        assert_eq!(histogram_quantile(0.75, &bounds, &counts), Some(15.0));
        assert_eq!(histogram_quantile(0.25, &bounds, &counts), Some(5.0));
        assert_eq!(histogram_quantile(0.5, &bounds, &[0, 0, 0]), None);
        // Everything in the open last bucket: its lower bound.
        assert_eq!(histogram_quantile(0.99, &bounds, &[0, 0, 4]), Some(20.0));
    }
}
