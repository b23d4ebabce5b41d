//! Where files live inside the store. Paths are relative to the store root
//! (the data directory, or an object store prefix).
//!
//! ```text
//! spans/2026-11-22/04/f000000000042-0001.parquet    written by a flush of WAL segment 42
//! spans/2026-11-22/04/c20261122T051500Z-7f3a.parquet  written by compaction
//! metrics/2026-11-22/04/…
//! ```
//! One directory per UTC hour, so that a time range lists only its own hours and
//! retention deletes whole hours.

use chrono::{DateTime, Utc};

pub const SPANS_DIR: &str = "spans";
pub const METRICS_DIR: &str = "metrics";
pub const PARQUET_SUFFIX: &str = ".parquet";
const FLUSH_PREFIX: char = 'f';
const COMPACTED_PREFIX: char = 'c';

/// The hour directory of a table that holds rows whose time is `time_ns`.
pub fn hour_dir(table_dir: &str, time_ns: i64) -> String {
    let time = DateTime::<Utc>::from_timestamp_nanos(time_ns);
    format!("{table_dir}/{}", time.format("%Y-%m-%d/%H"))
}

/// Parses `spans/2026-11-22/04` (or a file below it) back to the hour's start.
pub fn hour_of_path(path: &str) -> Option<DateTime<Utc>> {
    let mut parts = path.split('/');
    let _table = parts.next()?;
    let day = parts.next()?;
    let hour = parts.next()?;
    let text = format!("{day}T{hour}:00:00Z");
    DateTime::parse_from_rfc3339(&text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The name of a file written when WAL segment `segment` was flushed.
pub fn flush_file_name(segment: u64, part: usize) -> String {
    format!("{FLUSH_PREFIX}{segment:013}-{part:04}{PARQUET_SUFFIX}")
}

/// The WAL segment a flushed file came from; `None` for compacted files.
pub fn flush_segment_of(file_name: &str) -> Option<u64> {
    let rest = file_name.strip_prefix(FLUSH_PREFIX)?;
    rest.split('-').next()?.parse().ok()
}

pub fn compacted_file_name(now: DateTime<Utc>, unique: u32) -> String {
    format!(
        "{COMPACTED_PREFIX}{}-{unique:08x}{PARQUET_SUFFIX}",
        now.format("%Y%m%dT%H%M%S%.3fZ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_dirs_are_utc_hours() {
        // 2026-11-22T04:59:59.999999999Z
        let ns = 1_795_323_599_999_999_999;
        assert_eq!(hour_dir(SPANS_DIR, ns), "spans/2026-11-22/04");
        assert_eq!(hour_dir(METRICS_DIR, ns + 1), "metrics/2026-11-22/05");
    }

    #[test]
    fn hour_of_path_reads_back_the_directory() {
        let hour =
            hour_of_path("spans/2026-11-22/04/f0000000000001-0000.parquet").map(|t| t.to_rfc3339());
        assert_eq!(hour.as_deref(), Some("2026-11-22T04:00:00+00:00"));
        assert_eq!(hour_of_path("spans/garbage"), None);
    }

    #[test]
    fn flush_file_names_carry_their_segment() {
        let name = flush_file_name(42, 1);
        assert_eq!(name, "f0000000000042-0001.parquet");
        assert_eq!(flush_segment_of(&name), Some(42));
        let compacted = compacted_file_name(DateTime::<Utc>::from_timestamp_nanos(0), 0xabc);
        assert_eq!(compacted, "c19700101T000000.000Z-00000abc.parquet");
        assert_eq!(flush_segment_of(&compacted), None);
    }
}
