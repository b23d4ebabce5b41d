//! `/map`: the service map as a layered SVG graph, and its edges as a table.

use std::collections::BTreeSet;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use weft_query::{Edge, EdgeKind};

use super::charts::{MapEdge, MapNode, node_names, service_map};
use super::format::{duration, percent, rate};
use super::{Figures, PageError, Range, RangeQuery, render, service_href, url_encode};
use crate::routes::AppState;

struct EdgeRow {
    from: String,
    to: String,
    kind: &'static str,
    href: String,
    figures: Figures,
}

#[derive(Template)]
#[template(path = "map.html")]
struct MapPage {
    title: &'static str,
    nav: &'static str,
    lookbacks: Vec<(String, String)>,
    lookback: String,
    range_text: String,
    svg: String,
    edges: Vec<EdgeRow>,
}

/// The traces behind an edge: for a call or link, those in which the callee
/// served a request; for a peer, the caller's client spans that name it.
fn edge_href(edge: &Edge, range: &Range) -> String {
    let query = range.query();
    match edge.kind {
        EdgeKind::Call => format!(
            "/?service={}&tags={}&{query}",
            url_encode(&edge.to),
            url_encode("span.kind=server")
        ),
        EdgeKind::Link => format!(
            "/?service={}&tags={}&{query}",
            url_encode(&edge.to),
            url_encode("span.kind=consumer")
        ),
        EdgeKind::Peer => format!(
            "/?service={}&tags={}&{query}",
            url_encode(&edge.from),
            url_encode(&format!("peer.service={}", edge.to))
        ),
    }
}

pub async fn page(
    State(state): State<AppState>,
    Query(query): Query<RangeQuery>,
) -> Result<Response, PageError> {
    let range = Range::resolve(&query)?;
    let edges = state
        .engine
        .service_map(range.start_ns, range.end_ns)
        .await?;
    let seconds = range.seconds();
    let map_edges: Vec<MapEdge> = edges
        .iter()
        .map(|edge| MapEdge {
            from: edge.from.clone(),
            to: edge.to.clone(),
            label: format!(
                "{} · {} err · p95 {}",
                rate(edge.stats.count as f64 / seconds),
                percent(edge.stats.error_rate()),
                duration(edge.stats.p95_ns as i64)
            ),
            detail: format!(
                "{} → {} ({}): {} calls, {} errors, p50 {}, p95 {}, p99 {}",
                edge.from,
                edge.to,
                edge.kind.as_str(),
                edge.stats.count,
                edge.stats.errors,
                duration(edge.stats.p50_ns as i64),
                duration(edge.stats.p95_ns as i64),
                duration(edge.stats.p99_ns as i64)
            ),
            error: edge.stats.errors > 0,
            dashed: edge.kind == EdgeKind::Link,
            href: edge_href(edge, &range),
        })
        .collect();
    // A node is a peer when only peer edges lead to it and it calls no one.
    let services: BTreeSet<&str> = edges
        .iter()
        .flat_map(|e| {
            if e.kind == EdgeKind::Peer {
                vec![e.from.as_str()]
            } else {
                vec![e.from.as_str(), e.to.as_str()]
            }
        })
        .collect();
    let nodes: Vec<MapNode> = node_names(&map_edges)
        .into_iter()
        .map(|name| {
            let peer = !services.contains(name.as_str());
            MapNode {
                href: (!peer).then(|| service_href(&name, &range)),
                peer,
                name,
            }
        })
        .collect();
    let page = MapPage {
        title: "Service map",
        nav: "map",
        lookbacks: range.options(),
        lookback: range.lookback.clone(),
        range_text: range.text(),
        svg: service_map(&nodes, &map_edges),
        edges: edges
            .iter()
            .map(|e| EdgeRow {
                from: e.from.clone(),
                to: e.to.clone(),
                kind: e.kind.as_str(),
                href: edge_href(e, &range),
                figures: Figures::new(&e.stats, seconds),
            })
            .collect(),
    };
    Ok(render(&page))
}
