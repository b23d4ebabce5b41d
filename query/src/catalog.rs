//! What the store holds, remembered per hour while the hour's files stay the
//! same, so that only the hours that changed (usually the open one) are read
//! again: every (service, span name, kind), for listing services and
//! operations without a scan of every span; and, for finished hours, the
//! trace ids they hold, so fetching a trace reads only the hours it is in,
//! and the attribute keys on their spans and resources, so an attribute
//! search decodes only the map a key can be in.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::prelude::col;
use weft_schema::spans as s;

use crate::engine::{QueryEngine, QueryError};
use crate::stats::HOUR_NS;

/// (service, span name, kind)
pub(crate) type Entry = (String, String, String);

/// Something derived from one hour's files, remembered per hour with the
/// fingerprint of the files it was derived from.
#[derive(Debug)]
pub(crate) struct PerHour<T> {
    hours: Mutex<HashMap<i64, (u64, Arc<T>)>>,
}

impl<T> Default for PerHour<T> {
    fn default() -> Self {
        Self {
            hours: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> PerHour<T> {
    /// What was derived from the hour's files, if they are still `print`.
    fn get(&self, hour: i64, print: u64) -> Option<Arc<T>> {
        let hours = self.hours.lock().ok()?;
        hours
            .get(&hour)
            .filter(|(known, _)| *known == print)
            .map(|(_, value)| Arc::clone(value))
    }

    /// What was derived from the hour's files, deriving it (and remembering
    /// it) if the files changed; `derive` is only awaited then.
    async fn get_or_derive(
        &self,
        hour: i64,
        print: u64,
        derive: impl Future<Output = Result<T, QueryError>>,
    ) -> Result<Arc<T>, QueryError> {
        if let Some(value) = self.get(hour, print) {
            return Ok(value);
        }
        let value = Arc::new(derive.await?);
        self.put(hour, print, Arc::clone(&value));
        Ok(value)
    }

    fn put(&self, hour: i64, print: u64, value: Arc<T>) {
        if let Ok(mut hours) = self.hours.lock() {
            hours.insert(hour, (print, value));
        }
    }

    /// Forgets hours that no longer have files.
    fn keep_only(&self, hours: &BTreeSet<i64>) {
        if let Ok(mut cached) = self.hours.lock() {
            cached.retain(|hour, _| hours.contains(hour));
        }
    }
}

/// Per hour: every (service, span name, kind) in its files.
pub(crate) type Catalog = PerHour<BTreeSet<Entry>>;

/// Per finished hour: the first 64 bits of every trace id in its files,
/// sorted (about 8 bytes per trace: 0.4 MB for an hour of the benchmark store).
pub(crate) type TraceIndex = PerHour<Vec<u64>>;

/// The attribute keys of spans: on the spans themselves and on their resources.
#[derive(Debug, Default, Clone)]
pub(crate) struct AttributeKeys {
    pub(crate) span: HashSet<String>,
    pub(crate) resource: HashSet<String>,
}

impl AttributeKeys {
    fn add(&mut self, batch: &RecordBatch) {
        for (column, keys) in [(0, &mut self.span), (1, &mut self.resource)] {
            let Some(map) = batch.column(column).as_map_opt() else {
                continue;
            };
            let Some(names) = map.keys().as_string_opt::<i32>() else {
                continue;
            };
            for name in names.iter().flatten() {
                if !keys.contains(name) {
                    keys.insert(name.to_owned());
                }
            }
        }
    }

    fn extend(&mut self, other: &AttributeKeys) {
        self.span.extend(other.span.iter().cloned());
        self.resource.extend(other.resource.iter().cloned());
    }
}

/// Per finished hour: the attribute keys in its files (a few dozen).
pub(crate) type KeyIndex = PerHour<AttributeKeys>;

/// The first 64 bits of a trace id in hex; `None` if it is not hex.
fn id_prefix(trace_id: &str) -> Option<u64> {
    u64::from_str_radix(trace_id.get(..16)?, 16).ok()
}

impl QueryEngine {
    /// The hours that may hold spans of `trace_ids`: every hour not finished
    /// (still taking flush files) and every finished hour whose index has one
    /// of them. `None` when every hour must be read (an id that is not hex).
    pub(crate) async fn hours_of_traces(
        &self,
        trace_ids: &[String],
    ) -> Result<Option<Vec<i64>>, QueryError> {
        let Some(mut wanted) = trace_ids
            .iter()
            .map(|id| id_prefix(id))
            .collect::<Option<Vec<u64>>>()
        else {
            return Ok(None);
        };
        wanted.sort_unstable();
        let files = self.span_files().await?;
        let hours: BTreeSet<i64> = files.hours().collect();
        let mut found = Vec::new();
        for &hour in &hours {
            let (Some(print), true) = (files.fingerprint(hour), files.is_finished(hour)) else {
                found.push(hour);
                continue;
            };
            let ids = self
                .trace_index()
                .get_or_derive(hour, print, self.trace_ids_of(hour))
                .await?;
            if wanted.iter().any(|id| ids.binary_search(id).is_ok()) {
                found.push(hour);
            }
        }
        self.trace_index().keep_only(&hours);
        Ok(Some(found))
    }

    /// The attribute keys of the spans of `hours`; `None` when one of them
    /// still takes flush files (its keys would be read again at every flush).
    pub(crate) async fn attribute_keys(
        &self,
        hours: impl IntoIterator<Item = i64>,
    ) -> Result<Option<AttributeKeys>, QueryError> {
        let files = self.span_files().await?;
        let mut all = AttributeKeys::default();
        for hour in hours {
            // An hour without files has no keys.
            let Some(print) = files.fingerprint(hour) else {
                continue;
            };
            if !files.is_finished(hour) {
                return Ok(None);
            }
            let keys = self
                .key_index()
                .get_or_derive(hour, print, self.attribute_keys_of(hour))
                .await?;
            all.extend(&keys);
        }
        self.key_index().keep_only(&files.hours().collect());
        Ok(Some(all))
    }

    async fn attribute_keys_of(&self, hour: i64) -> Result<AttributeKeys, QueryError> {
        let columns = crate::scan::SpanColumns {
            names: vec![s::ATTRIBUTES, s::RESOURCE_ATTRIBUTES],
            dictionaries: Vec::new(),
        };
        let parts = self
            .fold_spans(hour, hour + HOUR_NS - 1, columns, AttributeKeys::add)
            .await?;
        let mut all = AttributeKeys::default();
        for part in &parts {
            all.extend(part);
        }
        Ok(all)
    }

    async fn trace_ids_of(&self, hour: i64) -> Result<Vec<u64>, QueryError> {
        let frame = self
            .spans_in(hour, hour + HOUR_NS - 1)
            .await?
            .select(vec![col(s::TRACE_ID)])?;
        let mut ids = Vec::new();
        for batch in self.collect(frame).await? {
            ids.extend(
                batch
                    .column(0)
                    .as_string::<i32>()
                    .iter()
                    .flatten()
                    .filter_map(id_prefix),
            );
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Every (service, span name, kind) in the store.
    pub(crate) async fn catalog(&self) -> Result<BTreeSet<Entry>, QueryError> {
        let files = self.span_files().await?;
        let hours: BTreeSet<i64> = files.hours().collect();
        let mut all = BTreeSet::new();
        for &hour in &hours {
            let Some(print) = files.fingerprint(hour) else {
                continue;
            };
            let entries = self
                .catalog_cache()
                .get_or_derive(hour, print, self.catalog_of(hour))
                .await?;
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
