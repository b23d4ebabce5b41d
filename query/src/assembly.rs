//! Turning the spans of one trace, as stored, into a tree that can be shown.
//!
//! Real traces are untidy: exporters re-send spans (duplicates), parents get
//! lost or arrive later than their children (orphans), and hosts disagree about
//! the time (a child that starts before its parent). [`assemble`] keeps every
//! span it was given, says what it changed and why in warnings, and never
//! recurses, so a trace of 100,000 spans is as safe as one of ten.

use std::collections::HashMap;

use crate::traces::{AttributeValue, SpanData};

/// One span in its tree.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSpan {
    /// The span, with `start_ns` (and its events' times) already corrected for clock skew.
    pub span: SpanData,
    /// Index of the parent in [`AssembledTrace::spans`]; `None` for roots and orphans.
    pub parent: Option<usize>,
    /// Children by start time.
    pub children: Vec<usize>,
    pub depth: usize,
    /// What was added to the stored start time to correct clock skew (0: unchanged).
    pub skew_adjustment_ns: i64,
    /// `true` when the span names a parent that is not in the trace (or whose
    /// parent links loop); such spans are shown as roots.
    pub orphan: bool,
    /// Time this span spent on the critical path.
    pub critical_ns: i64,
    pub warnings: Vec<String>,
}

impl TraceSpan {
    pub fn end_ns(&self) -> i64 {
        self.span.start_ns + self.span.duration_ns
    }
}

/// A stretch of time during which one span determined the trace's latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriticalSegment {
    pub span: usize,
    pub start_ns: i64,
    pub end_ns: i64,
}

/// A trace ready to show: spans in depth-first order (each parent before its
/// children, siblings by start time), roots first by start time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AssembledTrace {
    pub trace_id: String,
    pub spans: Vec<TraceSpan>,
    pub roots: Vec<usize>,
    /// The critical path from the main root, latest segment first.
    pub critical_path: Vec<CriticalSegment>,
    pub start_ns: i64,
    pub end_ns: i64,
    /// Copies of a span that were dropped because they were identical to one kept.
    pub duplicates_dropped: usize,
    pub warnings: Vec<String>,
}

impl AssembledTrace {
    pub fn duration_ns(&self) -> i64 {
        self.end_ns - self.start_ns
    }

    /// The root that starts first (the trace's entry point), if any.
    pub fn main_root(&self) -> Option<&TraceSpan> {
        self.roots.first().map(|&i| &self.spans[i])
    }

    pub fn error_count(&self) -> usize {
        self.spans
            .iter()
            .filter(|s| s.span.status_code == "ERROR")
            .count()
    }

    /// Services in order of first appearance, with their span counts.
    pub fn services(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for span in &self.spans {
            match counts
                .iter_mut()
                .find(|(name, _)| *name == span.span.service_name)
            {
                Some((_, n)) => *n += 1,
                None => counts.push((span.span.service_name.clone(), 1)),
            }
        }
        counts
    }
}

/// Builds the tree of one trace's spans (any order, any mix of duplicates).
pub fn assemble(trace_id: &str, spans: Vec<SpanData>) -> AssembledTrace {
    let mut trace = AssembledTrace {
        trace_id: trace_id.to_owned(),
        ..Default::default()
    };
    let spans = drop_duplicates(spans, &mut trace);
    if spans.is_empty() {
        return trace;
    }

    // Parent links by span id; where ids collide, children attach to the first
    // copy by start time.
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by(|&a, &b| {
        (spans[a].start_ns, &spans[a].span_id).cmp(&(spans[b].start_ns, &spans[b].span_id))
    });
    let mut by_id: HashMap<&str, usize> = HashMap::with_capacity(spans.len());
    let mut shared_ids = 0;
    for &i in &order {
        if by_id.insert(spans[i].span_id.as_str(), i).is_some() {
            shared_ids += 1;
        }
    }
    // `insert` kept the last copy; point every id at its first copy instead.
    for &i in order.iter().rev() {
        by_id.insert(spans[i].span_id.as_str(), i);
    }
    let mut parent_of: Vec<Option<usize>> = vec![None; spans.len()];
    let mut orphan = vec![false; spans.len()];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for &i in &order {
        match spans[i].parent_span_id.as_deref() {
            Some(parent_id) => match by_id.get(parent_id).copied().filter(|&p| p != i) {
                Some(p) => {
                    parent_of[i] = Some(p);
                    children[p].push(i);
                }
                None => {
                    orphan[i] = true;
                    roots.push(i);
                }
            },
            None => roots.push(i),
        }
    }
    // A cycle of parent links (corrupt ids) leaves spans unreachable from any root;
    // the earliest span of each cycle becomes a root so nothing disappears.
    let mut reached = vec![false; spans.len()];
    let mut in_cycle = vec![false; spans.len()];
    mark_reached(&roots, &children, &mut reached);
    for &i in &order {
        if !reached[i] {
            if let Some(p) = parent_of[i].take() {
                children[p].retain(|&c| c != i);
            }
            in_cycle[i] = true;
            roots.push(i);
            mark_reached(&[i], &children, &mut reached);
        }
    }

    // Depth-first order, iteratively.
    let mut new_index = vec![0usize; spans.len()];
    let mut visit_order = Vec::with_capacity(spans.len());
    let mut depth = vec![0usize; spans.len()];
    let mut stack: Vec<usize> = roots.iter().rev().copied().collect();
    while let Some(i) = stack.pop() {
        new_index[i] = visit_order.len();
        visit_order.push(i);
        for &c in children[i].iter().rev() {
            depth[c] = depth[i] + 1;
            stack.push(c);
        }
    }
    let mut slots: Vec<Option<SpanData>> = spans.into_iter().map(Some).collect();
    trace.spans = visit_order
        .iter()
        .map(|&i| {
            let span = slots[i].take().unwrap_or_default();
            let mut warnings = Vec::new();
            if in_cycle[i] {
                warnings.push("this span's parent links form a cycle; shown as a root".to_owned());
            } else if let (true, Some(parent)) = (orphan[i], &span.parent_span_id) {
                warnings.push(format!(
                    "parent span {parent} is not in this trace (not received, or still in flight)"
                ));
            }
            TraceSpan {
                span,
                parent: parent_of[i].map(|p| new_index[p]),
                children: children[i].iter().map(|&c| new_index[c]).collect(),
                depth: depth[i],
                skew_adjustment_ns: 0,
                orphan: orphan[i] || in_cycle[i],
                critical_ns: 0,
                warnings,
            }
        })
        .collect();
    trace.roots = roots.iter().map(|&r| new_index[r]).collect();
    trace
        .roots
        .sort_by_key(|&r| (trace.spans[r].span.start_ns, r));
    if shared_ids > 0 {
        trace.warnings.push(format!(
            "{shared_ids} span(s) share a span id with a different span; each is shown, children attach to the earliest"
        ));
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for span in &trace.spans {
            *seen.entry(span.span.span_id.as_str()).or_default() += 1;
        }
        let shared: Vec<bool> = trace
            .spans
            .iter()
            .map(|s| seen[s.span.span_id.as_str()] > 1)
            .collect();
        for (span, shared) in trace.spans.iter_mut().zip(shared) {
            if shared {
                span.warnings.push(format!(
                    "another span in this trace has the same span id {}",
                    span.span.span_id
                ));
            }
        }
    }
    let orphans = trace.spans.iter().filter(|s| s.orphan).count();
    if orphans > 0 {
        trace.warnings.push(format!(
            "{orphans} span(s) have a parent that is not in this trace; they are shown as roots"
        ));
    }

    adjust_clock_skew(&mut trace);
    trace.start_ns = trace
        .spans
        .iter()
        .map(|s| s.span.start_ns)
        .min()
        .unwrap_or_default();
    trace.end_ns = trace
        .spans
        .iter()
        .map(TraceSpan::end_ns)
        .max()
        .unwrap_or_default();
    compute_critical_path(&mut trace);
    trace
}

fn mark_reached(from: &[usize], children: &[Vec<usize>], reached: &mut [bool]) {
    let mut stack: Vec<usize> = from.to_vec();
    while let Some(i) = stack.pop() {
        if !reached[i] {
            reached[i] = true;
            stack.extend(children[i].iter().copied());
        }
    }
}

/// Exporters retry, so the same span can be stored more than once: identical
/// copies are dropped; spans that merely share an id are all kept.
fn drop_duplicates(spans: Vec<SpanData>, trace: &mut AssembledTrace) -> Vec<SpanData> {
    let mut kept: Vec<SpanData> = Vec::with_capacity(spans.len());
    let mut first_by_id: HashMap<String, Vec<usize>> = HashMap::with_capacity(spans.len());
    for span in spans {
        let copies = first_by_id.entry(span.span_id.clone()).or_default();
        if copies.iter().any(|&k| kept[k] == span) {
            trace.duplicates_dropped += 1;
            continue;
        }
        copies.push(kept.len());
        kept.push(span);
    }
    if trace.duplicates_dropped > 0 {
        trace.warnings.push(format!(
            "{} identical copies of spans were received more than once (exporter retries) and are shown once",
            trace.duplicates_dropped
        ));
    }
    kept
}

/// Which clock a span was timed by: its service instance (or host).
fn clock_of(span: &SpanData) -> (String, String) {
    let instance = span
        .resource_attributes
        .iter()
        .find(|a| a.key == "service.instance.id" || a.key == "host.name")
        .map(|a| match &a.value {
            AttributeValue::String(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default();
    (span.service_name.clone(), instance)
}

/// Jaeger's clock-skew adjustment: a child timed by another clock than its
/// parent's that does not fit inside its parent is moved so it sits in the
/// middle of the parent (the network latency split evenly both ways), and its
/// same-clock descendants move with it. A child longer than its parent cannot
/// be placed and is left as it is, flagged.
fn adjust_clock_skew(trace: &mut AssembledTrace) {
    let clocks: Vec<(String, String)> = trace.spans.iter().map(|s| clock_of(&s.span)).collect();
    // Depth-first order means every parent is adjusted before its children.
    let mut delta = vec![0i64; trace.spans.len()];
    for i in 0..trace.spans.len() {
        let Some(p) = trace.spans[i].parent else {
            continue;
        };
        if clocks[i] == clocks[p] {
            delta[i] = delta[p];
        } else {
            let (parent_start, parent_duration) = (
                trace.spans[p].span.start_ns,
                trace.spans[p].span.duration_ns,
            );
            // The child's own clock: its parent's correction does not apply to it.
            let child = &trace.spans[i].span;
            let (start, duration) = (child.start_ns, child.duration_ns);
            let fits = start >= parent_start && start + duration <= parent_start + parent_duration;
            delta[i] = if fits {
                0
            } else if duration > parent_duration {
                let note = if start < parent_start {
                    "starts before its parent"
                } else {
                    "ends after its parent"
                };
                trace.spans[i].warnings.push(format!(
                    "{note} and is longer than it, so clock skew cannot be corrected (parent in {}, this span in {})",
                    clocks[p].0, clocks[i].0
                ));
                0
            } else {
                let latency = (parent_duration - duration) / 2;
                parent_start + latency - child.start_ns
            };
        }
        if delta[i] != 0 {
            let span = &mut trace.spans[i];
            span.span.start_ns += delta[i];
            for event in &mut span.span.events {
                event.time_ns += delta[i];
            }
            span.skew_adjustment_ns = delta[i];
            if clocks[i] != clocks[p] || delta[i] != delta[p] {
                span.warnings.push(format!(
                    "clock skew: this span's times were shifted by {} so that it fits inside its parent",
                    format_ns(delta[i])
                ));
            }
        }
    }
    let adjusted = delta.iter().filter(|&&d| d != 0).count();
    if adjusted > 0 {
        trace.warnings.push(format!(
            "{adjusted} span(s) were shifted to correct clock skew between services"
        ));
    }
}

fn format_ns(ns: i64) -> String {
    let abs = ns.unsigned_abs();
    let sign = if ns < 0 { "-" } else { "+" };
    if abs >= 1_000_000 {
        format!("{sign}{:.3}ms", abs as f64 / 1e6)
    } else {
        format!("{sign}{:.3}µs", abs as f64 / 1e3)
    }
}

/// The critical path as Jaeger's UI computes it: walking back from the end of
/// the main root, the last child to finish before the current moment is what
/// the parent was waiting for; time no child covers is the parent's own. Children
/// are first clipped to their parent's time (async work that outlives its
/// parent did not delay it).
fn compute_critical_path(trace: &mut AssembledTrace) {
    let Some(&root) = trace
        .roots
        .iter()
        .max_by_key(|&&r| (trace.spans[r].end_ns(), std::cmp::Reverse(r)))
    else {
        return;
    };
    let n = trace.spans.len();
    let mut clipped: Vec<(i64, i64)> = trace
        .spans
        .iter()
        .map(|s| (s.span.start_ns, s.end_ns()))
        .collect();
    let mut live = vec![true; n];
    // Depth-first order: parents are clipped before their children.
    for i in 0..n {
        if let Some(p) = trace.spans[i].parent {
            let (parent_start, parent_end) = clipped[p];
            let (start, end) = clipped[i];
            live[i] = live[p] && start < parent_end && end > parent_start;
            clipped[i] = (start.max(parent_start), end.min(parent_end));
        }
    }
    // Children by clipped end, latest first; `next` is how far each list was consumed.
    let by_end: Vec<Vec<usize>> = trace
        .spans
        .iter()
        .map(|s| {
            let mut kids: Vec<usize> = s.children.iter().copied().filter(|&c| live[c]).collect();
            kids.sort_by_key(|&c| (std::cmp::Reverse(clipped[c].1), c));
            kids
        })
        .collect();
    let mut next = vec![0usize; n];
    let mut path = Vec::new();
    let (mut current, mut cursor) = (root, clipped[root].1);
    loop {
        let kids = &by_end[current];
        let mut found = None;
        while next[current] < kids.len() {
            let c = kids[next[current]];
            next[current] += 1;
            if clipped[c].1 <= cursor {
                found = Some(c);
                break;
            }
        }
        match found {
            Some(child) => {
                if cursor > clipped[child].1 {
                    path.push(CriticalSegment {
                        span: current,
                        start_ns: clipped[child].1,
                        end_ns: cursor,
                    });
                }
                current = child;
                cursor = clipped[child].1;
            }
            None => {
                let start = clipped[current].0;
                if cursor > start {
                    path.push(CriticalSegment {
                        span: current,
                        start_ns: start,
                        end_ns: cursor,
                    });
                }
                match trace.spans[current].parent {
                    Some(parent) if current != root => {
                        cursor = cursor.min(start);
                        current = parent;
                    }
                    _ => break,
                }
            }
        }
    }
    for segment in &path {
        trace.spans[segment.span].critical_ns += segment.end_ns - segment.start_ns;
    }
    trace.critical_path = path;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traces::Attribute;

    fn span(id: &str, parent: Option<&str>, service: &str, start: i64, duration: i64) -> SpanData {
        SpanData {
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_owned),
            name: format!("op-{id}"),
            kind: "SERVER".into(),
            start_ns: start,
            duration_ns: duration,
            status_code: "UNSET".into(),
            service_name: service.into(),
            ..Default::default()
        }
    }

    fn ids(trace: &AssembledTrace) -> Vec<&str> {
        trace
            .spans
            .iter()
            .map(|s| s.span.span_id.as_str())
            .collect()
    }

    #[test]
    fn out_of_order_spans_form_a_depth_first_tree() {
        let spans = vec![
            span("c2", Some("b"), "s", 50, 10),
            span("a", None, "s", 0, 100),
            span("c1", Some("b"), "s", 20, 10),
            span("b", Some("a"), "s", 10, 80),
            span("d", Some("a"), "s", 95, 5),
        ];
        let trace = assemble("t", spans);
        assert_eq!(ids(&trace), ["a", "b", "c1", "c2", "d"]);
        let depths: Vec<usize> = trace.spans.iter().map(|s| s.depth).collect();
        assert_eq!(depths, [0, 1, 2, 2, 1]);
        assert_eq!(trace.roots, [0]);
        assert_eq!(trace.spans[1].children, [2, 3]);
        assert_eq!(trace.spans[4].parent, Some(0));
        assert!(trace.warnings.is_empty());
        assert_eq!((trace.start_ns, trace.end_ns), (0, 100));
    }

    #[test]
    fn orphans_are_kept_as_roots_and_flagged() {
        let trace = assemble(
            "t",
            vec![
                span("a", None, "s", 0, 100),
                span("x", Some("missing"), "s", 10, 5),
            ],
        );
        assert_eq!(ids(&trace), ["a", "x"]);
        assert_eq!(trace.roots, [0, 1]);
        assert!(trace.spans[1].orphan);
        assert!(trace.spans[1].warnings[0].contains("parent span missing is not in this trace"));
        assert!(
            trace
                .warnings
                .iter()
                .any(|w| w.contains("1 span(s) have a parent"))
        );
    }

    #[test]
    fn identical_copies_are_dropped_and_distinct_spans_with_one_id_kept() {
        let a = span("a", None, "s", 0, 100);
        let mut other_b = span("b", Some("a"), "s", 30, 10);
        other_b.name = "other".into();
        let trace = assemble(
            "t",
            vec![
                a.clone(),
                a,
                span("b", Some("a"), "s", 10, 10),
                other_b,
                span("c", Some("b"), "s", 12, 2),
            ],
        );
        assert_eq!(trace.duplicates_dropped, 1);
        assert_eq!(ids(&trace), ["a", "b", "c", "b"]);
        // Children attach to the earliest copy of a shared id.
        assert_eq!(trace.spans[2].parent, Some(1));
        assert!(
            trace.spans[3]
                .warnings
                .iter()
                .any(|w| w.contains("same span id"))
        );
        assert_eq!(trace.warnings.len(), 2);
    }

    #[test]
    fn a_child_on_a_skewed_clock_is_centred_in_its_parent_with_its_subtree() {
        // The server's clock is 1 s behind: its span starts before the client's.
        let spans = vec![
            span("client", None, "frontend", 1_000_000_000, 100),
            span("server", Some("client"), "backend", 10, 60),
            span("inner", Some("server"), "backend", 20, 10),
        ];
        let trace = assemble("t", spans);
        let server = &trace.spans[1];
        assert_eq!(server.span.start_ns, 1_000_000_000 + 20);
        assert_eq!(server.skew_adjustment_ns, 1_000_000_000 + 10);
        assert!(server.warnings[0].starts_with("clock skew"));
        // Same clock as the server: moved by the same amount, no separate warning.
        assert_eq!(trace.spans[2].span.start_ns, 1_000_000_000 + 30);
        assert!(trace.spans[2].warnings.is_empty());
        assert_eq!(trace.start_ns, 1_000_000_000);
    }

    #[test]
    fn a_child_that_fits_or_shares_the_clock_is_left_alone() {
        let spans = vec![
            span("a", None, "frontend", 100, 100),
            span("b", Some("a"), "backend", 120, 50),
            // Same service and instance as its parent: never adjusted, even if outside.
            span("c", Some("a"), "frontend", 50, 10),
        ];
        let trace = assemble("t", spans);
        assert!(trace.spans.iter().all(|s| s.skew_adjustment_ns == 0));
    }

    #[test]
    fn a_child_longer_than_its_parent_is_flagged_not_moved() {
        let trace = assemble(
            "t",
            vec![
                span("a", None, "frontend", 100, 10),
                span("b", Some("a"), "backend", 50, 500),
            ],
        );
        assert_eq!(trace.spans[1].span.start_ns, 50);
        assert!(trace.spans[1].warnings[0].contains("cannot be corrected"));
    }

    #[test]
    fn different_instances_of_one_service_are_different_clocks() {
        let mut parent = span("a", None, "svc", 1000, 100);
        parent.resource_attributes = vec![Attribute {
            key: "service.instance.id".into(),
            value: AttributeValue::String("1".into()),
        }];
        let mut child = span("b", Some("a"), "svc", 0, 20);
        child.resource_attributes = vec![Attribute {
            key: "service.instance.id".into(),
            value: AttributeValue::String("2".into()),
        }];
        let trace = assemble("t", vec![parent, child]);
        assert_eq!(trace.spans[1].span.start_ns, 1040);
    }

    #[test]
    fn critical_path_follows_the_last_finishing_child() {
        //  root  0..100
        //   a    10..40   (still running when b starts, but b finishes later:
        //                  the root waited for b, so a is off the path)
        //   b    20..70
        //     b1 30..60
        //   c    75..90
        let spans = vec![
            span("root", None, "s", 0, 100),
            span("a", Some("root"), "s", 10, 30),
            span("b", Some("root"), "s", 20, 50),
            span("b1", Some("b"), "s", 30, 30),
            span("c", Some("root"), "s", 75, 15),
        ];
        let trace = assemble("t", spans);
        let path: Vec<(&str, i64, i64)> = trace
            .critical_path
            .iter()
            .map(|s| {
                (
                    trace.spans[s.span].span.span_id.as_str(),
                    s.start_ns,
                    s.end_ns,
                )
            })
            .collect();
        assert_eq!(
            path,
            [
                ("root", 90, 100),
                ("c", 75, 90),
                ("root", 70, 75),
                ("b", 60, 70),
                ("b1", 30, 60),
                ("b", 20, 30),
                ("root", 0, 20)
            ]
        );
        let total: i64 = trace.spans.iter().map(|s| s.critical_ns).sum();
        assert_eq!(total, 100);
    }

    #[test]
    fn async_children_outliving_their_parent_are_clipped() {
        let spans = vec![
            span("root", None, "s", 0, 100),
            span("async", Some("root"), "s", 50, 500),
        ];
        let trace = assemble("t", spans);
        let total: i64 = trace.spans.iter().map(|s| s.critical_ns).sum();
        assert_eq!(total, 100);
        assert_eq!(trace.spans[1].critical_ns, 50);
    }

    #[test]
    fn a_hundred_thousand_span_chain_does_not_overflow_the_stack() {
        let n = 100_000;
        let spans: Vec<SpanData> = (0..n)
            .map(|i| {
                let parent = (i > 0).then(|| format!("s{}", i - 1));
                span(
                    &format!("s{i}"),
                    parent.as_deref(),
                    "s",
                    i as i64,
                    (2 * n - 2 * i) as i64,
                )
            })
            .collect();
        let trace = assemble("t", spans);
        assert_eq!(trace.spans.len(), n);
        assert_eq!(trace.spans[n - 1].depth, n - 1);
        assert_eq!(
            trace.spans.iter().map(|s| s.critical_ns).sum::<i64>(),
            trace.duration_ns()
        );
    }

    #[test]
    fn a_parent_cycle_still_shows_every_span() {
        let trace = assemble(
            "t",
            vec![
                span("a", Some("b"), "s", 0, 10),
                span("b", Some("a"), "s", 1, 5),
            ],
        );
        assert_eq!(trace.spans.len(), 2);
        assert_eq!(trace.roots.len(), 1);
        assert!(trace.spans[0].warnings[0].contains("cycle"));
    }
}
