//! The customers: a loop that calls delivery-scheduler's public API (and now
//! and then delivery-history) at the configured rate. It is not instrumented,
//! so each request starts a new trace at the scheduler.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value as Json, json};

use crate::Config;
use crate::services::Addresses;

/// Deliveries the customers may reschedule, cancel or look up.
const REMEMBERED: usize = 200;

pub async fn drive(config: Config, addresses: Addresses) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let known: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let mut rng = fastrand::Rng::with_seed(config.seed.wrapping_add(99));
    let period = Duration::from_secs_f64(1.0 / config.rate_per_sec.max(0.01));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let choice = rng.u32(0..100);
        let account = format!("acct-{}", rng.u32(1..=500));
        let existing = known
            .lock()
            .ok()
            .and_then(|ids| (!ids.is_empty()).then(|| ids[rng.usize(0..ids.len())].clone()));
        let request = match (choice, existing) {
            (0..60, _) | (_, None) => http
                .post(format!("{}/deliveries", addresses.scheduler))
                .json(&json!({ "account_id": account })),
            (60..75, Some(id)) => http
                .patch(format!("{}/deliveries/{id}", addresses.scheduler))
                .json(&json!({})),
            (75..85, Some(id)) => http.delete(format!("{}/deliveries/{id}", addresses.scheduler)),
            (85..95, Some(id)) => http.get(format!("{}/deliveries/{id}", addresses.scheduler)),
            (_, Some(id)) => http.get(format!(
                "{}/deliveries/{id}/history",
                addresses.delivery_history
            )),
        };
        let known = Arc::clone(&known);
        // Requests overlap, as real customers' do.
        tokio::spawn(async move {
            let Ok(response) = request.send().await else {
                return;
            };
            if response.status() != reqwest::StatusCode::CREATED {
                return;
            }
            let Ok(body) = response.json::<Json>().await else {
                return;
            };
            if let (Some(id), Ok(mut known)) =
                (body.get("delivery_id").and_then(Json::as_str), known.lock())
            {
                if known.len() >= REMEMBERED {
                    known.pop_front();
                }
                known.push_back(id.to_owned());
            }
        });
    }
}
