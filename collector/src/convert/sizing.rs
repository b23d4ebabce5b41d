//! Builder capacities learnt from the last batch converted.
//!
//! A builder that outgrows its capacity copies all it holds into a buffer
//! twice as large, and a batch is cut down to what its values use before it
//! waits for its flush ([`super::fitted_batch`]), another copy: the two were
//! 3.2 % of the server's CPU at 10,000 spans/s (perf, README, Performance,
//! session 28), most builders starting from a guess of 16 bytes a value
//! and 1,024 values. Requests from the same services look alike, so each
//! builder starts as large, per row, as its column was in the last batch
//! of its table, with a little room over.

use std::sync::{Arc, Mutex, PoisonError};

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::HashMap;

/// Room over the last batch's sizes, as a fraction: a batch a little larger
/// per row than the last still fits, and one as large keeps its slack under
/// [`super::fitted_batch`]'s threshold for cutting buffers down.
const ROOM_DIVISOR: usize = 32;

/// Items and value bytes per row of one column (or nested field), ×1024.
#[derive(Debug, Clone, Copy, Default)]
struct PerRow {
    items: usize,
    bytes: usize,
}

const SCALE: usize = 1024;

/// What each column of a table held per row in the last batch, by path
/// (`name`, `attributes.key`, `events.name`, …).
#[derive(Debug, Default)]
pub(crate) struct Sizes {
    per_row: HashMap<String, PerRow>,
}

impl Sizes {
    /// What the columns of `batch` hold per row.
    pub(crate) fn of(batch: &RecordBatch) -> Self {
        let mut sizes = Sizes::default();
        let rows = batch.num_rows().max(1);
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            sizes.learn(field.name(), column.as_ref(), rows);
        }
        sizes
    }

    fn learn(&mut self, path: &str, array: &dyn Array, rows: usize) {
        let bytes = match array.data_type() {
            DataType::Utf8 => {
                let offsets = array.as_string::<i32>().value_offsets();
                let (first, last) = (offsets[0], offsets[offsets.len() - 1]);
                usize::try_from(last - first).unwrap_or_default()
            }
            DataType::Map(..) => {
                let entries = array.as_map().entries();
                for (field, child) in entries.fields().iter().zip(entries.columns()) {
                    self.learn(&format!("{path}.{}", field.name()), child.as_ref(), rows);
                }
                0
            }
            DataType::List(_) => {
                let items = array.as_list::<i32>().values();
                if let Some(fields) = items.as_struct_opt() {
                    for (field, child) in fields.fields().iter().zip(fields.columns()) {
                        self.learn(&format!("{path}.{}", field.name()), child.as_ref(), rows);
                    }
                }
                0
            }
            _ => 0,
        };
        self.per_row.insert(
            path.to_owned(),
            PerRow {
                items: array.len() * SCALE / rows,
                bytes: bytes * SCALE / rows,
            },
        );
    }

    /// Items for `rows` rows of the column at `path`; `guess` per row if
    /// no batch has held it yet.
    pub(crate) fn items(&self, path: &str, rows: usize, guess: usize) -> usize {
        self.per_row
            .get(path)
            .map_or(rows * guess, |per_row| with_room(per_row.items, rows))
    }

    /// A text builder for `rows` rows of the column at `path`; `guess` items
    /// and bytes per row if no batch has held it yet.
    pub(crate) fn text(&self, path: &str, rows: usize, guess: (usize, usize)) -> StringBuilder {
        let (items, bytes) = match self.per_row.get(path) {
            Some(per_row) => (
                with_room(per_row.items, rows),
                with_room(per_row.bytes, rows),
            ),
            None => (rows * guess.0, rows * guess.1),
        };
        StringBuilder::with_capacity(items, bytes)
    }
}

fn with_room(per_row_scaled: usize, rows: usize) -> usize {
    let needed = (per_row_scaled * rows).div_ceil(SCALE);
    needed + needed / ROOM_DIVISOR
}

/// The sizes learnt for one table, shared by every thread converting it.
#[derive(Default)]
pub(crate) struct LastBatch(Mutex<Arc<Sizes>>);

impl LastBatch {
    pub(crate) fn sizes(&self) -> Arc<Sizes> {
        Arc::clone(&self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn remember(&self, batch: &RecordBatch) {
        let sizes = Arc::new(Sizes::of(batch));
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = sizes;
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{ArrayRef, StringArray};
    use opentelemetry_proto::tonic::trace::v1::{Span, span::Event};

    use super::*;
    use crate::test_requests::{numbered_span, request_of, text};

    /// The text column or nested text field at `path` (`name`,
    /// `attributes.key`, `events.name`).
    fn strings_at<'b>(batch: &'b RecordBatch, path: &str) -> &'b StringArray {
        let (column, field) = path
            .split_once('.')
            .map_or((path, None), |(column, field)| (column, Some(field)));
        let array: &ArrayRef = batch.column_by_name(column).expect("a column");
        let array = match (field, array.data_type()) {
            (None, _) => Some(array),
            (Some(field), DataType::Map(..)) => array.as_map().entries().column_by_name(field),
            (Some(field), _) => array
                .as_list::<i32>()
                .values()
                .as_struct()
                .column_by_name(field),
        }
        .expect("a field");
        array.as_string::<i32>()
    }

    #[test]
    fn builders_start_as_large_as_the_last_batchs_columns() -> Result<(), Box<dyn std::error::Error>>
    {
        let span = |n: usize| Span {
            name: format!("GET /cart/{n:06}"),
            attributes: vec![
                text("http.route", "/cart/{id}"),
                text("user.id", &format!("{n:06}")),
            ],
            events: vec![
                Event {
                    name: "cache miss".into(),
                    ..Default::default()
                };
                n % 4
            ],
            ..numbered_span(n)
        };
        let last = request_of(&[vec![text("service.name", "cart")]], 700, 0, &span);
        let next = request_of(&[vec![text("service.name", "cart")]], 700, 700, &span);
        let sizes = Sizes::of(&last);
        for path in ["name", "attributes.key", "attributes.value", "events.name"] {
            // Given nothing to go by, the builder would grow from nothing.
            let mut builder = sizes.text(path, next.num_rows(), (0, 0));
            for value in strings_at(&next, path) {
                builder.append_option(value);
            }
            let built = builder.finish();
            let used = built.to_data().get_slice_memory_size()?;
            let held = built.get_buffer_memory_size();
            assert!(
                held <= used + used / 16,
                "{path}: {held} bytes held for {used} used"
            );
        }
        assert_eq!(
            sizes.items("events.time", 1000, 5),
            1500 + 1500 / ROOM_DIVISOR
        );
        assert_eq!(sizes.items("no.such.column", 1000, 5), 5000);
        Ok(())
    }
}
