//! What the store holds: every (service, span name, kind), remembered per
//! hour while the hour's files stay the same, so listing services and
//! operations reads only the hours that changed (usually the open one)
//! instead of every span in the store.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::AsArray;
use datafusion::prelude::col;
use weft_schema::spans as s;

use crate::engine::{QueryEngine, QueryError};
use crate::stats::HOUR_NS;

/// (service, span name, kind)
pub(crate) type Entry = (String, String, String);

/// Per hour: the fingerprint of its files and what they hold.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    hours: Mutex<HashMap<i64, (u64, Arc<BTreeSet<Entry>>)>>,
}

impl Catalog {
    fn get(&self, hour: i64, print: u64) -> Option<Arc<BTreeSet<Entry>>> {
        let hours = self.hours.lock().ok()?;
        hours
            .get(&hour)
            .filter(|(known, _)| *known == print)
            .map(|(_, entries)| Arc::clone(entries))
    }

    fn put(&self, hour: i64, print: u64, entries: Arc<BTreeSet<Entry>>) {
        if let Ok(mut hours) = self.hours.lock() {
            hours.insert(hour, (print, entries));
        }
    }

    /// Forgets hours that no longer have files.
    fn keep_only(&self, hours: &BTreeSet<i64>) {
        if let Ok(mut cached) = self.hours.lock() {
            cached.retain(|hour, _| hours.contains(hour));
        }
    }
}

impl QueryEngine {
    /// Every (service, span name, kind) in the store.
    pub(crate) async fn catalog(&self) -> Result<BTreeSet<Entry>, QueryError> {
        let files = self.span_files().await?;
        let hours: BTreeSet<i64> = files.hours().collect();
        let mut all = BTreeSet::new();
        for &hour in &hours {
            let Some(print) = files.fingerprint(hour) else {
                continue;
            };
            let entries = match self.catalog_cache().get(hour, print) {
                Some(entries) => entries,
                None => {
                    let entries = Arc::new(self.catalog_of(hour).await?);
                    self.catalog_cache().put(hour, print, Arc::clone(&entries));
                    entries
                }
            };
            all.extend(entries.iter().cloned());
        }
        self.catalog_cache().keep_only(&hours);
        Ok(all)
    }

    async fn catalog_of(&self, hour: i64) -> Result<BTreeSet<Entry>, QueryError> {
        let frame = self.spans_in(hour, hour + HOUR_NS - 1).await?.aggregate(
            vec![col(s::SERVICE_NAME), col(s::NAME), col(s::KIND)],
            vec![],
        )?;
        let mut entries = BTreeSet::new();
        for batch in self.collect(frame).await? {
            let [services, names, kinds] = [0, 1, 2].map(|i| batch.column(i).as_string::<i32>());
            for row in 0..batch.num_rows() {
                entries.insert((
                    services.value(row).to_owned(),
                    names.value(row).to_owned(),
                    kinds.value(row).to_owned(),
                ));
            }
        }
        Ok(entries)
    }
}
