//! End-to-end tests: the real `weft` binary on port 0, fed by real OTLP
//! exporters (the `opentelemetry-otlp` crate, the generated OTLP gRPC client,
//! plain HTTP), read back through `/api/sql` and `weft sql`.

mod bad_input;
mod browser;
mod cdp;
mod demo;
mod durability;
mod insights;
mod jaeger;
mod otlp_fields;
mod query;
mod rollups;
mod sdk_export;
mod security;
mod sql;
mod store;
mod support;
