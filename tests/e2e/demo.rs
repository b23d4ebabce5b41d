//! `weft serve --demo`: the Drone Delivery sample runs inside Weft, exports
//! over OTLP/gRPC to Weft's own listener, and every pattern it exercises is
//! visible through Weft's query API.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{TestResult, Weft};

const SERVICES: [&str; 6] = [
    "accounts",
    "delivery",
    "delivery-history",
    "delivery-scheduler",
    "drone-management",
    "package",
];

/// A named check of the stored spans: a query and whether its count is enough.
struct Pattern {
    name: &'static str,
    sql: &'static str,
    holds: fn(i64) -> bool,
}

const PATTERNS: &[Pattern] = &[
    Pattern {
        name: "gRPC calls carry the trace context in metadata (package's server span is the client span's child)",
        sql: "SELECT count(*) FROM spans c JOIN spans s ON s.trace_id = c.trace_id AND s.parent_span_id = c.span_id \
              WHERE c.kind = 'CLIENT' AND c.rpc_system = 'grpc' AND c.rpc_method = 'GetPackage' \
              AND s.kind = 'SERVER' AND s.rpc_system = 'grpc' AND s.service_name = 'package' \
              AND s.attributes['rpc.grpc.status_code'] = '0'",
        holds: |n| n > 0,
    },
    Pattern {
        name: "retried calls carry http.request.resend_count",
        sql: "SELECT count(*) FROM spans WHERE kind = 'CLIENT' AND attributes['http.request.resend_count'] IS NOT NULL",
        holds: |n| n > 0,
    },
    Pattern {
        name: "no POST/PATCH is retried without an idempotency key",
        sql: "SELECT count(*) FROM spans WHERE attributes['http.request.resend_count'] IS NOT NULL \
              AND http_request_method IN ('POST', 'PATCH') \
              AND attributes['http.request.header.idempotency-key'] IS NULL",
        holds: |n| n == 0,
    },
    Pattern {
        name: "the breaker opened (state-change event on a client span)",
        sql: "SELECT count(*) FROM (SELECT unnest(events) AS e FROM spans WHERE kind = 'CLIENT') \
              WHERE e['name'] = 'circuit_breaker.state_change' AND e['attributes']['circuit_breaker.state'] = 'open'",
        holds: |n| n > 0,
    },
    Pattern {
        name: "the breaker half-opened again",
        sql: "SELECT count(*) FROM (SELECT unnest(events) AS e FROM spans WHERE kind = 'CLIENT') \
              WHERE e['name'] = 'circuit_breaker.state_change' AND e['attributes']['circuit_breaker.state'] = 'half_open'",
        holds: |n| n > 0,
    },
    Pattern {
        name: "calls failed fast while the breaker was open, with no server span",
        sql: "SELECT count(*) FROM spans c WHERE c.kind = 'CLIENT' AND c.attributes['error.type'] = 'circuit_open' \
              AND c.status_code = 'ERROR' AND c.duration_ns < 5000000 \
              AND NOT EXISTS (SELECT 1 FROM spans s WHERE s.parent_span_id = c.span_id AND s.trace_id = c.trace_id)",
        holds: |n| n > 0,
    },
    Pattern {
        name: "three delivery instances",
        sql: "SELECT count(DISTINCT service_instance_id) FROM spans WHERE service_name = 'delivery'",
        holds: |n| n == 3,
    },
    Pattern {
        name: "two package versions",
        sql: "SELECT count(DISTINCT service_version) FROM spans WHERE service_name = 'package'",
        holds: |n| n == 2,
    },
    Pattern {
        name: "consumer spans that are children of producer spans",
        sql: "SELECT count(*) FROM spans c JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id \
              WHERE c.kind = 'CONSUMER' AND p.kind = 'PRODUCER' AND c.messaging_system = 'inmemory'",
        holds: |n| n > 0,
    },
    Pattern {
        name: "consumer spans that start a new trace linked to the producer",
        sql: "SELECT count(*) FROM spans WHERE kind = 'CONSUMER' AND parent_span_id IS NULL AND cardinality(links) > 0",
        holds: |n| n > 0,
    },
    Pattern {
        name: "compensated transactions",
        sql: "SELECT count(*) FROM spans WHERE service_name = 'delivery-scheduler' AND kind = 'SERVER' \
              AND attributes['transaction.outcome'] = 'compensated'",
        holds: |n| n > 0,
    },
    Pattern {
        name: "compensating calls name the step they undo",
        sql: "SELECT count(*) FROM spans WHERE kind = 'CLIENT' AND attributes['transaction.compensation'] = 'true' \
              AND attributes['transaction.compensates'] IN ('charge-account', 'create-package', 'create-delivery')",
        holds: |n| n > 0,
    },
    Pattern {
        name: "committed transactions",
        sql: "SELECT count(*) FROM spans WHERE attributes['transaction.outcome'] = 'committed'",
        holds: |n| n > 0,
    },
];

/// Edges the service map must show: (from, to, kind).
const EDGES: &[(&str, &str, &str)] = &[
    ("delivery-scheduler", "accounts", "call"),
    ("delivery-scheduler", "package", "call"),
    ("delivery-scheduler", "delivery", "call"),
    ("delivery-scheduler", "drone-management", "call"),
    ("drone-management", "delivery", "call"),
    ("drone-management", "delivery-history", "link"),
    ("delivery", "delivery-history", "link"),
    ("delivery-history", "history-db", "peer"),
];

async fn missing_patterns(weft: &Weft) -> TestResult<Vec<String>> {
    let mut missing = Vec::new();
    let services: Value = weft
        .client()
        .get(weft.http_url("/api/services"))
        .send()
        .await?
        .json()
        .await?;
    let found: BTreeSet<&str> = services["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if found != SERVICES.into_iter().collect() {
        missing.push(format!("services: {found:?}"));
    }
    for pattern in PATTERNS {
        let count = weft.sql_count(pattern.sql).await?;
        if !(pattern.holds)(count) {
            missing.push(format!("{} (counted {count})", pattern.name));
        }
    }
    let map: Value = weft
        .client()
        .get(weft.http_url("/api/service-map?lookback=1h"))
        .send()
        .await?
        .json()
        .await?;
    let edges: BTreeSet<(String, String, String)> = map["data"]["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["from"].as_str().unwrap_or("").to_owned(),
                e["to"].as_str().unwrap_or("").to_owned(),
                e["kind"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for (from, to, kind) in EDGES {
        if !edges.contains(&((*from).to_owned(), (*to).to_owned(), (*kind).to_owned())) {
            missing.push(format!("edge {from} -> {to} ({kind})"));
        }
    }
    Ok(missing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_every_pattern_within_30_seconds() -> TestResult {
    let dir = tempfile::tempdir()?;
    let weft = Weft::start(
        dir.path(),
        &["--demo", "--demo-rate", "20", "--flush-interval-ms", "500"],
    )?;
    let started = Instant::now();
    // The issue promises every pattern within 30 s at the default settings;
    // the extra time covers a loaded CI machine.
    let deadline = started + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let missing = missing_patterns(&weft).await?;
        if missing.is_empty() {
            eprintln!(
                "every pattern visible after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "after {:.0} s still missing: {missing:#?}",
                started.elapsed().as_secs_f64()
            )
            .into());
        }
    }

    // Slow instance and regressed version are visible in the figures, not just present.
    let rows = weft
        .sql(
            "SELECT service_instance_id, approx_median(duration_ns) FROM spans \
             WHERE service_name = 'delivery' AND kind = 'SERVER' GROUP BY 1 ORDER BY 2 DESC",
        )
        .await?;
    assert_eq!(
        rows.first().and_then(|r| r[0].as_str()),
        Some("delivery-3"),
        "delivery-3 is the slow instance: {rows:?}"
    );
    let rows = weft
        .sql(
            "SELECT service_version, approx_median(duration_ns) FROM spans \
             WHERE service_name = 'package' AND kind = 'SERVER' AND name = 'POST /packages' GROUP BY 1 ORDER BY 2 DESC",
        )
        .await?;
    assert_eq!(
        rows.first().and_then(|r| r[0].as_str()),
        Some("2.0.0"),
        "package v2 is slower: {rows:?}"
    );

    // Jaeger's dependencies agree on the synchronous edges.
    let dependencies: Value = weft
        .client()
        .get(weft.http_url("/api/dependencies?lookback=3600000"))
        .send()
        .await?
        .json()
        .await?;
    let pairs: BTreeSet<(String, String)> = dependencies["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["parent"].as_str().unwrap_or("").to_owned(),
                d["child"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for callee in ["accounts", "package", "delivery", "drone-management"] {
        assert!(
            pairs.contains(&("delivery-scheduler".to_owned(), callee.to_owned())),
            "{callee} missing in {pairs:?}"
        );
    }

    insights_name_the_injected_faults(&weft).await
}

/// Each fault the demo injects is reported by the right insight view, naming
/// the right instance, version and edge.
async fn insights_name_the_injected_faults(weft: &Weft) -> TestResult {
    let insights: Value = weft
        .client()
        .get(weft.http_url("/api/insights?lookback=15m"))
        .send()
        .await?
        .json()
        .await?;
    let find = |view: &str, key: &[(&str, &str)]| -> TestResult<Value> {
        insights[view]
            .as_array()
            .and_then(|items| items.iter().find(|i| key.iter().all(|(k, v)| i[*k] == *v)))
            .cloned()
            .ok_or_else(|| format!("{view} has no {key:?}: {:#}", insights[view]).into())
    };
    let delivery = find("instances", &[("service", "delivery")])?;
    assert_eq!(delivery["outlier"], "delivery-3", "{delivery:#}");
    let package = find("versions", &[("service", "package")])?;
    assert_eq!(package["regression"], "2.0.0", "{package:#}");
    assert_eq!(package["verdict"], "regression");
    let breaker = find(
        "breakers",
        &[("from", "delivery-scheduler"), ("to", "drone-management")],
    )?;
    assert!(
        breaker["fast_failures"].as_u64().is_some_and(|n| n > 0),
        "{breaker:#}"
    );
    assert!(
        breaker["state_changes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|e| e["state"] == "open")),
        "{breaker:#}"
    );
    let schedule = find(
        "transactions",
        &[
            ("service", "delivery-scheduler"),
            ("name", "schedule-delivery"),
        ],
    )?;
    assert!(
        schedule["compensated"].as_u64().is_some_and(|n| n > 0),
        "{schedule:#}"
    );
    assert!(
        schedule["failed_steps"]["assign-drone"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{schedule:#}"
    );
    let accounts = insights["retries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["from"] == "delivery-scheduler" && r["to"] == "accounts")
        .collect::<Vec<_>>();
    assert!(
        accounts
            .iter()
            .any(|r| r["retries"].as_u64().is_some_and(|n| n > 0)),
        "accounts' 503s and stalls are retried: {:#}",
        insights["retries"]
    );
    assert!(
        insights["retries"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|r| r["non_idempotent_retries"] == 0),
        "the sample never retries POST/PATCH without a key"
    );
    let events = find(
        "async",
        &[("from", "drone-management"), ("to", "delivery-history")],
    )?;
    assert!(
        events["messages"].as_u64().is_some_and(|n| n > 0),
        "{events:#}"
    );
    let plain = find(
        "encryption",
        &[("from", "delivery-scheduler"), ("to", "accounts")],
    )?;
    assert_eq!(plain["plain_text"], true, "the sample calls over http://");
    Ok(())
}
