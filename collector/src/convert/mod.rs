//! OTLP messages to Arrow record batches, and the checks that decide which
//! items of a request are accepted.

mod attributes;
mod hex;
pub mod metrics;
pub mod spans;
pub mod validate;
pub mod wire;

pub use hex::hex;
