//! Starts the real `weft` binary on port 0 and talks to it over real sockets.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A running `weft serve` with its data directory.
pub struct Weft {
    child: Child,
    pub grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    extra_args: Vec<String>,
    http_client: reqwest::Client,
}

/// reqwest and the exporters' HTTP clients use rustls with whichever provider
/// the process installed; the tests use ring, as Weft does. Installing twice
/// is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn weft_binary() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

impl Weft {
    /// `weft serve` on a new data directory inside `dir`.
    pub fn start(dir: &Path, extra_args: &[&str]) -> TestResult<Self> {
        Self::start_on(
            dir.join("data"),
            extra_args.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn start_on(data_dir: PathBuf, extra_args: Vec<String>) -> TestResult<Self> {
        install_crypto_provider();
        let mut child = Command::new(weft_binary())
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--otlp-grpc-addr",
                "127.0.0.1:0",
                "--otlp-http-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .args(&extra_args)
            .env("WEFT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[weft] {line}");
                let _ = lines.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut grpc, mut otlp_http, mut http) = (None, None, None);
        while grpc.is_none() || otlp_http.is_none() || http.is_none() {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or("weft did not log its addresses in time")?;
            let line = received
                .recv_timeout(left)
                .map_err(|_| "weft exited or did not log its addresses")?;
            let addr = || -> Option<SocketAddr> {
                line.split("addr=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            };
            if line.contains("otlp-grpc listening") {
                grpc = addr();
            } else if line.contains("otlp-http listening") {
                otlp_http = addr();
            } else if line.contains("http listening") {
                http = addr();
            }
        }
        let (Some(grpc), Some(otlp_http), Some(http)) = (grpc, otlp_http, http) else {
            return Err("missing an address".into());
        };
        Ok(Self {
            child,
            grpc,
            otlp_http,
            http,
            data_dir,
            extra_args,
            http_client: reqwest::Client::new(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no flush, no goodbye.
    pub fn kill9(&mut self) -> TestResult {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Kills the server hard and starts a new one on the same data directory.
    pub fn crash_and_restart(mut self) -> TestResult<Self> {
        self.kill9()?;
        let data_dir = self.data_dir.clone();
        let args = self.extra_args.clone();
        Self::start_on(data_dir, args)
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn otlp_http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.otlp_http)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.http_client
    }

    /// `POST /api/sql`; returns the status and the JSON body.
    pub async fn sql_response(&self, sql: &str) -> TestResult<(u16, Value)> {
        let response = self
            .http_client
            .post(self.http_url("/api/sql"))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    /// The rows of a query that must succeed.
    pub async fn sql(&self, sql: &str) -> TestResult<Vec<Vec<Value>>> {
        let (status, body) = self.sql_response(sql).await?;
        if status != 200 {
            return Err(format!("{sql}: HTTP {status}: {body}").into());
        }
        let rows = body["rows"].as_array().ok_or("no rows")?;
        Ok(rows
            .iter()
            .map(|r| r.as_array().cloned().unwrap_or_default())
            .collect())
    }

    /// A single integer from a query like `SELECT count(*) …`.
    pub async fn sql_count(&self, sql: &str) -> TestResult<i64> {
        let rows = self.sql(sql).await?;
        rows.first()
            .and_then(|r| r.first())
            .and_then(Value::as_i64)
            .ok_or_else(|| format!("{sql}: no count").into())
    }

    /// Waits until `sql` counts `expected` (data becomes visible after a flush).
    pub async fn wait_for_count(&self, sql: &str, expected: i64) -> TestResult<Duration> {
        let start = Instant::now();
        loop {
            let count = self.sql_count(sql).await?;
            if count == expected {
                return Ok(start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(format!("{sql}: counted {count}, expected {expected}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss_bytes(&self) -> TestResult<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or("no VmRSS")?;
        Ok(kb * 1024)
    }

    /// Parquet files of a table below the data directory.
    pub fn parquet_files(&self, table: &str) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "parquet") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        walk(&self.data_dir.join(table), &mut files);
        files.sort();
        files
    }
}

impl Drop for Weft {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
