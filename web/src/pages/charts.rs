//! SVG charts drawn on the server: plain strings, no JavaScript. Every text
//! that came from spans goes through [`escape`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::format::{duration, short_time};

/// Escapes text for HTML and SVG (element content and quoted attributes).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A stable colour per service name, the same on every page.
pub fn service_colour(service: &str) -> String {
    let hash = service.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    format!("hsl({}, 55%, 52%)", hash % 360)
}

/// One trace in the duration-over-time scatter plot.
pub struct Dot {
    pub time_ns: i64,
    pub duration_ns: i64,
    pub error: bool,
    pub href: String,
    pub label: String,
}

const WIDTH: f64 = 960.0;
const PLOT_LEFT: f64 = 64.0;
const PLOT_RIGHT: f64 = 12.0;

fn x_of(time_ns: i64, start_ns: i64, end_ns: i64) -> f64 {
    let span = (end_ns - start_ns).max(1) as f64;
    PLOT_LEFT + (time_ns - start_ns) as f64 / span * (WIDTH - PLOT_LEFT - PLOT_RIGHT)
}

/// Time ticks along the bottom of a chart of `height`.
fn time_axis(svg: &mut String, start_ns: i64, end_ns: i64, height: f64) {
    for i in 0..=4 {
        let t = start_ns + (end_ns - start_ns) * i / 4;
        let x = x_of(t, start_ns, end_ns);
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            svg,
            r#"<text class="tick" x="{x:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
            height - 4.0,
            short_time(t)
        );
    }
}

/// Trace duration over time; each dot links to its trace. The y axis is
/// logarithmic so a few slow traces do not flatten the rest.
pub fn scatter(dots: &[Dot], start_ns: i64, end_ns: i64) -> String {
    let height = 200.0;
    let (top, bottom) = (10.0, height - 24.0);
    let max = dots.iter().map(|d| d.duration_ns).max().unwrap_or(1).max(1) as f64;
    let min = dots.iter().map(|d| d.duration_ns).min().unwrap_or(1).max(1) as f64;
    let (log_min, log_max) = (
        min.log10().floor(),
        max.log10().ceil().max(min.log10().floor() + 1.0),
    );
    let y_of = |ns: i64| {
        bottom - ((ns.max(1) as f64).log10() - log_min) / (log_max - log_min) * (bottom - top)
    };
    let mut svg = format!(
        r#"<svg class="chart scatter" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="trace duration over time">"#
    );
    let mut exponent = log_min;
    while exponent <= log_max {
        let ns = 10f64.powf(exponent) as i64;
        let y = y_of(ns);
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{PLOT_LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - PLOT_RIGHT,
            PLOT_LEFT - 6.0,
            y + 4.0,
            duration(ns)
        );
        exponent += 1.0;
    }
    time_axis(&mut svg, start_ns, end_ns, height);
    for dot in dots {
        let class = if dot.error { "dot error" } else { "dot" };
        let _ = write!(
            svg,
            r#"<a href="{}"><circle class="{class}" cx="{:.1}" cy="{:.1}" r="5"><title>{}</title></circle></a>"#,
            escape(&dot.href),
            x_of(dot.time_ns, start_ns, end_ns),
            y_of(dot.duration_ns),
            escape(&dot.label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A line per series over time buckets; `format` renders the y ticks.
pub fn line_chart(
    title: &str,
    series: &[(&str, Vec<(i64, f64)>)],
    start_ns: i64,
    end_ns: i64,
    format: fn(f64) -> String,
) -> String {
    let height = 160.0;
    let (top, bottom) = (22.0, height - 24.0);
    let max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let max = if max > 0.0 { max * 1.1 } else { 1.0 };
    let y_of = |v: f64| bottom - v / max * (bottom - top);
    let mut svg = format!(
        r#"<svg class="chart line" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{}">"#,
        escape(title)
    );
    let _ = write!(
        svg,
        r#"<text class="chart-title" x="{PLOT_LEFT}" y="14">{}</text>"#,
        escape(title)
    );
    for i in 0..=2 {
        let v = max * f64::from(i) / 2.0;
        let y = y_of(v);
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{PLOT_LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - PLOT_RIGHT,
            PLOT_LEFT - 6.0,
            y + 4.0,
            format(v)
        );
    }
    time_axis(&mut svg, start_ns, end_ns, height);
    for (index, (name, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x_of(*t, start_ns, end_ns), y_of(*v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="series s{index}" points="{}"><title>{}</title></polyline>"#,
            path.join(" "),
            escape(name)
        );
        let _ = write!(
            svg,
            r#"<text class="legend s{index}" x="{:.1}" y="14" text-anchor="end">{}</text>"#,
            WIDTH - PLOT_RIGHT - 90.0 * (series.len() - 1 - index) as f64,
            escape(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A tiny line of values, for tables.
pub fn sparkline(values: &[f64]) -> String {
    let (width, height) = (120.0, 24.0);
    let max = values
        .iter()
        .copied()
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let step = if values.len() > 1 {
        width / (values.len() - 1) as f64
    } else {
        width
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                height - 2.0 - v / max * (height - 4.0)
            )
        })
        .collect();
    format!(
        r#"<svg class="sparkline" viewBox="0 0 {width} {height}" width="{width}" height="{height}" aria-hidden="true"><polyline points="{}"/></svg>"#,
        points.join(" ")
    )
}

/// One histogram bar: a latency bucket and the search that lists its traces.
pub struct Bar {
    pub label: String,
    pub count: u64,
    pub href: String,
}

/// Bars of a latency histogram; each bar links to the traces in it.
pub fn histogram(bars: &[Bar]) -> String {
    let height = 140.0;
    let (top, bottom) = (8.0, height - 30.0);
    let max = bars.iter().map(|b| b.count).max().unwrap_or(1).max(1) as f64;
    let slot = (WIDTH - PLOT_LEFT - PLOT_RIGHT) / bars.len().max(1) as f64;
    let mut svg = format!(
        r#"<svg class="chart histogram" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="latency histogram">"#
    );
    let _ = write!(
        svg,
        r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
        PLOT_LEFT - 6.0,
        top + 8.0,
        max as u64
    );
    for (i, bar) in bars.iter().enumerate() {
        let x = PLOT_LEFT + i as f64 * slot;
        let bar_height = bar.count as f64 / max * (bottom - top);
        let _ = write!(
            svg,
            r#"<a href="{}"><rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{}: {} requests</title></rect></a>"#,
            escape(&bar.href),
            x + 1.0,
            bottom - bar_height,
            (slot - 2.0).max(1.0),
            bar_height.max(if bar.count > 0 { 1.0 } else { 0.0 }),
            escape(&bar.label),
            bar.count
        );
        // Label every bar when few, else every other one, so labels never overlap.
        if bars.len() <= 12 || i % 2 == 0 {
            let _ = write!(
                svg,
                r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x + slot / 2.0,
                bottom + 14.0,
                escape(&bar.label)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A node of the service map.
pub struct MapNode {
    pub name: String,
    /// Uninstrumented peers are drawn differently and link nowhere.
    pub peer: bool,
    pub href: Option<String>,
}

/// An edge of the service map with its label and the traces it leads to.
pub struct MapEdge {
    pub from: String,
    pub to: String,
    pub label: String,
    pub detail: String,
    pub error: bool,
    pub dashed: bool,
    pub href: String,
}

const NODE_WIDTH: f64 = 170.0;
const NODE_HEIGHT: f64 = 34.0;
/// Room between layers for the edge labels, which sit just right of their caller.
const LAYER_GAP: f64 = NODE_WIDTH + 230.0;
const ROW_GAP: f64 = 80.0;

/// Layers by longest path from the entry points, so calls flow left to right.
/// Edges that close a cycle (found by a depth-first search from the entry
/// points) are left out of the layering.
fn layers(nodes: &[MapNode], edges: &[MapEdge]) -> BTreeMap<String, usize> {
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut incoming = vec![0usize; nodes.len()];
    for edge in edges {
        if let (Some(&from), Some(&to)) =
            (index.get(edge.from.as_str()), index.get(edge.to.as_str()))
            && from != to
        {
            out[from].push(to);
            incoming[to] += 1;
        }
    }
    fn visit(v: usize, out: &[Vec<usize>], state: &mut [u8], back: &mut BTreeSet<(usize, usize)>) {
        state[v] = 1;
        for &w in &out[v] {
            match state[w] {
                0 => visit(w, out, state, back),
                1 => {
                    back.insert((v, w));
                }
                _ => {}
            }
        }
        state[v] = 2;
    }
    let (mut state, mut back) = (vec![0u8; nodes.len()], BTreeSet::new());
    let entries = (0..nodes.len()).filter(|&v| incoming[v] == 0);
    let rest = (0..nodes.len()).filter(|&v| incoming[v] > 0);
    for v in entries.chain(rest) {
        if state[v] == 0 {
            visit(v, &out, &mut state, &mut back);
        }
    }
    let mut layer = vec![0usize; nodes.len()];
    // Without back edges the graph is acyclic: n rounds settle every longest path.
    for _ in 0..nodes.len() {
        let mut changed = false;
        for (from, targets) in out.iter().enumerate() {
            for &to in targets {
                if !back.contains(&(from, to)) && layer[to] < layer[from] + 1 {
                    layer[to] = layer[from] + 1;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    nodes
        .iter()
        .zip(layer)
        .map(|(n, l)| (n.name.clone(), l))
        .collect()
}

/// Where a forward edge passes the columns between its caller's and its
/// callee's: `(left x, y)` of a horizontal run through each column, in the
/// free band between two boxes nearest to the straight line, so an edge that
/// skips a layer never crosses a box.
fn waypoints(
    (x1, y1): (f64, f64),
    (x2, y2): (f64, f64),
    column_boxes: &BTreeMap<i64, Vec<f64>>,
) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    for (&left, tops) in column_boxes {
        let left = left as f64;
        if left <= x1 || left + NODE_WIDTH >= x2 {
            continue;
        }
        let along = y1 + (y2 - y1) * (left + NODE_WIDTH / 2.0 - x1) / (x2 - x1);
        let blocked = |y: f64| {
            tops.iter()
                .any(|&top| y > top - 6.0 && y < top + NODE_HEIGHT + 6.0)
        };
        if !blocked(along) {
            points.push((left, along));
            continue;
        }
        // The middles of the gaps above each box and below the last one.
        let half_gap = (ROW_GAP - NODE_HEIGHT) / 2.0;
        let mut bands: Vec<f64> = tops.iter().map(|&top| top - half_gap).collect();
        if let Some(&last) = tops.iter().max_by(|a, b| a.total_cmp(b)) {
            bands.push(last + NODE_HEIGHT + half_gap);
        }
        if let Some(band) = bands
            .into_iter()
            .filter(|&y| !blocked(y))
            .min_by(|a, b| (a - along).abs().total_cmp(&(b - along).abs()))
        {
            points.push((left, band));
        }
    }
    points
}

/// A path through `points` with horizontal tangents at each, straight across
/// each column it passes.
fn edge_path(start: (f64, f64), passes: &[(f64, f64)], end: (f64, f64)) -> String {
    let mut path = format!("M{:.1},{:.1}", start.0, start.1);
    let mut from = start;
    let curve = |path: &mut String, (ax, ay): (f64, f64), (bx, by): (f64, f64)| {
        let bend = ((bx - ax).abs() / 2.0).max(30.0);
        let _ = write!(
            path,
            " C{:.1},{ay:.1} {:.1},{by:.1} {bx:.1},{by:.1}",
            ax + bend,
            bx - bend
        );
    };
    for &(left, y) in passes {
        curve(&mut path, from, (left, y));
        let _ = write!(path, " L{:.1},{y:.1}", left + NODE_WIDTH);
        from = (left + NODE_WIDTH, y);
    }
    curve(&mut path, from, end);
    path
}

/// The service map as a layered graph: services left to right in call
/// order, edge labels placed so they never overlap.
pub fn service_map(nodes: &[MapNode], edges: &[MapEdge]) -> String {
    let layer_of = layers(nodes, edges);
    let mut columns: BTreeMap<usize, Vec<&MapNode>> = BTreeMap::new();
    for node in nodes {
        columns
            .entry(layer_of.get(&node.name).copied().unwrap_or(0))
            .or_default()
            .push(node);
    }
    let rows = columns.values().map(Vec::len).max().unwrap_or(1) as f64;
    let width = 40.0 + columns.len() as f64 * LAYER_GAP;
    let height = 60.0 + rows * ROW_GAP;
    let mut position: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (column, (_, members)) in columns.iter().enumerate() {
        // Centre short columns vertically.
        let offset = (rows - members.len() as f64) * ROW_GAP / 2.0;
        for (row, node) in members.iter().enumerate() {
            position.insert(
                node.name.as_str(),
                (
                    20.0 + column as f64 * LAYER_GAP,
                    30.0 + offset + row as f64 * ROW_GAP,
                ),
            );
        }
    }
    // Box tops per column, by the column's left edge.
    let mut column_boxes: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for &(x, y) in position.values() {
        column_boxes.entry(x as i64).or_default().push(y);
    }
    let mut svg = format!(
        r#"<svg class="chart map" viewBox="0 0 {width:.0} {height:.0}" role="img" aria-label="service map"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>"#
    );
    // Labels avoid the boxes and each other.
    let mut placed: Vec<(f64, f64, f64, f64)> = position
        .values()
        .map(|&(x, y)| (x, y, NODE_WIDTH, NODE_HEIGHT))
        .collect();
    let mut labels = String::new();
    for edge in edges {
        let (Some(&(fx, fy)), Some(&(tx, ty))) = (
            position.get(edge.from.as_str()),
            position.get(edge.to.as_str()),
        ) else {
            continue;
        };
        let (x1, y1) = (fx + NODE_WIDTH, fy + NODE_HEIGHT / 2.0);
        let (x2, y2) = if tx > fx {
            (tx, ty + NODE_HEIGHT / 2.0)
        } else {
            (
                tx + NODE_WIDTH / 2.0,
                ty + if ty > fy { 0.0 } else { NODE_HEIGHT },
            )
        };
        let passes = if tx > fx {
            waypoints((x1, y1), (x2, y2), &column_boxes)
        } else {
            Vec::new()
        };
        let d = if passes.is_empty() {
            let bend = ((x2 - x1).abs() / 2.0).max(60.0);
            format!(
                "M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}",
                x1 + bend,
                x2 - bend
            )
        } else {
            edge_path((x1, y1), &passes, (x2, y2))
        };
        let class = format!(
            "edge{}{}",
            if edge.error { " error" } else { "" },
            if edge.dashed { " dashed" } else { "" }
        );
        let _ = write!(
            svg,
            r#"<a href="{}"><path class="{class}" d="{d}" marker-end="url(#arrow)"><title>{}</title></path></a>"#,
            escape(&edge.href),
            escape(&edge.detail)
        );
        // Label in the gap right of the caller, where the curve starts, moved
        // down until it overlaps no box and no other label.
        let label_width = 6.2 * edge.label.chars().count() as f64 + 10.0;
        let (lx, mut ly) = (x1 + 14.0, y1 + (y2 - y1) * 0.2 - 9.0);
        while placed.iter().any(|&(px, py, pw, ph)| {
            lx < px + pw && px < lx + label_width && ly < py + ph && py < ly + 18.0
        }) {
            ly += 19.0;
        }
        placed.push((lx, ly, label_width, 18.0));
        let _ = write!(
            labels,
            r#"<a href="{}"><g class="edge-label"><rect x="{lx:.1}" y="{ly:.1}" width="{label_width:.1}" height="18" rx="3"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><title>{}</title></g></a>"#,
            escape(&edge.href),
            lx + label_width / 2.0,
            ly + 13.0,
            escape(&edge.label),
            escape(&edge.detail)
        );
    }
    let bottom = placed
        .iter()
        .map(|(_, y, _, h)| y + h)
        .fold(height, f64::max);
    if bottom > height {
        svg = svg.replacen(
            &format!("viewBox=\"0 0 {width:.0} {height:.0}\""),
            &format!("viewBox=\"0 0 {width:.0} {:.0}\"", bottom + 10.0),
            1,
        );
    }
    for node in nodes {
        let Some(&(x, y)) = position.get(node.name.as_str()) else {
            continue;
        };
        let class = if node.peer { "node peer" } else { "node" };
        let colour = if node.peer {
            "var(--muted)".to_owned()
        } else {
            service_colour(&node.name)
        };
        let body = format!(
            r#"<g class="{class}"><rect x="{x:.1}" y="{y:.1}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="6" style="stroke:{colour}"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text></g>"#,
            x + NODE_WIDTH / 2.0,
            y + 22.0,
            escape(&node.name)
        );
        match &node.href {
            Some(href) => {
                let _ = write!(svg, r#"<a href="{}">{body}</a>"#, escape(href));
            }
            None => svg.push_str(&body),
        }
    }
    svg.push_str(&labels);
    svg.push_str("</svg>");
    svg
}

/// Names of the nodes an edge list touches, for building [`MapNode`]s.
pub fn node_names(edges: &[MapEdge]) -> BTreeSet<String> {
    edges
        .iter()
        .flat_map(|e| [e.from.clone(), e.to.clone()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_spans_cannot_break_out_of_the_markup() {
        assert_eq!(
            escape(r#"<script>"a"&'b'</script>"#),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;"
        );
    }

    fn edge(from: &str, to: &str) -> MapEdge {
        MapEdge {
            from: from.into(),
            to: to.into(),
            label: "1.0/s · p95 10ms".into(),
            detail: String::new(),
            error: false,
            dashed: false,
            href: "/".into(),
        }
    }

    fn node(name: &str) -> MapNode {
        MapNode {
            name: name.into(),
            peer: false,
            href: None,
        }
    }

    #[test]
    fn services_are_layered_in_call_order_even_with_a_cycle() {
        let nodes = [node("web"), node("orders"), node("db"), node("billing")];
        let edges = [
            edge("web", "orders"),
            edge("orders", "db"),
            edge("web", "billing"),
            edge("billing", "orders"),
            edge("db", "web"),
        ];
        let layer = layers(&nodes, &edges);
        assert!(layer["web"] < layer["billing"]);
        assert!(layer["billing"] < layer["orders"]);
        assert!(layer["orders"] < layer["db"]);
    }

    #[test]
    fn edge_labels_never_overlap() {
        let nodes = [node("a"), node("b"), node("c"), node("d")];
        let edges = [edge("a", "b"), edge("a", "c"), edge("a", "d")];
        let svg = service_map(&nodes, &edges);
        let mut rects: Vec<(f64, f64)> = Vec::new();
        for part in svg.split(r#"<g class="edge-label"><rect x=""#).skip(1) {
            let x: f64 = part
                .split('"')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1.0);
            let y: f64 = part
                .split("y=\"")
                .nth(1)
                .and_then(|v| v.split('"').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1.0);
            rects.push((x, y));
        }
        assert_eq!(rects.len(), 3);
        for (i, a) in rects.iter().enumerate() {
            for b in &rects[i + 1..] {
                let overlap = (a.0 - b.0).abs() < 120.0 && (a.1 - b.1).abs() < 18.0;
                assert!(!overlap, "labels at {a:?} and {b:?} overlap");
            }
        }
    }

    #[test]
    fn an_edge_that_skips_a_layer_passes_between_the_boxes() {
        // web → orders → db puts orders in the middle column, in line with
        // web and db; web → db must go around it, not through it.
        let nodes = [node("web"), node("orders"), node("db")];
        let edges = [
            edge("web", "orders"),
            edge("orders", "db"),
            edge("web", "db"),
        ];
        let svg = service_map(&nodes, &edges);
        let path = svg
            .split("<path class=\"edge\" d=\"")
            .nth(3)
            .and_then(|p| p.split('"').next())
            .unwrap_or_default();
        assert!(
            path.contains(" L"),
            "web → db runs straight across the middle column: {path}"
        );
        let box_top: f64 = svg
            .split("<rect x=\"")
            .filter(|r| r.starts_with(&format!("{:.1}", 20.0 + LAYER_GAP)))
            .find_map(|r| r.split("y=\"").nth(1)?.split('"').next()?.parse().ok())
            .unwrap_or(f64::NAN);
        let run_y: f64 = path
            .split(" L")
            .nth(1)
            .and_then(|p| p.split(',').nth(1))
            .and_then(|y| y.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN);
        assert!(
            run_y < box_top || run_y > box_top + NODE_HEIGHT,
            "the run at y={run_y} misses the box at {box_top}..{}",
            box_top + NODE_HEIGHT
        );
    }

    #[test]
    fn a_scatter_dot_links_to_its_trace() {
        let dots = [Dot {
            time_ns: 5,
            duration_ns: 1_000_000,
            error: true,
            href: "/traces/ab".into(),
            label: "GET /".into(),
        }];
        let svg = scatter(&dots, 0, 10);
        assert!(
            svg.contains(r#"<a href="/traces/ab"><circle class="dot error""#),
            "{svg}"
        );
    }
}
