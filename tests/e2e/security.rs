//! TLS, mutual TLS and the access token, against the real binary with
//! certificates made here (rcgen): the `opentelemetry-otlp` exporters over
//! gRPC and HTTP get in only with the right client certificate and token;
//! everything else is refused with the status that says why, and nothing
//! refused is stored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::support::{TestResult, Weft};

pub const TOKEN: &str = "e2e-token-6f1c";

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    pub fn new(name: &str) -> TestResult<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate()?)?,
        })
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> TestResult<Pem> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    pub fn server(&self) -> TestResult<Pem> {
        self.issue("weft", ExtendedKeyUsagePurpose::ServerAuth)
    }

    pub fn client(&self, name: &str) -> TestResult<Pem> {
        self.issue(name, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// The files a TLS Weft is started with.
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl ServerFiles {
    pub fn write(dir: &Path, server: &Pem, client_ca: &Authority) -> TestResult<Self> {
        let files = Self {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            client_ca: dir.join("client-ca.pem"),
        };
        std::fs::write(&files.cert, &server.cert)?;
        std::fs::write(&files.key, &server.key)?;
        std::fs::write(&files.client_ca, client_ca.pem())?;
        Ok(files)
    }

    pub fn args(&self) -> Vec<String> {
        [
            "--tls-cert",
            &self.cert.display().to_string(),
            "--tls-key",
            &self.key.display().to_string(),
            "--tls-client-ca",
            &self.client_ca.display().to_string(),
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// A TLS Weft with mutual TLS on the OTLP listeners, started with `extra`
/// flags, and the CAs of its server certificate and of its clients.
pub struct SecureWeft {
    pub weft: Weft,
    pub server_ca: Authority,
    pub client_ca: Authority,
}

pub fn start_secure(dir: &Path, extra: &[&str]) -> TestResult<SecureWeft> {
    let server_ca = Authority::new("Weft server CA")?;
    let client_ca = Authority::new("Weft client CA")?;
    let files = ServerFiles::write(dir, &server_ca.server()?, &client_ca)?;
    let mut args = files.args();
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Ok(SecureWeft {
        weft: Weft::start(dir, &args)?,
        server_ca,
        client_ca,
    })
}

/// A rustls client configuration trusting `ca`, presenting `identity` if given.
pub fn client_tls(ca: &str, identity: Option<&Pem>) -> TestResult<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    Ok(match identity {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let certs = CertificateDer::pem_slice_iter(pem.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()?;
            builder
                .with_client_auth_cert(certs, PrivateKeyDer::from_pem_slice(pem.key.as_bytes())?)?
        }
    })
}

/// An HTTPS client (async) trusting `ca`, presenting `identity` if given.
pub fn https_client(ca: &str, identity: Option<&Pem>) -> TestResult<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls(ca, identity)?)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// One client span of a new trace, named after the case it tests.
fn span(name: &str) -> (String, SpanData) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let now = SystemTime::now();
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let trace_id = TraceId::from_bytes(((nanos << 16) | u128::from(n)).to_be_bytes());
    let data = SpanData {
        span_context: SpanContext::new(
            trace_id,
            SpanId::from_bytes(n.to_be_bytes()),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Client,
        name: name.to_owned().into(),
        start_time: now - Duration::from_millis(5),
        end_time: now,
        attributes: vec![KeyValue::new("e2e.case", name.to_owned())],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Ok,
        instrumentation_scope: InstrumentationScope::builder("weft-e2e").build(),
    };
    (trace_id.to_string(), data)
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Grpc,
    Http,
}

/// How an exporter connects: which CA it trusts, which certificate it shows,
/// which token it sends, and whether it speaks TLS at all.
#[derive(Clone)]
struct Credentials {
    ca: String,
    identity: Option<Pem>,
    token: Option<String>,
    tls: bool,
}

/// Exports one span with `opentelemetry-otlp`; the exporter's own result.
fn export(
    weft: &Weft,
    transport: Transport,
    credentials: &Credentials,
    span: SpanData,
) -> TestResult<Result<(), String>> {
    let scheme = if credentials.tls { "https" } else { "http" };
    let timeout = Duration::from_secs(5);
    // tonic's channel spawns its connection task when built: inside this runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _inside = matches!(transport, Transport::Grpc).then(|| runtime.enter());
    let exporter = match transport {
        Transport::Grpc => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(format!("{scheme}://localhost:{}", weft.grpc.port()))
                .with_timeout(timeout);
            if credentials.tls {
                let mut tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&credentials.ca))
                    .domain_name("localhost");
                if let Some(identity) = &credentials.identity {
                    tls = tls.identity(Identity::from_pem(&identity.cert, &identity.key));
                }
                builder = builder.with_tls_config(tls);
            }
            if let Some(token) = &credentials.token {
                let mut metadata = MetadataMap::new();
                metadata.insert("authorization", format!("Bearer {token}").parse()?);
                builder = builder.with_metadata(metadata);
            }
            builder.build()?
        }
        Transport::Http => {
            let mut client = reqwest::blocking::Client::builder().timeout(timeout);
            if credentials.tls {
                client = client.tls_backend_preconfigured(client_tls(
                    &credentials.ca,
                    credentials.identity.as_ref(),
                )?);
            }
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client.build()?)
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!(
                    "{scheme}://localhost:{}/v1/traces",
                    weft.otlp_http.port()
                ))
                .with_timeout(timeout);
            if let Some(token) = &credentials.token {
                builder = builder.with_headers(HashMap::from([(
                    "authorization".to_owned(),
                    format!("Bearer {token}"),
                )]));
            }
            builder.build()?
        }
    };
    let mut exporter = exporter;
    exporter.set_resource(
        &Resource::builder_empty()
            .with_service_name("secure-client")
            .build(),
    );
    let result = match transport {
        // tonic needs a Tokio runtime; the blocking HTTP client must not run in one.
        Transport::Grpc => runtime.block_on(exporter.export(vec![span])),
        Transport::Http => futures::executor::block_on(exporter.export(vec![span])),
    };
    Ok(result.map_err(|e| e.to_string()))
}

async fn export_case(
    weft: &Arc<Weft>,
    transport: Transport,
    credentials: &Credentials,
    case: &str,
) -> TestResult<(String, Result<(), String>)> {
    let (trace_id, span) = span(&format!("{case} over {transport:?}"));
    let weft_ref = Arc::clone(weft);
    let credentials = credentials.clone();
    // A thread of its own, outside the test's runtime, as an application's exporter runs.
    let outcome = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            export(&weft_ref, transport, &credentials, span).map_err(|e| e.to_string())
        })
        .join()
    })
    .await?
    .map_err(|_| "the export thread panicked")??;
    Ok((trace_id, outcome))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_right_certificate_and_token_get_in() -> TestResult {
    let dir = tempfile::tempdir()?;
    let SecureWeft {
        weft,
        server_ca,
        client_ca,
        ..
    } = start_secure(dir.path(), &["--auth-token", TOKEN])?;
    let weft = Arc::new(weft);
    let stranger_ca = Authority::new("Some other CA")?;

    let right = Credentials {
        ca: server_ca.pem(),
        identity: Some(client_ca.client("instrumented-service")?),
        token: Some(TOKEN.to_owned()),
        tls: true,
    };
    let refused_cases = [
        (
            "no token",
            Credentials {
                token: None,
                ..right.clone()
            },
            Some("Unauthenticated"),
        ),
        (
            "wrong token",
            Credentials {
                token: Some("not-the-token".to_owned()),
                ..right.clone()
            },
            Some("Unauthenticated"),
        ),
        (
            "no client certificate",
            Credentials {
                identity: None,
                ..right.clone()
            },
            None,
        ),
        (
            "a certificate from another CA",
            Credentials {
                identity: Some(stranger_ca.client("impostor")?),
                ..right.clone()
            },
            None,
        ),
        (
            "plain text",
            Credentials {
                tls: false,
                ..right.clone()
            },
            None,
        ),
    ];

    let mut admitted = Vec::new();
    let mut refused = Vec::new();
    for transport in [Transport::Grpc, Transport::Http] {
        let (trace_id, outcome) = export_case(&weft, transport, &right, "admitted").await?;
        assert_eq!(outcome, Ok(()), "{transport:?} with certificate and token");
        admitted.push(trace_id);
        for (case, credentials, expected) in &refused_cases {
            let (trace_id, outcome) = export_case(&weft, transport, credentials, case).await?;
            let error = outcome
                .err()
                .ok_or_else(|| format!("{transport:?} with {case} got in"))?;
            match (transport, expected) {
                (Transport::Grpc, Some(code)) => {
                    assert!(error.contains(code), "{transport:?} with {case}: {error}")
                }
                (Transport::Http, Some(_)) => {
                    assert!(error.contains("401"), "{transport:?} with {case}: {error}")
                }
                (_, None) => {}
            }
            refused.push(trace_id);
        }
    }

    let count = |ids: &[String]| {
        format!(
            "SELECT count(*) FROM spans WHERE trace_id IN ({})",
            ids.iter()
                .map(|id| format!("'{id}'"))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let api = https_client(&server_ca.pem(), None)?;
    let sql = |sql: String| {
        api.post(format!("https://localhost:{}/api/sql", weft.http.port()))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "sql": sql }))
            .send()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body: serde_json::Value = sql(count(&admitted)).await?.json().await?;
        if body["rows"][0][0] == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "admitted spans not stored: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body: serde_json::Value = sql(count(&refused)).await?.json().await?;
    assert_eq!(body["rows"][0][0], 0, "nothing refused is stored");
    Ok(())
}

/// The refusals an OTLP/HTTP client sees, status by status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_why() -> TestResult {
    let dir = tempfile::tempdir()?;
    let SecureWeft {
        weft,
        server_ca,
        client_ca,
        ..
    } = start_secure(dir.path(), &["--auth-token", TOKEN])?;
    let url = format!("https://localhost:{}/v1/traces", weft.otlp_http.port());
    let body =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::default()
            .encode_to_vec();
    let client = https_client(&server_ca.pem(), Some(&client_ca.client("svc")?))?;

    let response = client
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    #[derive(Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    let status = RpcStatus::decode(response.bytes().await?)?;
    assert_eq!(status.code, 16, "UNAUTHENTICATED");
    assert!(status.message.contains("Bearer"), "{}", status.message);

    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .bearer_auth("guess")
        .body("{}")
        .send()
        .await?;
    assert_eq!(response.status(), 401);
    let json: serde_json::Value = response.json().await?;
    assert_eq!(json["code"], 16);
    assert_eq!(json["message"], "the bearer token is not valid");

    let response = client
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .bearer_auth(TOKEN)
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(response.status(), 200);

    // Plain text on a TLS listener: a readable 400, not a hang or a reset.
    let plain = reqwest::Client::new()
        .post(format!(
            "http://localhost:{}/v1/traces",
            weft.otlp_http.port()
        ))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await?;
    assert_eq!(plain.status(), 400);
    assert!(plain.text().await?.contains("speaks TLS only"));

    // The UI/API listener asks no client certificate, only the token.
    let api = https_client(&server_ca.pem(), None)?;
    let api_url = |path: &str| format!("https://localhost:{}{path}", weft.http.port());
    let healthz = api.get(api_url("/healthz")).send().await?;
    assert_eq!(healthz.status(), 200, "/healthz stays open");
    for path in ["/api/services", "/api/traces?service=x", "/api/service-map"] {
        let response = api.get(api_url(path)).send().await?;
        assert_eq!(response.status(), 401, "{path} without the token");
        let json: serde_json::Value = response.json().await?;
        assert!(
            json["error"].as_str().is_some_and(|e| e.contains("token")),
            "{json}"
        );
        let wrong = api.get(api_url(path)).bearer_auth("guess").send().await?;
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
        let right = api.get(api_url(path)).bearer_auth(TOKEN).send().await?;
        assert_eq!(right.status(), 200, "{path} with the token");
    }
    let sql = api
        .post(api_url("/api/sql"))
        .json(&serde_json::json!({"sql": "SELECT 1"}))
        .send()
        .await?;
    assert_eq!(sql.status(), 401, "/api/sql without the token");
    let sql = api
        .post(api_url("/api/sql"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"sql": "SELECT 1"}))
        .send()
        .await?;
    assert_eq!(sql.status(), 200, "/api/sql with the token");

    // Pages send a browser to the login page and back to where it was going.
    let page = api.get(api_url("/services?lookback=1h")).send().await?;
    assert_eq!(page.status(), 303);
    assert_eq!(
        page.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/login?next=%2Fservices%3Flookback%3D1h")
    );
    let wrong = api
        .post(api_url("/login"))
        .form(&[("token", "guess"), ("next", "/services?lookback=1h")])
        .send()
        .await?;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(wrong.text().await?.contains("That token is not right"));
    let login = api
        .post(api_url("/login"))
        .form(&[("token", TOKEN), ("next", "/services?lookback=1h")])
        .send()
        .await?;
    assert_eq!(login.status(), 303);
    assert_eq!(
        login
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some("/services?lookback=1h")
    );
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .ok_or("no session cookie")?
        .to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(!cookie.contains(TOKEN), "the cookie is not the token");
    let session = cookie.split(';').next().unwrap_or_default();
    let page = api
        .get(api_url("/services?lookback=1h"))
        .header("cookie", session)
        .send()
        .await?;
    assert_eq!(page.status(), 200);
    assert!(page.text().await?.contains("Services"));
    let logout = api
        .post(api_url("/logout"))
        .header("cookie", session)
        .send()
        .await?;
    assert!(
        logout
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("Max-Age=0"))
    );
    Ok(())
}

/// New certificate files are picked up without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_when_the_files_change() -> TestResult {
    let dir = tempfile::tempdir()?;
    let first_ca = Authority::new("First server CA")?;
    let client_ca = Authority::new("Weft client CA")?;
    let files = ServerFiles::write(dir.path(), &first_ca.server()?, &client_ca)?;
    let args = files.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let weft = Weft::start(dir.path(), &args)?;
    let healthz = format!("https://localhost:{}/healthz", weft.http.port());
    let identity = client_ca.client("svc")?;
    let otlp = format!("https://localhost:{}/v1/traces", weft.otlp_http.port());

    let trusts_first = https_client(&first_ca.pem(), Some(&identity))?;
    assert_eq!(trusts_first.get(&healthz).send().await?.status(), 200);

    let second_ca = Authority::new("Second server CA")?;
    let second = second_ca.server()?;
    // Key first, then certificate: the reload after the key alone fails and
    // keeps the old pair; the one after the certificate takes the new pair.
    std::fs::write(&files.key, &second.key)?;
    std::fs::write(&files.cert, &second.cert)?;
    let trusts_second = https_client(&second_ca.pem(), Some(&identity))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while trusts_second.get(&healthz).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        https_client(&first_ca.pem(), Some(&identity))?
            .get(&healthz)
            .send()
            .await
            .is_err(),
        "the old certificate is gone"
    );
    // The OTLP listener reloaded too.
    let response = trusts_second
        .post(&otlp)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    Ok(())
}

/// `--http-tls-client-ca` asks the UI/API listener for a client certificate too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_listener_can_require_client_certificates() -> TestResult {
    let dir = tempfile::tempdir()?;
    // The client CA file start_secure writes, also asked of UI clients.
    let ui_ca = dir.path().join("client-ca.pem").display().to_string();
    let SecureWeft {
        weft,
        server_ca,
        client_ca,
        ..
    } = start_secure(dir.path(), &["--http-tls-client-ca", &ui_ca])?;
    let healthz = format!("https://localhost:{}/healthz", weft.http.port());
    let anonymous = https_client(&server_ca.pem(), None)?
        .get(&healthz)
        .send()
        .await;
    assert!(anonymous.is_err(), "no client certificate, no connection");
    let stranger = Authority::new("Some other CA")?.client("impostor")?;
    let impostor = https_client(&server_ca.pem(), Some(&stranger))?
        .get(&healthz)
        .send()
        .await;
    assert!(
        impostor.is_err(),
        "a certificate from another CA is refused"
    );
    let admitted = https_client(&server_ca.pem(), Some(&client_ca.client("browser")?))?
        .get(&healthz)
        .send()
        .await?;
    assert_eq!(admitted.status(), 200);
    Ok(())
}

/// The in-process demo presents the server's token; with TLS it is refused
/// at start with a message that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_sends_the_token_and_does_not_mix_with_tls() -> TestResult {
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n"))?;
    let token_arg = token_file.display().to_string();
    let weft = Weft::start(
        dir.path(),
        &[
            "--demo",
            "--demo-rate",
            "20",
            "--auth-token-file",
            &token_arg,
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body: serde_json::Value = weft
            .client()
            .post(weft.http_url("/api/sql"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"sql": "SELECT count(*) FROM spans WHERE service_name = 'delivery-scheduler'"}))
            .send()
            .await?
            .json()
            .await?;
        if body["rows"][0][0].as_i64().is_some_and(|n| n > 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo's spans never arrived: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let refused = weft
        .client()
        .post(weft.http_url("/api/sql"))
        .json(&serde_json::json!({"sql": "SELECT 1"}))
        .send()
        .await?;
    assert_eq!(refused.status(), 401, "the token file's token is required");

    let other = tempfile::tempdir()?;
    let files = ServerFiles::write(
        other.path(),
        &Authority::new("CA")?.server()?,
        &Authority::new("client CA")?,
    )?;
    let output = std::process::Command::new(crate::support::weft_binary())
        .args(["serve", "--demo", "--http-addr", "127.0.0.1:0"])
        .args([
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--otlp-http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(other.path().join("data"))
        .args(files.args())
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--demo") && stderr.contains("--tls-cert"),
        "{stderr}"
    );
    Ok(())
}
