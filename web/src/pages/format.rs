//! How numbers and times read on the pages.

use chrono::{DateTime, Utc};

/// `850ns`, `12µs`, `3.4ms`, `1.25s`, `2m05s`: three significant digits at most.
pub fn duration(ns: i64) -> String {
    let abs = ns.unsigned_abs() as f64;
    let sign = if ns < 0 { "-" } else { "" };
    let (value, unit) = match abs {
        a if a < 1e3 => return format!("{sign}{a:.0}ns"),
        a if a < 1e6 => (a / 1e3, "µs"),
        a if a < 1e9 => (a / 1e6, "ms"),
        a if a < 60e9 => (a / 1e9, "s"),
        a => {
            let seconds = (a / 1e9).round() as u64;
            return format!("{sign}{}m{:02}s", seconds / 60, seconds % 60);
        }
    };
    let digits = if value < 10.0 {
        2
    } else if value < 100.0 {
        1
    } else {
        0
    };
    format!("{sign}{value:.digits$}{unit}")
}

fn datetime(ns: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
}

/// `2026-11-25 14:03:07.123 UTC`
pub fn timestamp(ns: i64) -> String {
    datetime(ns)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or_default()
}

/// `14:03:07` (UTC), for chart axes.
pub fn short_time(ns: i64) -> String {
    datetime(ns)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A share as a percentage: `0%`, `0.35%`, `12.5%`.
pub fn percent(share: f64) -> String {
    let value = share * 100.0;
    if value == 0.0 {
        "0%".to_owned()
    } else if value < 1.0 {
        format!("{value:.2}%")
    } else {
        format!("{value:.1}%")
    }
}

/// Requests per second: `0.02/s`, `3.4/s`, `120/s`.
pub fn rate(per_second: f64) -> String {
    if per_second >= 100.0 {
        format!("{per_second:.0}/s")
    } else if per_second >= 1.0 {
        format!("{per_second:.1}/s")
    } else {
        format!("{per_second:.2}/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_an_engineer_writes_them() {
        assert_eq!(duration(850), "850ns");
        assert_eq!(duration(12_345), "12.3µs");
        assert_eq!(duration(3_400_000), "3.40ms");
        assert_eq!(duration(1_250_000_000), "1.25s");
        assert_eq!(duration(125_000_000_000), "2m05s");
        assert_eq!(duration(-5_000_000), "-5.00ms");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(
            timestamp(1_795_132_800_123_000_000),
            "2026-11-20 00:00:00.123 UTC"
        );
        assert_eq!(
            short_time(1_795_132_800_000_000_000 + 3_723_000_000_000),
            "01:02:03"
        );
    }

    #[test]
    fn shares_and_rates() {
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.0035), "0.35%");
        assert_eq!(percent(0.125), "12.5%");
        assert_eq!(rate(0.016), "0.02/s");
        assert_eq!(rate(3.42), "3.4/s");
    }
}
