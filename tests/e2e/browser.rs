//! The web UI in a real browser: headless Chromium loads every page of a
//! Weft fed by the Drone Delivery demo (the OpenTelemetry SDK over OTLP/gRPC),
//! the DOM it built is checked, the links are followed from search to trace to
//! service, and each page is saved as a screenshot.
//!
//! Chromium comes from Debian (`.ci/run` installs it). Without it the test
//! fails, unless `WEFT_SKIP_BROWSER_TESTS=1` says to skip it.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cdp;
use crate::security::{TOKEN, start_secure};
use crate::support::{TestResult, Weft};

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WEFT_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

struct Browser {
    binary: PathBuf,
    screenshots: PathBuf,
    profile: tempfile::TempDir,
}

impl Browser {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ]);
        command.arg(format!("--user-data-dir={}", self.profile.path().display()));
        command
    }

    /// The DOM after the page's scripts ran.
    fn dom(&self, url: &str) -> TestResult<String> {
        let output = self
            .command()
            .args(["--virtual-time-budget=3000", "--dump-dom", url])
            .output()?;
        if !output.status.success() {
            return Err(format!(
                "chromium failed on {url}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    fn screenshot(&self, url: &str, name: &str) -> TestResult<PathBuf> {
        let path = self.screenshots.join(format!("{name}.png"));
        let output = self
            .command()
            .args(["--window-size=1440,1000", "--virtual-time-budget=3000"])
            .arg(format!("--screenshot={}", path.display()))
            .arg(url)
            .output()?;
        if !output.status.success() || !path.exists() {
            return Err(format!(
                "no screenshot of {url}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        Ok(path)
    }
}

/// The first `href="prefix…"` in a DOM, with `&amp;` decoded.
fn first_link(dom: &str, prefix: &str) -> Option<String> {
    let start = dom.find(&format!("href=\"{prefix}"))? + "href=\"".len();
    let end = dom[start..].find('"')? + start;
    Some(dom[start..end].replace("&amp;", "&"))
}

/// The `N spans` figure of a trace page.
fn span_count(page: &str) -> Option<usize> {
    let end = page.find(" spans</span>")?;
    let start = page[..end].rfind("<span>")? + "<span>".len();
    page[start..end].parse().ok()
}

fn assert_contains(dom: &str, page: &str, needles: &[&str]) {
    for needle in needles {
        assert!(dom.contains(needle), "{page} lacks {needle:?}");
    }
}

/// Chromium, or why the test cannot run: `Ok(None)` means skip.
fn chromium_or_skip() -> TestResult<Option<PathBuf>> {
    match chromium() {
        Some(binary) => Ok(Some(binary)),
        None if std::env::var_os("WEFT_SKIP_BROWSER_TESTS").is_some() => {
            eprintln!("skipping: no chromium and WEFT_SKIP_BROWSER_TESTS is set");
            Ok(None)
        }
        None => Err("no chromium: install Debian's chromium (bash .ci/run does) or set WEFT_SKIP_BROWSER_TESTS=1".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_in_a_real_browser() -> TestResult {
    let Some(binary) = chromium_or_skip()? else {
        return Ok(());
    };
    let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&screenshots)?;
    let browser = Browser {
        binary,
        screenshots,
        profile: tempfile::tempdir()?,
    };

    let dir = tempfile::tempdir()?;
    let weft = Weft::start(
        dir.path(),
        &["--demo", "--demo-rate", "20", "--flush-interval-ms", "500"],
    )?;
    // Wait for a compensated transaction: the demo's traffic has then reached every page.
    let deadline = Instant::now() + Duration::from_secs(60);
    let compensated = loop {
        let rows = weft
            .sql(
                "SELECT trace_id FROM spans WHERE attributes['transaction.outcome'] = 'compensated' \
                 AND attributes['transaction.failed_step'] = 'assign-drone' ORDER BY start_time LIMIT 1",
            )
            .await?;
        if let Some(id) = rows.first().and_then(|r| r[0].as_str()) {
            break id.to_owned();
        }
        if Instant::now() > deadline {
            return Err("no compensated transaction within 60 s".into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // Let the compensated trace's last spans (the asynchronous ones) arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let search =
        browser.dom(&weft.http_url("/?service=delivery-scheduler&lookback=15m&limit=50"))?;
    assert_contains(
        &search,
        "search",
        &[
            "Find traces",
            "<svg class=\"chart scatter\"",
            "delivery-scheduler</b>: POST /deliveries",
            "class=\"chip\"",
        ],
    );
    assert!(
        search.contains("class=\"badge-error\""),
        "the search lists failed transactions with their error counts"
    );
    browser.screenshot(
        &weft.http_url("/?service=delivery-scheduler&lookback=15m&limit=50"),
        "search",
    )?;

    let errors_only =
        browser.dom(&weft.http_url("/?service=delivery-scheduler&errors=true&lookback=15m"))?;
    let listed = errors_only.matches("<td><a href=\"/traces/").count();
    assert!(listed > 0, "errors only finds the failed transactions");
    assert_eq!(
        errors_only.matches("class=\"badge-error\"").count(),
        listed,
        "every trace listed has errors"
    );

    // search → trace → service, by the links the pages show.
    let trace_link = first_link(&search, "/traces/").ok_or("the search lists no trace link")?;
    let linked = browser.dom(&weft.http_url(&trace_link))?;
    assert_contains(
        &linked,
        "linked trace",
        &["class=\"waterfall\"", "Timeline"],
    );
    let service_link =
        first_link(&linked, "/services/").ok_or("the trace page links no service")?;
    let service_page = browser.dom(&weft.http_url(&service_link))?;
    assert_contains(
        &service_page,
        "linked service",
        &["Operations", "Latency histograms"],
    );

    let trace = browser.dom(&weft.http_url(&format!("/traces/{compensated}")))?;
    assert_contains(
        &trace,
        "compensated trace",
        &[
            "POST /deliveries",
            "compensate schedule-delivery",
            "class=\"status-message\"",
            "class=\"crit\"",
            "transaction.compensates",
            "drone-management",
        ],
    );
    browser.screenshot(&weft.http_url(&format!("/traces/{compensated}")), "trace")?;

    let other = trace_link.trim_start_matches("/traces/").to_owned();
    let compare = browser.dom(&weft.http_url(&format!("/compare?a={compensated}&b={other}")))?;
    assert_contains(
        &compare,
        "compare",
        &[
            "By service and operation",
            "only in A",
            "delivery-scheduler",
            "POST /deliveries",
        ],
    );
    browser.screenshot(
        &weft.http_url(&format!("/compare?a={compensated}&b={other}")),
        "compare",
    )?;

    // Download as OTLP/JSON, open the file again: the same trace, not stored twice.
    let otlp = weft
        .client()
        .get(weft.http_url(&format!("/traces/{compensated}/otlp.json")))
        .send()
        .await?
        .text()
        .await?;
    let stored_spans = weft
        .sql_count(&format!(
            "SELECT count(*) FROM spans WHERE trace_id = '{compensated}'"
        ))
        .await?;
    let uploaded = weft
        .client()
        .post(weft.http_url("/upload"))
        .form(&[("otlp", otlp.as_str())])
        .send()
        .await?;
    assert_eq!(uploaded.status(), 200);
    let uploaded = uploaded.text().await?;
    assert_contains(
        &uploaded,
        "uploaded trace",
        &[
            "From an uploaded file, not stored",
            "compensate schedule-delivery",
            &compensated,
        ],
    );
    assert_eq!(
        span_count(&uploaded),
        span_count(&trace),
        "the uploaded file shows the stored trace's spans"
    );
    assert_eq!(
        weft.sql_count(&format!(
            "SELECT count(*) FROM spans WHERE trace_id = '{compensated}'"
        ))
        .await?,
        stored_spans
    );
    let not_otlp = weft
        .client()
        .post(weft.http_url("/upload"))
        .form(&[("otlp", "{\"resourceSpans\": 1}")])
        .send()
        .await?;
    assert_eq!(not_otlp.status(), 400);
    assert!(
        not_otlp
            .text()
            .await?
            .contains("This is not an OTLP/JSON trace export")
    );

    let services = browser.dom(&weft.http_url("/services?lookback=15m"))?;
    for service in [
        "accounts",
        "delivery",
        "delivery-history",
        "delivery-scheduler",
        "drone-management",
        "package",
    ] {
        assert!(
            services.contains(&format!("<b>{service}</b>")),
            "/services lacks {service}"
        );
    }
    assert!(services.contains("class=\"sparkline\""));
    browser.screenshot(&weft.http_url("/services?lookback=15m"), "services")?;

    let scheduler = browser.dom(&weft.http_url("/services/delivery-scheduler?lookback=15m"))?;
    assert_contains(
        &scheduler,
        "service page",
        &[
            "Requests per second",
            "Error rate",
            "POST /deliveries",
            "<rect class=\"bar\"",
        ],
    );
    let bucket = first_link(
        &scheduler,
        "/?service=delivery-scheduler&amp;lookback=15m&amp;operation=",
    )
    .ok_or("no histogram bar link")?;
    let bucket_page = browser.dom(&weft.http_url(&bucket))?;
    assert!(
        bucket_page.contains("href=\"/traces/"),
        "a histogram bar leads to traces: {bucket}"
    );
    browser.screenshot(
        &weft.http_url("/services/delivery-scheduler?lookback=15m"),
        "service",
    )?;

    let map = browser.dom(&weft.http_url("/map?lookback=15m"))?;
    assert_contains(
        &map,
        "map",
        &[
            "<svg class=\"chart map\"",
            "class=\"edge-label\"",
            "drone-management",
            "history-db",
            "class=\"node peer\"",
        ],
    );
    browser.screenshot(&weft.http_url("/map?lookback=15m"), "map")?;

    let sql =
        browser.dom(&weft.http_url("/sql?q=SELECT%20count(*)%20AS%20span_count%20FROM%20spans"))?;
    assert_contains(
        &sql,
        "sql",
        &["<th>span_count</th>", "Examples", "resource_attributes"],
    );
    let refused = browser.dom(&weft.http_url("/sql?q=DROP%20TABLE%20spans"))?;
    assert!(
        refused.contains("class=\"sql-error\""),
        "a refused statement is shown as an error"
    );
    browser.screenshot(
        &weft
            .http_url("/sql?q=SELECT%20service_name%2C%20count(*)%20FROM%20spans%20GROUP%20BY%201"),
        "sql",
    )?;

    let explore =
        browser.dom(&weft.http_url("/explore?metric=http.server.request.duration&lookback=15m"))?;
    assert_contains(
        &explore,
        "explore",
        &[
            "http.server.request.duration",
            "delivery-scheduler p95",
            "<polyline class=\"series",
        ],
    );
    browser.screenshot(
        &weft.http_url("/explore?metric=http.server.request.duration&lookback=15m"),
        "explore",
    )?;

    let insights = browser.dom(&weft.http_url("/insights?lookback=15m"))?;
    assert_contains(
        &insights,
        "insights",
        &[
            "<h2>Retries</h2>",
            "<h2>Circuit breakers</h2>",
            "<h2>Load balancing</h2>",
            "outlier: delivery-3",
            "<h2>Versions</h2>",
            "<h2>Synchronous and asynchronous</h2>",
            "<h2>Distributed transactions</h2>",
            "<h2>Encryption</h2>",
            "<h2>Traffic per edge</h2>",
            "class=\"timeline\"",
            "schedule-delivery",
        ],
    );
    browser.screenshot(&weft.http_url("/insights?lookback=15m"), "insights")?;
    let scheduler_page =
        browser.dom(&weft.http_url("/services/delivery-scheduler?lookback=15m"))?;
    let insights_link = first_link(&scheduler_page, "/insights?service=")
        .ok_or("the service page links its insights")?;
    let scheduler = browser.dom(&weft.http_url(&insights_link))?;
    assert_contains(
        &scheduler,
        "the scheduler's insights",
        &[
            "Insights: delivery-scheduler",
            "<h2>Circuit breakers</h2>",
            "schedule-delivery",
            "drone-management",
        ],
    );
    let delivery = browser.dom(&weft.http_url("/insights?service=delivery&lookback=15m"))?;
    assert_contains(&delivery, "delivery's insights", &["outlier: delivery-3"]);

    let missing = browser.dom(&weft.http_url("/traces/00000000000000000000000000000001"))?;
    assert!(missing.contains("Trace not found"));
    let nowhere = browser.dom(&weft.http_url("/no/such/page"))?;
    assert!(nowhere.contains("Page not found"));
    eprintln!("screenshots in {}", browser.screenshots.display());
    Ok(())
}

/// With a token and TLS, a person opens a page, is sent to the login page,
/// types a wrong token and then the right one, clicks "Log in" and lands where
/// they were going, with a session the page's scripts cannot read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_and_sees_the_pages() -> TestResult {
    let Some(binary) = chromium_or_skip()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let weft = start_secure(dir.path(), &["--auth-token", TOKEN])?.weft;
    let base = format!("https://localhost:{}", weft.http.port());
    let profile = tempfile::tempdir()?;
    tokio::task::spawn_blocking(move || -> TestResult {
        // The server certificate comes from a CA made for this test.
        let mut page =
            cdp::Session::start(&binary, profile.path(), &["--ignore-certificate-errors"])?;
        page.navigate(&format!("{base}/services?lookback=1h"))?;
        page.wait_until("location.pathname === '/login'")?;
        assert_eq!(
            page.eval("location.search")?,
            "?next=%2Fservices%3Flookback%3D1h"
        );

        page.click("#token")?;
        page.type_text("a wrong guess")?;
        page.click("#login-submit")?;
        page.wait_until(
            "document.readyState === 'complete' && document.getElementById('login-error') !== null",
        )?;
        assert_eq!(page.eval("location.pathname")?, "/login");

        page.click("#token")?;
        page.type_text(TOKEN)?;
        page.click("#login-submit")?;
        page.wait_until("location.pathname === '/services' && document.readyState === 'complete'")?;
        assert_eq!(
            page.eval("document.querySelector('h1').textContent")?,
            "Services"
        );
        assert_eq!(page.eval("location.search")?, "?lookback=1h");
        assert_eq!(
            page.eval("document.cookie")?,
            "",
            "the session cookie is HTTP-only"
        );

        for (path, heading) in [
            ("/map", "Service map"),
            ("/sql", "SQL"),
            ("/", "Find traces"),
        ] {
            page.navigate(&format!("{base}{path}"))?;
            assert_eq!(page.eval("location.pathname")?, path);
            assert_eq!(
                page.eval("document.querySelector('h1').textContent")?,
                heading
            );
        }

        page.navigate(&format!("{base}/logout"))?;
        assert_eq!(page.eval("location.pathname")?, "/login");
        page.navigate(&format!("{base}/map"))?;
        assert_eq!(page.eval("location.pathname")?, "/login", "logged out");
        Ok(())
    })
    .await??;
    Ok(())
}

/// A person's clicks, not links followed by the test: a dot on the search
/// page's scatter plot opens its trace; a click on a row opens its details;
/// ▾ folds a subtree and the `e` key unfolds everything; the per-service
/// summary leads to the service page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_lead_from_the_scatter_plot_to_a_span_and_a_service() -> TestResult {
    use crate::insights::{
        CLIENT, SERVER, Service, ago_ns, export_and_wait, failing, hex, span_bytes, spec,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    let Some(binary) = chromium_or_skip()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let weft = Weft::start(dir.path(), &["--flush-interval-ms", "100"])?;
    let base = ago_ns(60)?;
    // web GET /checkout → web's client call → stock GET /items, which fails.
    let mut web = Service::new("web", &[]);
    let mut stock = Service::new("stock", &[]);
    web.add(
        base,
        spec(9, 1, None, SERVER, "GET /checkout", (0, 100), &[]),
    );
    web.add(
        base,
        spec(
            9,
            2,
            Some(1),
            CLIENT,
            "GET stock",
            (10, 60),
            &[("peer.service", "stock")],
        ),
    );
    stock.add(
        base,
        failing(spec(9, 3, Some(2), SERVER, "GET /items", (15, 55), &[])),
    );
    export_and_wait(
        &weft,
        ExportTraceServiceRequest {
            resource_spans: vec![web.into_resource_spans(), stock.into_resource_spans()],
        },
    )
    .await?;
    let (root, client, server) = (
        hex(&span_bytes(9, 1)),
        hex(&span_bytes(9, 2)),
        hex(&span_bytes(9, 3)),
    );
    let search = weft.http_url("/?service=web&lookback=1h");
    let profile = tempfile::tempdir()?;
    tokio::task::spawn_blocking(move || -> TestResult {
        let mut page = cdp::Session::start(&binary, profile.path(), &[])?;
        page.navigate(&search)?;
        page.click("svg.scatter circle.dot")?;
        page.wait_until("location.pathname.startsWith('/traces/') && document.readyState === 'complete'")?;

        let detail_open = format!(
            "(() => {{ const r = document.getElementById('span-{server}'); \
             return !document.getElementById('detail-' + r.dataset.id).classList.contains('hidden'); }})()"
        );
        assert_eq!(page.eval(&detail_open)?, false);
        page.click(&format!("#span-{server} td.name b"))?;
        page.wait_until(&detail_open)?;
        assert_eq!(
            page.eval(&format!("document.getElementById('span-{server}').classList.contains('selected')"))?,
            true
        );

        let hidden = |id: &str| format!("document.getElementById('span-{id}').classList.contains('hidden')");
        page.click(&format!("#span-{root} .toggle"))?;
        page.wait_until(&format!("{} && {}", hidden(&client), hidden(&server)))?;
        page.press_key("e")?;
        page.wait_until(&format!("!{} && !{}", hidden(&client), hidden(&server)))?;

        page.click("a[href^='/services/stock']")?;
        page.wait_until("location.pathname === '/services/stock' && document.readyState === 'complete'")?;
        assert_eq!(page.eval("document.querySelector('h1').textContent.trim()")?, "stock");
        Ok(())
    })
    .await??;
    Ok(())
}

/// A trace of 10,021 spans stays usable: below depth 2 its subtrees start
/// folded and arrive as inert templates, so the browser builds 421 rows, not
/// ten thousand; opening a subtree builds its rows, `e` builds them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_span_trace_renders_lazily() -> TestResult {
    use crate::insights::{
        CLIENT, SERVER, Service, ago_ns, export_and_wait, hex, span_bytes, spec,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    let Some(binary) = chromium_or_skip()? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let weft = Weft::start(dir.path(), &["--flush-interval-ms", "100"])?;
    let base = ago_ns(60)?;
    // 1 root, 20 children, 20 grandchildren each (400), 24 below each of those (9,600).
    let mut service = Service::new("bulk", &[]);
    service.add(
        base,
        spec(7, 1, None, SERVER, "GET /batch", (0, 1_000), &[]),
    );
    let mut next = 2u16;
    let mut second_level = Vec::new();
    for a in 0..20 {
        let child = next;
        next += 1;
        service.add(
            base,
            spec(7, child, Some(1), CLIENT, "fan out", (a, a + 900), &[]),
        );
        for b in 0..20 {
            let grandchild = next;
            next += 1;
            second_level.push(grandchild);
            service.add(
                base,
                spec(
                    7,
                    grandchild,
                    Some(child),
                    CLIENT,
                    "batch",
                    (a + b, a + b + 800),
                    &[],
                ),
            );
            for c in 0..24 {
                let leaf = next;
                next += 1;
                service.add(
                    base,
                    spec(
                        7,
                        leaf,
                        Some(grandchild),
                        CLIENT,
                        "item",
                        (a + b + c, a + b + c + 10),
                        &[],
                    ),
                );
            }
        }
    }
    let total = i64::from(next - 1);
    assert_eq!(total, 10_021);
    export_and_wait(
        &weft,
        ExportTraceServiceRequest {
            resource_spans: vec![service.into_resource_spans()],
        },
    )
    .await?;
    let url = weft.http_url(&format!(
        "/traces/{}",
        hex(&crate::insights::trace_bytes(7))
    ));
    let folded = hex(&span_bytes(7, second_level[0]));
    let profile = tempfile::tempdir()?;
    tokio::task::spawn_blocking(move || -> TestResult {
        let mut page = cdp::Session::start(&binary, profile.path(), &[])?;
        let started = Instant::now();
        page.navigate(&url)?;
        eprintln!("10,021-span trace page loaded in {:?}", started.elapsed());
        let rows = "document.querySelectorAll('tr.span-row').length";
        assert_eq!(
            page.eval(rows)?,
            421,
            "only the rows above the folds are built"
        );
        assert_eq!(
            page.eval("document.querySelectorAll('template[data-for]').length")?,
            400
        );
        page.click(&format!("#span-{folded} .toggle"))?;
        page.wait_until(&format!("{rows} === 445"))?;
        let shown = "document.querySelectorAll('tr.span-row:not(.hidden)').length";
        assert_eq!(
            page.eval(shown)?,
            445,
            "the opened subtree's 24 rows are shown"
        );
        page.press_key("e")?;
        page.wait_until(&format!("{rows} === 10021 && {shown} === 10021"))?;
        Ok(())
    })
    .await??;
    Ok(())
}
