//! `/api/insights` on a small hand-made set of traces, one group per view,
//! with the exact figures each view must report.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as V};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{Value, json};

use crate::support::{TestResult, Weft};

pub const MS: i64 = 1_000_000;
pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

fn attribute(key: &str, value: &str) -> KeyValue {
    let value = match value.parse::<i64>() {
        Ok(n) => V::IntValue(n),
        Err(_) => V::StringValue(value.into()),
    };
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

/// Spans of one resource, built one by one.
pub struct Service {
    resource: Vec<KeyValue>,
    spans: Vec<Span>,
}

/// Ids: trace `t` is 16 bytes of `t`'s two bytes; span `(t, n)` adds `n`.
pub fn trace_bytes(t: u16) -> Vec<u8> {
    t.to_be_bytes().repeat(8)
}

pub fn span_bytes(t: u16, n: u16) -> Vec<u8> {
    [t.to_be_bytes(), n.to_be_bytes()].concat().repeat(2)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub struct SpanSpec<'a> {
    trace: u16,
    id: u16,
    parent: Option<u16>,
    kind: i32,
    name: &'a str,
    start_ms: i64,
    end_ms: i64,
    error: bool,
    attributes: &'a [(&'a str, &'a str)],
}

impl Service {
    pub fn new(name: &str, resource: &[(&str, &str)]) -> Self {
        let mut attributes = vec![attribute("service.name", name)];
        attributes.extend(resource.iter().map(|(k, v)| attribute(k, v)));
        Self {
            resource: attributes,
            spans: Vec::new(),
        }
    }

    pub fn add(&mut self, base: i64, spec: SpanSpec<'_>) -> &mut Span {
        let at = |ms: i64| (base + ms * MS) as u64;
        self.spans.push(Span {
            trace_id: trace_bytes(spec.trace),
            span_id: span_bytes(spec.trace, spec.id),
            parent_span_id: spec
                .parent
                .map(|p| span_bytes(spec.trace, p))
                .unwrap_or_default(),
            name: spec.name.into(),
            kind: spec.kind,
            start_time_unix_nano: at(spec.start_ms),
            end_time_unix_nano: at(spec.end_ms),
            attributes: spec
                .attributes
                .iter()
                .map(|(k, v)| attribute(k, v))
                .collect(),
            status: spec.error.then(|| Status {
                code: 2,
                message: "failed".into(),
            }),
            ..Default::default()
        });
        let last = self.spans.len() - 1;
        &mut self.spans[last]
    }

    pub fn into_resource_spans(self) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: self.resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: self.spans,
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

pub fn spec<'a>(
    trace: u16,
    id: u16,
    parent: Option<u16>,
    kind: i32,
    name: &'a str,
    (start_ms, end_ms): (i64, i64),
    attributes: &'a [(&'a str, &'a str)],
) -> SpanSpec<'a> {
    SpanSpec {
        trace,
        id,
        parent,
        kind,
        name,
        start_ms,
        end_ms,
        error: false,
        attributes,
    }
}

pub fn failing(mut spec: SpanSpec<'_>) -> SpanSpec<'_> {
    spec.error = true;
    spec
}

const GET_ITEM: &[(&str, &str)] = &[
    ("http.request.method", "GET"),
    ("url.template", "/items/{id}"),
    ("url.full", "http://stock/items/7"),
    ("peer.service", "stock"),
    ("http.response.body.size", "2000"),
];
const POST_ORDER: &[(&str, &str)] = &[
    ("http.request.method", "POST"),
    ("url.template", "/orders"),
    ("url.full", "http://stock/orders"),
    ("peer.service", "stock"),
    ("http.request.body.size", "100"),
];
const POST_ORDER_RETRY: &[(&str, &str)] = &[
    ("http.request.method", "POST"),
    ("url.template", "/orders"),
    ("url.full", "http://stock/orders"),
    ("peer.service", "stock"),
    ("http.request.body.size", "100"),
    ("http.request.resend_count", "1"),
];
const GET_ITEM_RETRY: &[(&str, &str)] = &[
    ("http.request.method", "GET"),
    ("url.template", "/items/{id}"),
    ("url.full", "http://stock/items/7"),
    ("peer.service", "stock"),
    ("http.response.body.size", "2000"),
    ("http.request.resend_count", "1"),
];
const CHARGE: &[(&str, &str)] = &[
    ("http.request.method", "POST"),
    ("url.full", "https://payments/charge"),
    ("peer.service", "payments"),
    ("error.type", "circuit_open"),
];

fn breaker_event(base: i64, at_ms: i64, state: &str, previous: &str) -> Event {
    Event {
        time_unix_nano: (base + at_ms * MS) as u64,
        name: "circuit_breaker.state_change".into(),
        attributes: vec![
            attribute("circuit_breaker.name", "payments"),
            attribute("circuit_breaker.state", state),
            attribute("circuit_breaker.previous_state", previous),
        ],
        dropped_attributes_count: 0,
    }
}

/// The known set; each group's expected figures are asserted below.
fn known_traces(base: i64) -> ExportTraceServiceRequest {
    let mut shop = Service::new("shop", &[]);
    let mut stock = Service::new("stock", &[]);
    let mut payments = Service::new("payments", &[]);

    // Trace 1, retries: GET fails (stock answers 503), its retry (resend_count 1)
    // succeeds; POST fails, its retry has resend_count 1 and no idempotency key.
    shop.add(
        base,
        spec(1, 1, None, SERVER, "GET /checkout", (0, 100), &[]),
    );
    shop.add(
        base,
        failing(spec(1, 2, Some(1), CLIENT, "GET", (1, 10), GET_ITEM)),
    );
    stock.add(
        base,
        failing(spec(
            1,
            3,
            Some(2),
            SERVER,
            "GET /items/{id}",
            (2, 9),
            &[("http.route", "/items/{id}")],
        )),
    );
    shop.add(
        base,
        spec(1, 4, Some(1), CLIENT, "GET", (20, 30), GET_ITEM_RETRY),
    );
    stock.add(
        base,
        spec(
            1,
            5,
            Some(4),
            SERVER,
            "GET /items/{id}",
            (21, 29),
            &[("http.route", "/items/{id}")],
        ),
    );
    shop.add(
        base,
        failing(spec(1, 6, Some(1), CLIENT, "POST", (40, 50), POST_ORDER)),
    );
    stock.add(
        base,
        failing(spec(1, 7, Some(6), SERVER, "POST /orders", (41, 49), &[])),
    );
    shop.add(
        base,
        spec(1, 8, Some(1), CLIENT, "POST", (60, 70), POST_ORDER_RETRY),
    );
    stock.add(
        base,
        spec(1, 9, Some(8), SERVER, "POST /orders", (61, 69), &[]),
    );
    // Trace 2: the same GET twice without resend_count, the first failed: a retry.
    shop.add(
        base,
        spec(2, 1, None, SERVER, "GET /checkout", (0, 100), &[]),
    );
    shop.add(
        base,
        failing(spec(2, 2, Some(1), CLIENT, "GET", (1, 10), GET_ITEM)),
    );
    stock.add(
        base,
        failing(spec(2, 3, Some(2), SERVER, "GET /items/{id}", (2, 9), &[])),
    );
    shop.add(base, spec(2, 4, Some(1), CLIENT, "GET", (20, 30), GET_ITEM));
    stock.add(
        base,
        spec(2, 5, Some(4), SERVER, "GET /items/{id}", (21, 29), &[]),
    );

    // Trace 3, a breaker: it opens on a failed call at 100 ms, a second call
    // fails fast while open, and it closes at 1100 ms on a call that got through.
    shop.add(base, spec(3, 1, None, SERVER, "POST /pay", (0, 1200), &[]));
    shop.add(
        base,
        failing(spec(3, 2, Some(1), CLIENT, "POST", (100, 101), CHARGE)),
    )
    .events
    .push(breaker_event(base, 101, "open", "closed"));
    shop.add(
        base,
        failing(spec(3, 3, Some(1), CLIENT, "POST", (500, 500), CHARGE)),
    );
    shop.add(
        base,
        spec(3, 4, Some(1), CLIENT, "POST", (1090, 1110), &CHARGE[..3]),
    )
    .events
    .push(breaker_event(base, 1100, "closed", "half_open"));
    payments.add(
        base,
        spec(3, 5, Some(4), SERVER, "POST /charge", (1091, 1109), &[]),
    );

    // Traces 10–69: pricing runs three instances; pricing-3 is five times slower.
    let mut pricing = [1, 2, 3].map(|n| {
        Service::new(
            "pricing",
            &[("service.instance.id", &format!("pricing-{n}"))],
        )
    });
    for i in 0..60u16 {
        let instance = usize::from(i % 3);
        let duration = if instance == 2 { 50 } else { 10 };
        pricing[instance].add(
            base,
            spec(
                10 + i,
                1,
                None,
                SERVER,
                "GET /price",
                (i as i64, i as i64 + duration),
                &[],
            ),
        );
    }
    // Traces 100–159: catalog 1.0 (40 requests, no error) and 2.0 (20, 5 failing).
    let mut catalog_v1 = Service::new("catalog", &[("service.version", "1.0")]);
    let mut catalog_v2 = Service::new("catalog", &[("service.version", "2.0")]);
    for i in 0..60u16 {
        let span = spec(
            100 + i,
            1,
            None,
            SERVER,
            "GET /catalog",
            (i as i64, i as i64 + 10),
            &[],
        );
        if i < 40 {
            catalog_v1.add(base, span);
        } else if i < 45 {
            catalog_v2.add(base, failing(span));
        } else {
            catalog_v2.add(base, span);
        }
    }
    // Traces 200–239: search 1.0 and 1.1, 10 ms against 11 ms: no difference.
    let mut search_v1 = Service::new("search", &[("service.version", "1.0")]);
    let mut search_v2 = Service::new("search", &[("service.version", "1.1")]);
    for i in 0..40u16 {
        let (service, duration) = if i < 20 {
            (&mut search_v1, 10)
        } else {
            (&mut search_v2, 11)
        };
        service.add(
            base,
            spec(
                200 + i,
                1,
                None,
                SERVER,
                "GET /search",
                (i as i64, i as i64 + duration),
                &[],
            ),
        );
    }

    // Trace 4: orders publishes at 0–10 ms; mailer consumes it as a child at 40 ms
    // (lag 30 ms); trace 5: audit consumes it in a trace of its own, linked, at 110 ms.
    let mut orders = Service::new("orders", &[]);
    let mut mailer = Service::new("mailer", &[]);
    let mut audit = Service::new("audit", &[]);
    let messaging = &[
        ("messaging.system", "kafka"),
        ("messaging.destination.name", "order-events"),
    ];
    orders.add(
        base,
        spec(
            4,
            1,
            None,
            PRODUCER,
            "send order-events",
            (0, 10),
            messaging,
        ),
    );
    mailer.add(
        base,
        spec(
            4,
            2,
            Some(1),
            CONSUMER,
            "process order-events",
            (40, 45),
            messaging,
        ),
    );
    audit
        .add(
            base,
            spec(
                5,
                1,
                None,
                CONSUMER,
                "process order-events",
                (110, 120),
                messaging,
            ),
        )
        .links
        .push(Link {
            trace_id: trace_bytes(4),
            span_id: span_bytes(4, 1),
            ..Default::default()
        });

    // Traces 6–8: the saga "book". 6 committed; 7 failed at pay and was undone
    // (compensation spans from 45 to 72 ms: 27 ms); 8 failed at pay after
    // reserve succeeded and nothing was undone: half-done.
    let mut saga = Service::new("saga", &[]);
    let step = |name: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![("transaction.step", name), ("peer.service", "bank")]
    };
    let (reserve, pay) = (step("reserve"), step("pay"));
    let undo = [
        ("transaction.compensation", "true"),
        ("transaction.compensates", "reserve"),
        ("peer.service", "bank"),
    ];
    let group = [("transaction.compensation", "true")];
    for (trace, outcome) in [(6u16, "committed"), (7, "compensated"), (8, "failed")] {
        let mut root: Vec<(&str, &str)> = vec![
            ("transaction.name", "book"),
            ("transaction.outcome", outcome),
        ];
        if trace != 6 {
            root.push(("transaction.failed_step", "pay"));
        }
        saga.add(
            base,
            failing_if(
                trace != 6,
                spec(trace, 1, None, SERVER, "POST /book", (0, 100), &root),
            ),
        );
        saga.add(
            base,
            spec(trace, 2, Some(1), CLIENT, "reserve", (1, 10), &reserve),
        );
        saga.add(
            base,
            failing_if(
                trace != 6,
                spec(trace, 3, Some(1), CLIENT, "pay", (20, 40), &pay),
            ),
        );
        if trace == 7 {
            saga.add(
                base,
                spec(trace, 4, Some(1), 1, "compensate book", (45, 72), &group),
            );
            saga.add(
                base,
                spec(trace, 5, Some(4), CLIENT, "undo-reserve", (50, 70), &undo),
            );
        }
    }

    let mut services = vec![shop, stock, payments, orders, mailer, audit, saga];
    services.extend(pricing);
    services.extend([catalog_v1, catalog_v2, search_v1, search_v2]);
    ExportTraceServiceRequest {
        resource_spans: services
            .into_iter()
            .map(Service::into_resource_spans)
            .collect(),
    }
}

/// Nanoseconds since the epoch, `seconds` ago: the base of a known trace set.
pub fn ago_ns(seconds: i64) -> TestResult<i64> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    Ok(now.as_nanos() as i64 - seconds * 1_000 * MS)
}

/// Sends `request` over OTLP/gRPC and waits until all its spans are queryable.
pub async fn export_and_wait(weft: &Weft, request: ExportTraceServiceRequest) -> TestResult {
    let spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    TraceServiceClient::connect(weft.grpc_endpoint())
        .await?
        .max_encoding_message_size(64 << 20)
        .export(request)
        .await?;
    weft.wait_for_count("SELECT count(*) FROM spans", spans as i64)
        .await?;
    Ok(())
}

fn failing_if(condition: bool, spec: SpanSpec<'_>) -> SpanSpec<'_> {
    if condition { failing(spec) } else { spec }
}

/// The entry of `list` whose `key` fields have these values.
fn entry<'a>(list: &'a Value, key: &[(&str, &str)]) -> TestResult<&'a Value> {
    list.as_array()
        .and_then(|items| {
            items
                .iter()
                .find(|item| key.iter().all(|(k, v)| item[*k] == *v))
        })
        .ok_or_else(|| format!("no entry {key:?} in {list:#}").into())
}

fn trace(n: u16) -> String {
    hex(&trace_bytes(n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_reports_the_known_figures() -> TestResult {
    let dir = tempfile::tempdir()?;
    let weft = Weft::start(dir.path(), &["--flush-interval-ms", "100"])?;
    let base = ago_ns(600)?;
    export_and_wait(&weft, known_traces(base)).await?;
    let (start_us, end_us) = ((base / 1000) - 60_000_000, (base / 1000) + 60_000_000);
    let response = weft
        .client()
        .get(weft.http_url(&format!("/api/insights?start={start_us}&end={end_us}")))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let insights: Value = response.json().await?;
    for view in [
        "retries",
        "breakers",
        "instances",
        "versions",
        "async",
        "transactions",
        "encryption",
        "edges",
    ] {
        assert!(insights[view].is_array(), "{view} missing: {insights:#}");
    }

    // Retries: GET /items/{id} — 4 attempts, 2 retries (one by resend_count,
    // one a sibling after a failure); POST /orders — one retry without a key.
    let get = entry(
        &insights["retries"],
        &[("from", "shop"), ("to", "stock"), ("route", "/items/{id}")],
    )?;
    assert_eq!(
        (
            get["attempts"].clone(),
            get["retries"].clone(),
            get["retried_calls"].clone()
        ),
        (json!(4), json!(2), json!(2))
    );
    assert_eq!(
        (get["retry_share"].clone(), get["extra_load"].clone()),
        (json!(0.5), json!(1.0))
    );
    assert_eq!(get["non_idempotent_retries"], 0);
    assert_eq!(get["storm"], false);
    let post = entry(
        &insights["retries"],
        &[("from", "shop"), ("to", "stock"), ("route", "/orders")],
    )?;
    assert_eq!(
        (post["attempts"].clone(), post["retries"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(
        post["non_idempotent_retries"], 1,
        "POST retried without an idempotency key"
    );
    assert_eq!(post["method"], "POST");
    assert!(
        post["example_traces"]
            .as_array()
            .is_some_and(|t| t.contains(&json!(trace(1))))
    );

    // Breakers: shop → payments, two fast failures, open from 101 to 1100 ms.
    let breaker = entry(
        &insights["breakers"],
        &[("from", "shop"), ("to", "payments")],
    )?;
    assert_eq!(
        (
            breaker["calls"].clone(),
            breaker["errors"].clone(),
            breaker["fast_failures"].clone()
        ),
        (json!(3), json!(2), json!(2))
    );
    assert_eq!(breaker["open_ns"], 999 * MS);
    let states: Vec<&str> = breaker["state_changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["state"].as_str())
        .collect();
    assert_eq!(states, ["open", "closed"]);
    assert_eq!(breaker["example_traces"][0], trace(3));
    assert!(
        insights["breakers"]
            .as_array()
            .is_some_and(|b| b.len() == 1),
        "only the breaker edge fails fast"
    );

    // Load balancing: pricing-3 is the outlier; the load is even.
    let pricing = entry(&insights["instances"], &[("service", "pricing")])?;
    assert_eq!(pricing["outlier"], "pricing-3");
    assert_eq!(pricing["imbalance"], 1.0);
    let slow = entry(&pricing["instances"], &[("instance", "pricing-3")])?;
    assert_eq!(
        (slow["requests"].clone(), slow["p95_ns"].clone()),
        (json!(20), json!(50.0 * 1e6))
    );

    // Versions: catalog 2.0 errs 25 % against 0 %: a regression; search 1.1 is not.
    let catalog = entry(&insights["versions"], &[("service", "catalog")])?;
    assert_eq!(
        (
            catalog["verdict"].clone(),
            catalog["regression"].clone(),
            catalog["baseline"].clone()
        ),
        (json!("regression"), json!("2.0"), json!("1.0"))
    );
    assert!(
        catalog["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("errors 25.0% against 0.0%")),
        "{}",
        catalog["evidence"]
    );
    let v2 = entry(&catalog["versions"], &[("version", "2.0")])?;
    assert_eq!(
        (v2["requests"].clone(), v2["errors"].clone()),
        (json!(20), json!(5))
    );
    let bars: u64 = v2["histogram"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["count"].as_u64())
        .sum();
    assert_eq!(bars, 20, "the histogram holds every request");
    let search = entry(&insights["versions"], &[("service", "search")])?;
    assert_eq!(
        (search["verdict"].clone(), search["regression"].clone()),
        (json!("no difference"), Value::Null)
    );

    // Messaging: lag 30 ms to mailer (a child), 100 ms to audit (a link).
    let mailer = entry(&insights["async"], &[("from", "orders"), ("to", "mailer")])?;
    assert_eq!(
        (
            mailer["messages"].clone(),
            mailer["lag_p50_ns"].clone(),
            mailer["destination"].clone()
        ),
        (json!(1), json!(30.0 * 1e6), json!("order-events"))
    );
    let audit = entry(&insights["async"], &[("from", "orders"), ("to", "audit")])?;
    assert_eq!(audit["lag_p95_ns"], 100.0 * 1e6);
    assert_eq!(audit["falling_behind"], false);
    let edge = entry(&insights["edges"], &[("from", "orders"), ("to", "audit")])?;
    assert_eq!(
        (edge["protocols"].clone(), edge["synchronous"].clone()),
        (json!({"messaging": 1}), json!(false))
    );

    // Transactions: one of each outcome; 7 compensated in 27 ms; 8 half-done.
    let book = entry(
        &insights["transactions"],
        &[("service", "saga"), ("name", "book")],
    )?;
    assert_eq!(book["total"], 3);
    assert_eq!(
        book["outcomes"],
        json!({"committed": 1, "compensated": 1, "failed": 1})
    );
    assert_eq!(book["failed_steps"], json!({"pay": 2}));
    assert_eq!(
        (
            book["compensated"].clone(),
            book["compensation_p50_ns"].clone()
        ),
        (json!(1), json!(27.0 * 1e6))
    );
    assert_eq!(
        (book["half_done"].clone(), book["half_done_traces"].clone()),
        (json!(1), json!([trace(8)]))
    );
    assert_eq!(book["compensated_traces"], json!([trace(7)]));

    // Encryption: stock is called over http://, payments over https://.
    let plain = entry(
        &insights["encryption"],
        &[("from", "shop"), ("to", "stock")],
    )?;
    assert_eq!(
        (
            plain["plain"].clone(),
            plain["tls"].clone(),
            plain["plain_text"].clone()
        ),
        (json!(6), json!(0), json!(true))
    );
    let tls = entry(
        &insights["encryption"],
        &[("from", "shop"), ("to", "payments")],
    )?;
    assert_eq!(
        (
            tls["tls"].clone(),
            tls["tls_share"].clone(),
            tls["plain_text"].clone()
        ),
        (json!(3), json!(1.0), json!(false))
    );
    let bank = entry(&insights["encryption"], &[("from", "saga"), ("to", "bank")])?;
    assert_eq!(
        (bank["unknown"].clone(), bank["tls_share"].clone()),
        (json!(7), Value::Null)
    );

    // Traffic per edge: shop → stock, 6 calls, 3 failed, body sizes averaged.
    let stock = entry(&insights["edges"], &[("from", "shop"), ("to", "stock")])?;
    assert_eq!(
        (
            stock["requests"].clone(),
            stock["errors"].clone(),
            stock["success_rate"].clone()
        ),
        (json!(6), json!(3), json!(0.5))
    );
    assert_eq!(
        (
            stock["request_bytes_avg"].clone(),
            stock["response_bytes_avg"].clone()
        ),
        (json!(100.0), json!(2000.0))
    );
    assert_eq!(stock["protocols"], json!({"http": 6}));

    // One service: only what it touches.
    let narrowed: Value = weft
        .client()
        .get(weft.http_url(&format!(
            "/api/insights?service=pricing&start={start_us}&end={end_us}"
        )))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(narrowed["instances"].as_array().map(Vec::len), Some(1));
    assert_eq!(narrowed["retries"], json!([]));
    assert_eq!(narrowed["versions"], json!([]));

    // The page shows the same verdicts, with links to the traces.
    let page = weft
        .client()
        .get(weft.http_url(&format!("/insights?start={start_us}&end={end_us}")))
        .send()
        .await?;
    assert_eq!(page.status(), 200);
    let html = page.text().await?;
    for needle in [
        "outlier: pricing-3",
        "/items/{id}",
        "plain text",
        "regression",
        &format!("/traces/{}", trace(8)),
    ] {
        assert!(html.contains(needle), "/insights lacks {needle:?}");
    }
    Ok(())
}
