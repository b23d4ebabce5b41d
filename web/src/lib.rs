//! The `weft` binary's HTTP side: routes, handlers and pages. Handlers
//! call the query crate and render what it returns; they hold no SQL of their
//! own beyond what a user sends to `/api/sql`, and no Arrow arrays.

mod api;
pub mod auth;
pub mod config;
pub mod jaeger;
mod pages;
mod params;
mod routes;
pub mod server;
pub mod tls;

pub use routes::{AppState, app};
