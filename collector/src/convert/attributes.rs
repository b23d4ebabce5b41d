//! Attribute sets to the two-map form described in `weft_schema::attributes`.

use std::borrow::Cow;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use datafusion::arrow::array::{
    Array, ArrayRef, MapBuilder, MapFieldNames, StringArray, StringBuilder,
};
use datafusion::arrow::error::ArrowError;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use std::sync::Arc;
use weft_schema::AttributeType;

use super::sizing::Sizes;
use super::wire::{KeyValueView, ValueView};

/// Renders a value as stored in an `…attributes` map, with its type.
/// `None` text means an empty AnyValue. Strings are borrowed, not copied.
pub fn render(value: Option<&AnyValue>) -> (Option<Cow<'_, str>>, AttributeType) {
    if let Some(Value::StringValue(s)) = value.and_then(|v| v.value.as_ref()) {
        return (Some(Cow::Borrowed(s.as_str())), AttributeType::String);
    }
    let (text, kind) = render_owned(value);
    (text.map(Cow::Owned), kind)
}

fn render_owned(value: Option<&AnyValue>) -> (Option<String>, AttributeType) {
    let Some(value) = value.and_then(|v| v.value.as_ref()) else {
        return (None, AttributeType::Empty);
    };
    match value {
        Value::StringValue(s) => (Some(s.clone()), AttributeType::String),
        Value::BoolValue(b) => (Some(b.to_string()), AttributeType::Bool),
        Value::IntValue(i) => (Some(i.to_string()), AttributeType::Int),
        Value::DoubleValue(d) => (Some(render_double(*d)), AttributeType::Double),
        Value::BytesValue(b) => (Some(BASE64.encode(b)), AttributeType::Bytes),
        Value::ArrayValue(array) => {
            let mut out = String::new();
            write_array_json(&mut out, &array.values);
            (Some(out), AttributeType::Array)
        }
        Value::KvlistValue(list) => {
            let mut out = String::new();
            write_kvlist_json(&mut out, &list.values);
            (Some(out), AttributeType::KvList)
        }
        // Profiling-only reference into a string table we do not have: keep the index.
        Value::StringValueStrindex(i) => (Some(i.to_string()), AttributeType::StringIndex),
    }
}

/// Renders a value read straight from the wire, exactly as [`render`] renders
/// the same value decoded by prost.
pub fn render_view<'a>(value: &'a ValueView<'_>) -> (Option<Cow<'a, str>>, AttributeType) {
    let owned = |text: String, kind| (Some(Cow::Owned(text)), kind);
    match value {
        ValueView::Empty => (None, AttributeType::Empty),
        ValueView::Str(s) => (Some(Cow::Borrowed(s)), AttributeType::String),
        ValueView::Bool(b) => owned(b.to_string(), AttributeType::Bool),
        ValueView::Int(i) => owned(i.to_string(), AttributeType::Int),
        ValueView::Double(d) => owned(render_double(*d), AttributeType::Double),
        ValueView::Bytes(b) => owned(BASE64.encode(b), AttributeType::Bytes),
        ValueView::Nested(value) => render(Some(value)),
        ValueView::StrIndex(i) => owned(i.to_string(), AttributeType::StringIndex),
    }
}

/// Calls `use_text` with a value's text as stored and its type, as
/// [`render_view`] renders them, without allocating for the integers and
/// booleans that spans mostly carry besides strings: `i64::to_string` alone
/// was 0.5–1.7 % of the server's samples at 10,000 spans/s in two profiles,
/// its allocation more.
pub fn with_view_text<R>(
    value: &ValueView<'_>,
    use_text: impl FnOnce(Option<&str>, AttributeType) -> R,
) -> R {
    match value {
        ValueView::Int(i) => use_text(Some(itoa::Buffer::new().format(*i)), AttributeType::Int),
        ValueView::Bool(b) => {
            use_text(Some(if *b { "true" } else { "false" }), AttributeType::Bool)
        }
        ValueView::StrIndex(i) => use_text(
            Some(itoa::Buffer::new().format(*i)),
            AttributeType::StringIndex,
        ),
        other => {
            let (text, kind) = render_view(other);
            use_text(text.as_deref(), kind)
        }
    }
}

/// Rust's `Display` for `f64` is the shortest text that parses back to the same value.
fn render_double(d: f64) -> String {
    if d.is_nan() {
        "NaN".to_owned()
    } else if d.is_infinite() {
        if d > 0.0 {
            "Infinity".to_owned()
        } else {
            "-Infinity".to_owned()
        }
    } else {
        d.to_string()
    }
}

/// OTLP/JSON encoding of an AnyValue, used inside arrays and key-value lists so
/// nested values keep their exact types.
fn write_any_value_json(out: &mut String, value: &AnyValue) {
    let Some(value) = &value.value else {
        out.push_str("{}");
        return;
    };
    match value {
        Value::StringValue(s) => {
            out.push_str("{\"stringValue\":");
            write_json_string(out, s);
            out.push('}');
        }
        Value::BoolValue(b) => {
            let _ = write!(out, "{{\"boolValue\":{b}}}");
        }
        Value::IntValue(i) => {
            let _ = write!(out, "{{\"intValue\":\"{i}\"}}");
        }
        Value::DoubleValue(d) => {
            if d.is_finite() {
                let _ = write!(out, "{{\"doubleValue\":{}}}", render_double(*d));
            } else {
                let _ = write!(out, "{{\"doubleValue\":\"{}\"}}", render_double(*d));
            }
        }
        Value::BytesValue(b) => {
            let _ = write!(out, "{{\"bytesValue\":\"{}\"}}", BASE64.encode(b));
        }
        Value::ArrayValue(array) => {
            out.push_str("{\"arrayValue\":{\"values\":");
            write_array_json(out, &array.values);
            out.push_str("}}");
        }
        Value::KvlistValue(list) => {
            out.push_str("{\"kvlistValue\":{\"values\":");
            write_kvlist_json(out, &list.values);
            out.push_str("}}");
        }
        Value::StringValueStrindex(i) => {
            let _ = write!(out, "{{\"stringValueStrindex\":{i}}}");
        }
    }
}

fn write_array_json(out: &mut String, values: &[AnyValue]) {
    out.push('[');
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_any_value_json(out, value);
    }
    out.push(']');
}

fn write_kvlist_json(out: &mut String, values: &[KeyValue]) {
    out.push('[');
    for (i, kv) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"key\":");
        write_json_string(out, &kv.key);
        out.push_str(",\"value\":");
        match &kv.value {
            Some(v) => write_any_value_json(out, v),
            None => out.push_str("{}"),
        }
        out.push('}');
    }
    out.push(']');
}

fn write_json_string(out: &mut String, s: &str) {
    // serde_json's escaping is correct for every code point; a String cannot fail.
    out.push_str(&serde_json::Value::String(s.to_owned()).to_string());
}

/// An attribute set rendered once and appended to many rows: a resource's
/// or a scope's, repeated on each of its spans. Held as arrays, so a row is
/// four bulk copies rather than an append per key and value (which was a
/// tenth of the conversion time, resource attributes being most of a span's
/// entries).
pub struct SharedAttributes {
    keys: StringArray,
    values: StringArray,
    type_keys: StringArray,
    type_names: StringArray,
}

impl SharedAttributes {
    fn from_rendered<'a>(
        rendered: impl Iterator<Item = (&'a str, Option<Cow<'a, str>>, AttributeType)>,
    ) -> Self {
        let mut keys = StringBuilder::new();
        let mut values = StringBuilder::new();
        let mut type_keys = StringBuilder::new();
        let mut type_names = StringBuilder::new();
        for (key, text, kind) in rendered {
            keys.append_value(key);
            values.append_option(text);
            if kind != AttributeType::String {
                type_keys.append_value(key);
                type_names.append_value(kind.name());
            }
        }
        Self {
            keys: keys.finish(),
            values: values.finish(),
            type_keys: type_keys.finish(),
            type_names: type_names.finish(),
        }
    }

    pub fn from_key_values(attributes: &[KeyValue]) -> Self {
        Self::from_rendered(attributes.iter().map(|kv| {
            let (text, kind) = render(kv.value.as_ref());
            (kv.key.as_str(), text, kind)
        }))
    }

    pub fn from_views(attributes: &[KeyValueView<'_>]) -> Self {
        Self::from_rendered(attributes.iter().map(|kv| {
            let (text, kind) = render_view(&kv.value);
            (kv.key, text, kind)
        }))
    }
}

/// Builds one attribute-set column pair: values as text, and the types of the
/// values that are not strings.
pub struct AttributeColumns {
    values: MapBuilder<StringBuilder, StringBuilder>,
    types: MapBuilder<StringBuilder, StringBuilder>,
}

/// Bytes of one key or value text, for sizing builders; growing a text
/// builder copies everything appended so far.
const TEXT_BYTES_GUESS: usize = 16;

fn map_field_names() -> MapFieldNames {
    MapFieldNames {
        entry: "entries".to_owned(),
        key: weft_schema::ATTRIBUTE_MAP_KEY.to_owned(),
        value: weft_schema::ATTRIBUTE_MAP_VALUE.to_owned(),
    }
}

fn map_builder(rows: usize, entries: usize) -> MapBuilder<StringBuilder, StringBuilder> {
    let text = || StringBuilder::with_capacity(entries, entries * TEXT_BYTES_GUESS);
    MapBuilder::with_capacity(Some(map_field_names()), text(), text(), rows)
}

impl AttributeColumns {
    /// Builders for `rows` rows of about `entries_per_row` attributes each.
    pub fn with_capacity(rows: usize, entries_per_row: usize) -> Self {
        let entries = rows * entries_per_row;
        Self {
            values: map_builder(rows, entries),
            // Most values are strings, which have no type entry.
            types: map_builder(rows, entries / 4),
        }
    }

    /// Builders for `rows` rows of the columns `values_path` and
    /// `types_path`, as large as they were in the last batch (see
    /// [`Sizes`]), or of about `entries_per_row` attributes the first time.
    pub fn sized(
        sizes: &Sizes,
        values_path: &str,
        types_path: &str,
        rows: usize,
        entries_per_row: usize,
    ) -> Self {
        let map = |path: &str, entries_per_row: usize| {
            let text = |part: &str| {
                let guess = (entries_per_row, entries_per_row * TEXT_BYTES_GUESS);
                sizes.text(&format!("{path}.{part}"), rows, guess)
            };
            let (key, value) = (
                weft_schema::ATTRIBUTE_MAP_KEY,
                weft_schema::ATTRIBUTE_MAP_VALUE,
            );
            MapBuilder::with_capacity(Some(map_field_names()), text(key), text(value), rows)
        };
        Self {
            values: map(values_path, entries_per_row),
            // Most values are strings, which have no type entry.
            types: map(types_path, entries_per_row / 4),
        }
    }

    /// Builders sized exactly for rows that repeat shared sets, given as
    /// `(set, rows holding it)`: they never grow (each growth copies all that
    /// was appended) and need no cutting down when the batch is finished.
    pub fn for_repeated<'s>(
        sets: impl Iterator<Item = (&'s SharedAttributes, usize)> + Clone,
    ) -> Self {
        let rows = sets.clone().map(|(_, rows)| rows).sum();
        let sized = |pair: fn(&SharedAttributes) -> [&StringArray; 2]| {
            let (mut entries, mut key_bytes, mut value_bytes) = (0, 0, 0);
            for (set, repeats) in sets.clone() {
                let [keys, values] = pair(set);
                entries += repeats * keys.len();
                key_bytes += repeats * keys.value_data().len();
                value_bytes += repeats * values.value_data().len();
            }
            MapBuilder::with_capacity(
                Some(map_field_names()),
                StringBuilder::with_capacity(entries, key_bytes),
                StringBuilder::with_capacity(entries, value_bytes),
                rows,
            )
        };
        Self {
            values: sized(|set| [&set.keys, &set.values]),
            types: sized(|set| [&set.type_keys, &set.type_names]),
        }
    }

    /// Appends one row holding `attributes`.
    pub fn append(&mut self, attributes: &[KeyValue]) {
        for kv in attributes {
            let (text, kind) = render(kv.value.as_ref());
            self.push(&kv.key, text.as_deref(), kind);
        }
        self.end_row();
    }

    /// Appends one row holding attributes read straight from the wire.
    pub fn append_views(&mut self, attributes: &[KeyValueView<'_>]) {
        for kv in attributes {
            with_view_text(&kv.value, |text, kind| self.push(kv.key, text, kind));
        }
        self.end_row();
    }

    /// Appends one row holding a shared attribute set.
    pub fn append_shared(&mut self, attributes: &SharedAttributes) -> Result<(), ArrowError> {
        // Scopes seldom have attributes and resources seldom non-string ones:
        // an empty append still costs a call per builder.
        if !attributes.keys.is_empty() {
            self.values.keys().append_array(&attributes.keys)?;
            self.values.values().append_array(&attributes.values)?;
        }
        if !attributes.type_keys.is_empty() {
            self.types.keys().append_array(&attributes.type_keys)?;
            self.types.values().append_array(&attributes.type_names)?;
        }
        self.end_row();
        Ok(())
    }

    fn push(&mut self, key: &str, text: Option<&str>, kind: AttributeType) {
        self.values.keys().append_value(key);
        self.values.values().append_option(text);
        if kind != AttributeType::String {
            self.types.keys().append_value(key);
            self.types.values().append_value(kind.name());
        }
    }

    fn end_row(&mut self) {
        // Appending an entry list to a map builder only fails when keys and values
        // differ in length, which the loop above rules out.
        let _ = self.values.append(true);
        let _ = self.types.append(true);
    }

    /// Returns (values, types).
    pub fn finish(&mut self) -> (ArrayRef, ArrayRef) {
        (
            Arc::new(self.values.finish()),
            Arc::new(self.types.finish()),
        )
    }
}

/// The value of the first attribute among `keys` that is present.
pub fn find_view<'v, 'a>(
    attributes: &'v [KeyValueView<'a>],
    keys: &[&str],
) -> Option<&'v ValueView<'a>> {
    keys.iter()
        .find_map(|key| attributes.iter().find(|kv| kv.key == *key))
        .map(|kv| &kv.value)
}

/// The first attribute among `keys` that is present.
pub fn find<'a>(attributes: &'a [KeyValue], keys: &[&str]) -> Option<&'a AnyValue> {
    keys.iter().find_map(|key| {
        attributes
            .iter()
            .find(|kv| kv.key == *key)
            .and_then(|kv| kv.value.as_ref())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn any(value: Value) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    #[test]
    fn scalars_render_losslessly() {
        assert_eq!(
            render_owned(Some(&any(Value::IntValue(-42)))),
            (Some("-42".into()), AttributeType::Int)
        );
        assert_eq!(
            render_owned(Some(&any(Value::DoubleValue(0.1)))),
            (Some("0.1".into()), AttributeType::Double)
        );
        assert_eq!(
            render_owned(Some(&any(Value::DoubleValue(1e300))))
                .0
                .map(|s| s.parse::<f64>().ok()),
            Some(Some(1e300))
        );
        assert_eq!(
            render_owned(Some(&any(Value::BoolValue(true)))),
            (Some("true".into()), AttributeType::Bool)
        );
        assert_eq!(
            render_owned(Some(&any(Value::BytesValue(vec![0, 255])))),
            (Some("AP8=".into()), AttributeType::Bytes)
        );
        assert_eq!(
            render_owned(Some(&AnyValue { value: None })),
            (None, AttributeType::Empty)
        );
        assert_eq!(
            render(Some(&any(Value::StringValue("s".into()))))
                .0
                .as_deref(),
            Some("s")
        );
    }

    #[test]
    fn text_without_allocating_is_the_rendered_text() {
        let views = [
            ValueView::Int(i64::MIN),
            ValueView::Int(-42),
            ValueView::Int(0),
            ValueView::Int(i64::MAX),
            ValueView::Bool(true),
            ValueView::Bool(false),
            ValueView::StrIndex(-1),
            ValueView::StrIndex(i32::MAX),
            ValueView::Str("s"),
            ValueView::Double(0.1),
            ValueView::Bytes(&[0, 255]),
            ValueView::Empty,
        ];
        for view in &views {
            let (text, kind) = render_view(view);
            let direct = with_view_text(view, |text, kind| (text.map(str::to_owned), kind));
            assert_eq!(direct, (text.map(Cow::into_owned), kind), "{view:?}");
        }
        assert_eq!(
            with_view_text(&ValueView::Int(i64::MIN), |text, _| text.map(str::to_owned)),
            Some("-9223372036854775808".to_owned())
        );
    }

    #[test]
    fn nested_values_render_as_otlp_json() {
        let nested = any(Value::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key: "k\"".into(),
                value: Some(any(Value::ArrayValue(ArrayValue {
                    values: vec![any(Value::StringValue("a".into())), any(Value::IntValue(7))],
                }))),
                key_strindex: 0,
            }],
        }));
        let (text, kind) = render_owned(Some(&nested));
        assert_eq!(kind, AttributeType::KvList);
        assert_eq!(
            text.as_deref(),
            Some(
                r#"[{"key":"k\"","value":{"arrayValue":{"values":[{"stringValue":"a"},{"intValue":"7"}]}}}]"#
            )
        );
    }
}
