//! Reading OTLP trace messages straight from their protobuf bytes.
//!
//! prost decodes a request into owned structs: a `Vec` or `String` for every
//! id, name, key and value, hundreds of allocations per request, freed again
//! as soon as the spans are in Arrow. Here a span is read into views that
//! borrow from the request's bytes, so text goes from the wire to the Arrow
//! builders with one copy. Only the rare nested values (arrays, key-value
//! lists) are decoded by prost.
//!
//! Fields may come in any order and unknown fields are skipped, as the
//! protobuf encoding allows; a field of a known number with the wrong wire
//! type, a truncated length, or text that is not UTF-8 makes the whole
//! message malformed, as it does for prost.

use opentelemetry_proto::tonic::common::v1::{AnyValue, EntityRef};
use prost::Message;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(String);

impl WireError {
    fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

impl From<prost::DecodeError> for WireError {
    fn from(error: prost::DecodeError) -> Self {
        Self(error.to_string())
    }
}

/// One field's value, by wire type.
#[derive(Debug, Clone, Copy)]
pub enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
    /// A group (a proto2 form no OTLP field has): skipped whole, as prost
    /// skips it, so an unknown one is ignored and a known field's is the wrong type.
    Group,
}

/// Groups nested deeper than this are refused, as prost refuses them.
const MAX_GROUP_DEPTH: usize = 100;

/// Reads the fields of one message, in the order they were written.
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(message: &'a [u8]) -> Self {
        Self { rest: message }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(WireError::new("message ends inside a field"));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    /// Field keys and most lengths fit in one byte: that case is inlined into
    /// every reader, the general one is a call.
    #[inline(always)]
    fn varint(&mut self) -> Result<u64, WireError> {
        if let Some((&byte, rest)) = self.rest.split_first()
            && byte < 0x80
        {
            self.rest = rest;
            return Ok(u64::from(byte));
        }
        self.long_varint()
    }

    #[inline(never)]
    fn long_varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for (i, byte) in self.rest.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(WireError::new("invalid varint"))
    }

    /// The next field's number and value, `None` at the end of the message.
    #[inline(always)]
    pub fn next_field(&mut self) -> Result<Option<(u32, Wire<'a>)>, WireError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let (number, wire_type) = self.key()?;
        let value = match wire_type {
            3 | 4 => self.group(number, wire_type)?,
            other => self.value(number, other)?,
        };
        Ok(Some((number, value)))
    }

    /// A group that starts (wire type 3), skipped whole, or one that ends
    /// (4) where none started. Rare, so out of the way of the common path.
    #[cold]
    #[inline(never)]
    fn group(&mut self, number: u32, wire_type: u64) -> Result<Wire<'a>, WireError> {
        if wire_type == 4 {
            return Err(WireError::new(format!("unexpected end of group {number}")));
        }
        self.skip_group(number, 0)?;
        Ok(Wire::Group)
    }

    /// A field's number and wire type.
    #[inline(always)]
    fn key(&mut self) -> Result<(u32, u64), WireError> {
        let key = self.varint()?;
        // A key is a uint32: field numbers stop at 2^29 - 1.
        let number = u32::try_from(key)
            .ok()
            .map(|key| key >> 3)
            .filter(|n| *n > 0)
            .ok_or_else(|| WireError::new(format!("invalid field number {}", key >> 3)))?;
        Ok((number, key & 7))
    }

    /// Everything up to the end of group `number`, whose start was just read.
    fn skip_group(&mut self, number: u32, depth: usize) -> Result<(), WireError> {
        if depth >= MAX_GROUP_DEPTH {
            return Err(WireError::new("groups nested too deep"));
        }
        loop {
            if self.rest.is_empty() {
                return Err(WireError::new(format!("group {number} does not end")));
            }
            match self.key()? {
                (inner, 3) => self.skip_group(inner, depth + 1)?,
                (inner, 4) if inner == number => return Ok(()),
                (inner, 4) => {
                    return Err(WireError::new(format!(
                        "group {number} ended as group {inner}"
                    )));
                }
                (inner, wire_type) => {
                    self.value(inner, wire_type)?;
                }
            }
        }
    }

    /// The value of field `number` of `wire_type`, other than a group.
    #[inline(always)]
    fn value(&mut self, number: u32, wire_type: u64) -> Result<Wire<'a>, WireError> {
        Ok(match wire_type {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let bytes = self.take(8)?;
                Wire::Fixed64(u64::from_le_bytes(bytes.try_into().unwrap_or_default()))
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| WireError::new("length does not fit in memory"))?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                let bytes = self.take(4)?;
                Wire::Fixed32(u32::from_le_bytes(bytes.try_into().unwrap_or_default()))
            }
            other => {
                return Err(WireError::new(format!(
                    "unsupported wire type {other} for field {number}"
                )));
            }
        })
    }
}

fn wrong_type(message: &str, number: u32) -> WireError {
    WireError::new(format!("{message} field {number} has the wrong wire type"))
}

fn text<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, WireError> {
    std::str::from_utf8(bytes).map_err(|_| WireError::new(format!("{what} is not valid UTF-8")))
}

// Integer fields keep the low bits of the varint, as prost does.
fn int32(v: u64) -> i32 {
    v as i32
}

fn uint32(v: u64) -> u32 {
    v as u32
}

/// An attribute value as it came, borrowed where it is text or bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueView<'a> {
    /// An AnyValue without a value, or no AnyValue at all.
    Empty,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    /// An array or key-value list, decoded by prost.
    Nested(Box<AnyValue>),
    StrIndex(i32),
}

impl<'a> ValueView<'a> {
    #[inline(always)]
    fn parse(message: &'a [u8]) -> Result<Self, WireError> {
        let mut value = ValueView::Empty;
        let mut fields = Fields::new(message);
        while let Some((number, wire)) = fields.next_field()? {
            // A oneof: the last member present wins.
            value = match (number, wire) {
                (1, Wire::Bytes(b)) => ValueView::Str(text(b, "a string attribute value")?),
                (2, Wire::Varint(v)) => ValueView::Bool(v != 0),
                (3, Wire::Varint(v)) => ValueView::Int(v as i64),
                (4, Wire::Fixed64(v)) => ValueView::Double(f64::from_bits(v)),
                (5 | 6, Wire::Bytes(_)) => ValueView::Nested(Box::new(AnyValue::decode(message)?)),
                (7, Wire::Bytes(b)) => ValueView::Bytes(b),
                (8, Wire::Varint(v)) => ValueView::StrIndex(int32(v)),
                (1..=8, _) => return Err(wrong_type("AnyValue", number)),
                _ => continue,
            };
        }
        Ok(value)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyValueView<'a> {
    pub key: &'a str,
    pub value: ValueView<'a>,
}

impl<'a> KeyValueView<'a> {
    #[inline(always)]
    fn parse(message: &'a [u8]) -> Result<Self, WireError> {
        let mut kv = KeyValueView {
            key: "",
            value: ValueView::Empty,
        };
        let mut fields = Fields::new(message);
        while let Some((number, wire)) = fields.next_field()? {
            match (number, wire) {
                (1, Wire::Bytes(b)) => kv.key = text(b, "an attribute key")?,
                (2, Wire::Bytes(b)) => kv.value = ValueView::parse(b)?,
                // `key_strindex`: a key in a profile's string table, not used by spans.
                (3, Wire::Varint(_)) => {}
                (1..=3, _) => return Err(wrong_type("KeyValue", number)),
                _ => {}
            }
        }
        Ok(kv)
    }
}

/// Appends the attribute in `message` to `attributes`.
#[inline(always)]
fn push_attribute<'a>(
    attributes: &mut Vec<KeyValueView<'a>>,
    message: &'a [u8],
) -> Result<(), WireError> {
    attributes.push(KeyValueView::parse(message)?);
    Ok(())
}

/// `Resource`: what every span of a `ResourceSpans` shares.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ResourceView<'a> {
    pub attributes: Vec<KeyValueView<'a>>,
    pub dropped_attributes_count: u32,
}

impl<'a> ResourceView<'a> {
    /// Adds the fields of one `Resource` message (a repeated message field merges).
    fn merge(&mut self, message: &'a [u8]) -> Result<(), WireError> {
        let mut fields = Fields::new(message);
        while let Some((number, wire)) = fields.next_field()? {
            match (number, wire) {
                (1, Wire::Bytes(b)) => push_attribute(&mut self.attributes, b)?,
                (2, Wire::Varint(v)) => self.dropped_attributes_count = uint32(v),
                // `entity_refs` are not stored, but must decode as they do for
                // any OTLP receiver: a body is valid or not whatever reads it.
                (3, Wire::Bytes(b)) => {
                    EntityRef::decode(b)?;
                }
                (1..=3, _) => return Err(wrong_type("Resource", number)),
                _ => {}
            }
        }
        Ok(())
    }
}

/// `InstrumentationScope`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ScopeView<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub attributes: Vec<KeyValueView<'a>>,
    pub dropped_attributes_count: u32,
}

impl<'a> ScopeView<'a> {
    fn merge(&mut self, message: &'a [u8]) -> Result<(), WireError> {
        let mut fields = Fields::new(message);
        while let Some((number, wire)) = fields.next_field()? {
            match (number, wire) {
                (1, Wire::Bytes(b)) => self.name = text(b, "a scope name")?,
                (2, Wire::Bytes(b)) => self.version = text(b, "a scope version")?,
                (3, Wire::Bytes(b)) => push_attribute(&mut self.attributes, b)?,
                (4, Wire::Varint(v)) => self.dropped_attributes_count = uint32(v),
                (1..=4, _) => return Err(wrong_type("InstrumentationScope", number)),
                _ => {}
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct EventView<'a> {
    pub time_unix_nano: u64,
    pub name: &'a str,
    pub attributes: Vec<KeyValueView<'a>>,
    pub dropped_attributes_count: u32,
}

impl<'a> EventView<'a> {
    /// Reads an event; its attributes go into `attributes`, emptied first.
    fn parse(message: &'a [u8], mut attributes: Vec<KeyValueView<'a>>) -> Result<Self, WireError> {
        attributes.clear();
        let mut event = EventView {
            attributes,
            ..EventView::default()
        };
        let mut fields = Fields::new(message);
        while let Some((number, wire)) = fields.next_field()? {
            match (number, wire) {
                (1, Wire::Fixed64(v)) => event.time_unix_nano = v,
                (2, Wire::Bytes(b)) => event.name = text(b, "an event name")?,
                (3, Wire::Bytes(b)) => push_attribute(&mut event.attributes, b)?,
                (4, Wire::Varint(v)) => event.dropped_attributes_count = uint32(v),
                (1..=4, _) => return Err(wrong_type("Event", number)),
                _ => {}
            }
        }
        Ok(event)
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct LinkView<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a str,
    pub attributes: Vec<KeyValueView<'a>>,
    pub dropped_attributes_count: u32,
    pub flags: u32,
}

impl<'a> LinkView<'a> {
    /// Reads a link; its attributes go into `attributes`, emptied first.
    fn parse(message: &'a [u8], mut attributes: Vec<KeyValueView<'a>>) -> Result<Self, WireError> {
        attributes.clear();
        let mut link = LinkView {
            attributes,
            ..LinkView::default()
        };
        let mut fields = Fields::new(message);
        while let Some((number, wire)) = fields.next_field()? {
            match (number, wire) {
                (1, Wire::Bytes(b)) => link.trace_id = b,
                (2, Wire::Bytes(b)) => link.span_id = b,
                (3, Wire::Bytes(b)) => link.trace_state = text(b, "a link's trace_state")?,
                (4, Wire::Bytes(b)) => push_attribute(&mut link.attributes, b)?,
                (5, Wire::Varint(v)) => link.dropped_attributes_count = uint32(v),
                (6, Wire::Fixed32(v)) => link.flags = v,
                (1..=6, _) => return Err(wrong_type("Link", number)),
                _ => {}
            }
        }
        Ok(link)
    }
}

/// A span, borrowing from the request. One is reused for every span of a
/// request, so its vectors (its events' and links' too) are allocated once.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SpanView<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub trace_state: &'a str,
    pub parent_span_id: &'a [u8],
    pub flags: u32,
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Vec<KeyValueView<'a>>,
    pub dropped_attributes_count: u32,
    pub events: Vec<EventView<'a>>,
    pub dropped_events_count: u32,
    pub links: Vec<LinkView<'a>>,
    pub dropped_links_count: u32,
    pub status_code: i32,
    pub status_message: &'a str,
    /// Attribute vectors of earlier spans' events and links, for reuse.
    spare: Vec<Vec<KeyValueView<'a>>>,
}

impl<'a> SpanView<'a> {
    /// Reads `message` into `self`, replacing what it held.
    pub fn read(&mut self, message: &'a [u8]) -> Result<(), WireError> {
        let mut attributes = std::mem::take(&mut self.attributes);
        let mut events = std::mem::take(&mut self.events);
        let mut links = std::mem::take(&mut self.links);
        let mut spare = std::mem::take(&mut self.spare);
        attributes.clear();
        spare.extend(events.drain(..).map(|e| e.attributes));
        spare.extend(links.drain(..).map(|l| l.attributes));
        *self = SpanView {
            attributes,
            events,
            links,
            spare,
            ..SpanView::default()
        };
        let mut fields = Fields::new(message);
        while let Some((number, wire)) = fields.next_field()? {
            match (number, wire) {
                (1, Wire::Bytes(b)) => self.trace_id = b,
                (2, Wire::Bytes(b)) => self.span_id = b,
                (3, Wire::Bytes(b)) => self.trace_state = text(b, "a span's trace_state")?,
                (4, Wire::Bytes(b)) => self.parent_span_id = b,
                (5, Wire::Bytes(b)) => self.name = text(b, "a span name")?,
                (6, Wire::Varint(v)) => self.kind = int32(v),
                (7, Wire::Fixed64(v)) => self.start_time_unix_nano = v,
                (8, Wire::Fixed64(v)) => self.end_time_unix_nano = v,
                (9, Wire::Bytes(b)) => push_attribute(&mut self.attributes, b)?,
                (10, Wire::Varint(v)) => self.dropped_attributes_count = uint32(v),
                (11, Wire::Bytes(b)) => {
                    let attributes = self.spare.pop().unwrap_or_default();
                    self.events.push(EventView::parse(b, attributes)?);
                }
                (12, Wire::Varint(v)) => self.dropped_events_count = uint32(v),
                (13, Wire::Bytes(b)) => {
                    let attributes = self.spare.pop().unwrap_or_default();
                    self.links.push(LinkView::parse(b, attributes)?);
                }
                (14, Wire::Varint(v)) => self.dropped_links_count = uint32(v),
                (15, Wire::Bytes(b)) => self.merge_status(b)?,
                (16, Wire::Fixed32(v)) => self.flags = v,
                (1..=16, _) => return Err(wrong_type("Span", number)),
                _ => {}
            }
        }
        Ok(())
    }

    /// The trace id and start time of the span in `message`, read no further
    /// than needed: the first of each, which is what `read` gives unless a
    /// field is repeated. For ordering, where a rare difference costs nothing.
    pub fn storage_key(message: &'a [u8]) -> Result<(&'a [u8], u64), WireError> {
        let (mut trace_id, mut start_time_unix_nano) = (None, None);
        let mut fields = Fields::new(message);
        while let Some((number, wire)) = fields.next_field()? {
            match (number, wire) {
                (1, Wire::Bytes(b)) => trace_id = Some(b),
                (7, Wire::Fixed64(v)) => start_time_unix_nano = Some(v),
                (1 | 7, _) => return Err(wrong_type("Span", number)),
                _ => {}
            }
            if let (Some(trace_id), Some(start)) = (trace_id, start_time_unix_nano) {
                return Ok((trace_id, start));
            }
        }
        Ok((
            trace_id.unwrap_or_default(),
            start_time_unix_nano.unwrap_or_default(),
        ))
    }

    fn merge_status(&mut self, message: &'a [u8]) -> Result<(), WireError> {
        let mut fields = Fields::new(message);
        while let Some((number, wire)) = fields.next_field()? {
            match (number, wire) {
                (2, Wire::Bytes(b)) => self.status_message = text(b, "a status message")?,
                (3, Wire::Varint(v)) => self.status_code = int32(v),
                (2 | 3, _) => return Err(wrong_type("Status", number)),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The parts of a `ResourceSpans` or `ScopeSpans` message: the shared
/// context (resource or scope), the items (scope spans or spans) and the
/// schema URL. The items are returned as raw messages, read later: the
/// schema URL may come after them.
pub struct Group<'a> {
    pub context: Vec<&'a [u8]>,
    pub items: Vec<&'a [u8]>,
    pub schema_url: &'a str,
}

impl<'a> Group<'a> {
    /// Splits a `ResourceSpans` (or `ScopeSpans`: both number their fields
    /// 1 context, 2 items, 3 schema URL).
    pub fn split(message: &'a [u8], what: &str) -> Result<Self, WireError> {
        let mut group = Group {
            context: Vec::new(),
            items: Vec::new(),
            schema_url: "",
        };
        let mut fields = Fields::new(message);
        while let Some((number, wire)) = fields.next_field()? {
            match (number, wire) {
                (1, Wire::Bytes(b)) => group.context.push(b),
                (2, Wire::Bytes(b)) => group.items.push(b),
                (3, Wire::Bytes(b)) => group.schema_url = text(b, "a schema URL")?,
                (1..=3, _) => return Err(wrong_type(what, number)),
                _ => {}
            }
        }
        Ok(group)
    }

    pub fn resource(&self) -> Result<Option<ResourceView<'a>>, WireError> {
        if self.context.is_empty() {
            return Ok(None);
        }
        let mut resource = ResourceView::default();
        for message in &self.context {
            resource.merge(message)?;
        }
        Ok(Some(resource))
    }

    pub fn scope(&self) -> Result<Option<ScopeView<'a>>, WireError> {
        if self.context.is_empty() {
            return Ok(None);
        }
        let mut scope = ScopeView::default();
        for message in &self.context {
            scope.merge(message)?;
        }
        Ok(Some(scope))
    }
}

/// The `ResourceSpans` messages of an `ExportTraceServiceRequest`.
pub fn resource_spans(request: &[u8]) -> Result<Vec<&[u8]>, WireError> {
    let mut found = Vec::new();
    let mut fields = Fields::new(request);
    while let Some((number, wire)) = fields.next_field()? {
        match (number, wire) {
            (1, Wire::Bytes(b)) => found.push(b),
            (1, _) => return Err(wrong_type("ExportTraceServiceRequest", number)),
            _ => {}
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_or_mistyped_message_is_malformed_not_a_panic() {
        // Field 1, length 5, only 2 bytes follow.
        assert!(resource_spans(&[0x0a, 0x05, 0x01, 0x02]).is_err());
        // Field 1 as a varint where a message belongs.
        assert!(resource_spans(&[0x08, 0x01]).is_err());
        // A varint that never ends.
        assert!(resource_spans(&[0x08; 11]).is_err());
        // Field number 0.
        assert!(resource_spans(&[0x02, 0x00]).is_err());
        // A group (wire type 3).
        assert!(resource_spans(&[0x0b]).is_err());
        // Every prefix of a valid message either reads or fails cleanly.
        let mut span = SpanView::default();
        let message = [0x2a, 0x02, b'o', b'p', 0x39, 1, 0, 0, 0, 0, 0, 0, 0];
        assert!(span.read(&message).is_ok());
        assert_eq!((span.name, span.start_time_unix_nano), ("op", 1));
        for end in 0..message.len() {
            let _ = span.read(&message[..end]);
        }
    }

    #[test]
    fn a_reused_view_holds_only_the_current_spans_event_and_link_attributes() {
        use opentelemetry_proto::tonic::common::v1::KeyValue;
        use opentelemetry_proto::tonic::trace::v1::Span;
        use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};

        let attributes = |keys: &[&str]| -> Vec<KeyValue> {
            keys.iter()
                .map(|key| KeyValue {
                    key: (*key).into(),
                    ..KeyValue::default()
                })
                .collect()
        };
        let span = |event_keys: &[&str], link_keys: &[&str]| {
            Span {
                events: vec![Event {
                    attributes: attributes(event_keys),
                    ..Event::default()
                }],
                links: vec![Link {
                    attributes: attributes(link_keys),
                    ..Link::default()
                }],
                ..Span::default()
            }
            .encode_to_vec()
        };
        let (first, second) = (span(&["a", "b", "c"], &["d", "e"]), span(&["f"], &[]));
        let mut view = SpanView::default();
        assert!(view.read(&first).is_ok());
        assert!(view.read(&second).is_ok());
        let keys = |attributes: &[KeyValueView<'_>]| -> Vec<String> {
            attributes.iter().map(|kv| kv.key.to_owned()).collect()
        };
        assert_eq!(view.events.len(), 1);
        assert_eq!(keys(&view.events[0].attributes), ["f"]);
        assert_eq!(view.links.len(), 1);
        assert!(view.links[0].attributes.is_empty());
    }

    #[test]
    fn text_must_be_utf8() {
        let mut span = SpanView::default();
        let error = span.read(&[0x2a, 0x01, 0xff]);
        assert_eq!(
            error.map_err(|e| e.to_string()),
            Err("a span name is not valid UTF-8".to_owned())
        );
    }
}
