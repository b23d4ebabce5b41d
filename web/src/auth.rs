//! Access with a shared bearer token (`--auth-token`): OTLP requests and the
//! JSON API present it as `Authorization: Bearer TOKEN`, browsers log in once
//! on `/login` and then carry an HTTP-only cookie. `/healthz`, the login page
//! and the stylesheet stay open.
//!
//! Tokens are compared as SHA-256 digests, byte by byte without an early
//! exit: the time a comparison takes says nothing about how much of a guess
//! was right. The token itself is never logged or printed.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use ring::digest::{SHA256, digest};
use serde::Deserialize;

use crate::pages::url_encode;

/// The cookie a browser carries after logging in.
const SESSION_COOKIE: &str = "weft_session";
/// How long a login lasts.
const SESSION_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// A wrong token on the login page costs this long, to slow down guessing.
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(300);

/// A secret given on the command line; `Debug` does not show it.
#[derive(Clone)]
pub struct Secret(String);

impl FromStr for Secret {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let token = text.trim();
        if token.is_empty() {
            return Err("the token is empty".to_owned());
        }
        Ok(Self(token.to_owned()))
    }
}

impl Secret {
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The token on the first line of a file (a mounted secret, say).
pub fn read_token_file(path: &Path) -> Result<Secret, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.lines()
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|_| AuthError::Empty {
            path: path.to_owned(),
        })
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {path} is empty")]
    Empty { path: std::path::PathBuf },
}

type Digest = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Digest {
    let joined = parts.concat();
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, &joined).as_ref());
    out
}

/// Equal without an early exit.
fn same_digest(a: &Digest, b: &Digest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token requests must present, kept only as digests.
#[derive(Clone)]
pub struct AuthToken {
    token: Digest,
    /// The session cookie's value: derived from the token, so logins survive
    /// restarts and end when the token changes.
    session: Digest,
    /// `Secure` on the cookie: set when the UI listener speaks TLS.
    secure_cookie: bool,
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(…)")
    }
}

impl AuthToken {
    pub fn new(secret: &Secret, secure_cookie: bool) -> Self {
        let token = secret.0.as_bytes();
        Self {
            token: sha256(&[token]),
            session: sha256(&[b"weft-session-v1\0", token]),
            secure_cookie,
        }
    }

    fn accepts(&self, presented: &str) -> bool {
        same_digest(&self.token, &sha256(&[presented.as_bytes()]))
    }

    /// `Authorization: Bearer TOKEN` (the scheme in any case).
    fn accepts_bearer(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err("this Weft needs a token: send Authorization: Bearer <token>");
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match presented {
            Some(token) if self.accepts(token) => Ok(()),
            Some(_) => Err("the bearer token is not valid"),
            None => Err("the Authorization header must be Bearer <token>"),
        }
    }

    fn accepts_cookie(&self, headers: &HeaderMap) -> bool {
        let expected = hex(&self.session);
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| {
                name == SESSION_COOKIE
                    && same_digest(
                        &sha256(&[value.as_bytes()]),
                        &sha256(&[expected.as_bytes()]),
                    )
            })
    }

    fn session_cookie(&self) -> String {
        format!(
            "{SESSION_COOKIE}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
            hex(&self.session),
            SESSION_MAX_AGE.as_secs(),
            if self.secure_cookie { "; Secure" } else { "" }
        )
    }

    fn cleared_cookie(&self) -> String {
        format!(
            "{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{}",
            if self.secure_cookie { "; Secure" } else { "" }
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Middleware for the OTLP/HTTP listener: `401` with a `google.rpc.Status`.
pub async fn otlp_http(State(token): State<AuthToken>, request: Request, next: Next) -> Response {
    match token.accepts_bearer(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(message) => weft_collector::http::unauthenticated(request.headers(), message),
    }
}

/// Middleware for the OTLP/gRPC listener: status `UNAUTHENTICATED`.
pub async fn otlp_grpc(State(token): State<AuthToken>, request: Request, next: Next) -> Response {
    match token.accepts_bearer(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(message) => tonic::Status::unauthenticated(message).into_http::<axum::body::Body>(),
    }
}

/// Paths anyone may reach.
fn is_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/login" | "/logout") || path.starts_with("/static/")
}

/// Middleware for the UI/API listener: the JSON API answers `401`, pages send
/// the browser to the login page and back.
pub async fn ui(State(token): State<AuthToken>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if is_open(path) || token.accepts_cookie(request.headers()) {
        return next.run(request).await;
    }
    let bearer = token.accepts_bearer(request.headers());
    if bearer.is_ok() {
        return next.run(request).await;
    }
    if path.starts_with("/api/") {
        let message = bearer.err().unwrap_or_default();
        let mut response = (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({ "error": message })),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let back = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    Redirect::to(&format!("/login?next={}", url_encode(&back))).into_response()
}

/// `/login` and `/logout`.
pub fn routes<S>(token: AuthToken) -> Router<S> {
    Router::new()
        .route("/login", get(login_page).post(log_in))
        .route("/logout", get(log_out).post(log_out))
        .with_state(token)
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    next: &'a str,
    failed: bool,
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Only paths on this server: `/x`, never `//elsewhere` or a full URL.
fn local_target(next: Option<&str>) -> &str {
    match next {
        Some(next) if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') => {
            next
        }
        _ => "/",
    }
}

fn login_form(next: &str, failed: bool) -> Response {
    let page = LoginPage { next, failed };
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn login_page(
    State(token): State<AuthToken>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    let next = local_target(query.next.as_deref());
    if token.accepts_cookie(&headers) {
        return Redirect::to(next).into_response();
    }
    login_form(next, false)
}

async fn log_in(State(token): State<AuthToken>, Form(form): Form<LoginForm>) -> Response {
    let next = local_target(form.next.as_deref());
    if !token.accepts(form.token.trim()) {
        tokio::time::sleep(FAILED_LOGIN_DELAY).await;
        let mut response = login_form(next, true);
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    }
    let mut response = Redirect::to(next).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&token.session_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn log_out(State(token): State<AuthToken>) -> Response {
    let mut response = Redirect::to("/login").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&token.cleared_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> AuthToken {
        AuthToken::new(&"s3cret".parse().unwrap_or(Secret(String::new())), true)
    }

    fn headers(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
        headers
    }

    #[test]
    fn bearer_tokens_are_checked_exactly() {
        let token = token();
        let ok = |v: &str| token.accepts_bearer(&headers(header::AUTHORIZATION, v));
        assert_eq!(ok("Bearer s3cret"), Ok(()));
        assert_eq!(ok("bearer s3cret"), Ok(()));
        assert_eq!(ok("Bearer s3cre"), Err("the bearer token is not valid"));
        assert_eq!(ok("Bearer s3cret2"), Err("the bearer token is not valid"));
        assert_eq!(
            ok("Basic s3cret"),
            Err("the Authorization header must be Bearer <token>")
        );
        assert!(token.accepts_bearer(&HeaderMap::new()).is_err());
    }

    #[test]
    fn the_session_cookie_is_derived_not_the_token() {
        let token = token();
        let cookie = token.session_cookie();
        assert!(!cookie.contains("s3cret"));
        assert!(cookie.contains("HttpOnly") && cookie.contains("Secure"));
        let value = cookie.split(';').next().unwrap_or_default();
        assert!(token.accepts_cookie(&headers(header::COOKIE, &format!("theme=dark; {value}"))));
        assert!(!token.accepts_cookie(&headers(header::COOKIE, "weft_session=s3cret")));
    }

    #[test]
    fn logins_only_send_the_browser_to_local_paths() {
        assert_eq!(
            local_target(Some("/services?lookback=1h")),
            "/services?lookback=1h"
        );
        assert_eq!(local_target(Some("//evil.example/")), "/");
        assert_eq!(local_target(Some("https://evil.example/")), "/");
        assert_eq!(local_target(Some("/\\evil.example")), "/");
        assert_eq!(local_target(None), "/");
    }

    #[test]
    fn secrets_do_not_print() {
        let secret: Result<Secret, _> = "s3cret".parse();
        assert!(!format!("{secret:?}").contains("s3cret"));
        assert!(!format!("{:?}", token()).contains("s3cret"));
        assert!("  ".parse::<Secret>().is_err());
    }
}
