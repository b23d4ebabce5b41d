//! Query-string values shared by the Jaeger API and Weft's own endpoints:
//! Go-style durations (`1.5s`, `15m`) and time ranges in Jaeger's convention
//! (`start`/`end` in microseconds since the epoch, or a `lookback` before `end`).

use std::time::{SystemTime, UNIX_EPOCH};

/// A Go duration (`1.5s`, `100ms`, `500us`, `500µs`, `10ns`, `2m`, `1h30m`) in nanoseconds.
pub fn parse_go_duration(text: &str) -> Option<i64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86_400e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Some(total as i64)
}

/// A step that gives about 60 buckets, rounded to a length people read easily.
pub fn readable_step_ns(start_ns: i64, end_ns: i64) -> i64 {
    readable_step_for(start_ns, end_ns, 60)
}

/// A step that gives about `buckets` buckets, rounded to a length people read easily.
pub fn readable_step_for(start_ns: i64, end_ns: i64, buckets: i64) -> i64 {
    const STEPS_S: [i64; 15] = [
        1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 10_800, 21_600, 43_200, 86_400,
    ];
    let wanted = (end_ns - start_ns) / buckets.max(1);
    STEPS_S
        .iter()
        .map(|s| s * 1_000_000_000)
        .find(|&step| step >= wanted)
        .unwrap_or(86_400_000_000_000)
}

pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn parse_micros(name: &str, value: &str) -> Result<i64, String> {
    value.parse().map_err(|_| {
        format!("parameter '{name}' must be microseconds since the epoch, got {value:?}")
    })
}

/// Resolves `start`, `end` (µs since the epoch) and `lookback` (a Go duration,
/// default `default_lookback_ns`) to `[start_ns, end_ns]`. `end` defaults to now,
/// `start` to `end - lookback`; `lookback=custom` (Jaeger UI) means "use start".
pub fn time_range(
    start: Option<&str>,
    end: Option<&str>,
    lookback: Option<&str>,
    default_lookback_ns: i64,
) -> Result<(i64, i64), String> {
    let end_us = match present(end) {
        Some(end) => parse_micros("end", end)?,
        None => now_micros(),
    };
    let lookback_ns = match present(lookback).filter(|v| *v != "custom") {
        Some(text) => parse_go_duration(text).ok_or_else(|| {
            format!("parameter 'lookback' is not a duration like 15m, 1h or 2d: {text:?}")
        })?,
        None => default_lookback_ns,
    };
    let start_us = match present(start) {
        Some(start) => parse_micros("start", start)?,
        None => end_us - lookback_ns / 1000,
    };
    if start_us > end_us {
        return Err(format!(
            "the time range is empty: start {start_us} is after end {end_us}"
        ));
    }
    Ok((start_us.saturating_mul(1000), end_us.saturating_mul(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_go() {
        assert_eq!(parse_go_duration("1.2s"), Some(1_200_000_000));
        assert_eq!(parse_go_duration("100ms"), Some(100_000_000));
        assert_eq!(parse_go_duration("500us"), Some(500_000));
        assert_eq!(parse_go_duration("500µs"), Some(500_000));
        assert_eq!(parse_go_duration("7ns"), Some(7));
        assert_eq!(parse_go_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration("2d"), Some(172_800_000_000_000));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("fast"), None);
    }

    #[test]
    fn time_ranges_default_to_a_lookback_before_now() {
        assert_eq!(
            time_range(Some("1000"), Some("5000"), None, 1),
            Ok((1_000_000, 5_000_000))
        );
        assert_eq!(
            time_range(None, Some("5000"), Some("2ms"), 1),
            Ok((3_000_000, 5_000_000))
        );
        assert_eq!(
            time_range(Some("1000"), Some("5000"), Some("custom"), 1),
            Ok((1_000_000, 5_000_000))
        );
        assert!(time_range(Some("6000"), Some("5000"), None, 1).is_err());
        assert!(
            time_range(Some("yesterday"), None, None, 1)
                .is_err_and(|error| error.contains("'start'"))
        );
    }
}
