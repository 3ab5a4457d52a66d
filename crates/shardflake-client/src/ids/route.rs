//! Which node a stream asks, and one refill request with failover across the nodes.
//!
//! The nodes come from a static list or from the coordinators' routing table
//! (`GET /v1/routing`), refreshed periodically and whenever a request found every node
//! failing. A namespace is asked of its serving hosts in [`rendezvous_order`] on its name, then
//! of every other node (which answers `307` to a serving one, or serves it after a
//! reassignment the table does not show yet); plain ids of every node, in rendezvous order on a
//! key drawn per client, so that clients spread over the nodes.
//!
//! Each node has a [`Retry`] schedule: a node that failed is tried after the healthy ones until
//! its backoff (or its `Retry-After`) has passed, and its failure is logged once per change of
//! state, not once per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardflake_proto::node::{IdsResponse, CONTENT_TYPE_BINARY};
use shardflake_proto::ns::{rendezvous_order, RoutedNode, RoutingTable};
use shardflake_proto::{ErrorBody, ErrorCode};
use tokio::time::Instant;

use super::{IdError, NodeFailure};
use crate::{CoordinatorClient, Retry, Transport};

/// Redirects followed for one request (a node answers `307` for a namespace it does not serve).
pub(crate) const REDIRECTS_MAX: usize = 2;
/// The shortest and longest backoff of a failing node.
const NODE_RETRY_MIN: Duration = Duration::from_millis(50);
const NODE_RETRY_MAX: Duration = Duration::from_secs(5);
/// The longest `Retry-After` honoured.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);
/// Routing refreshes asked for by failures come at most this often.
pub(crate) const ROUTING_REFRESH_MIN: Duration = Duration::from_secs(1);

/// Where the nodes come from.
#[derive(Debug)]
pub(crate) enum Source {
    /// A fixed list.
    Nodes,
    /// The coordinators' routing table.
    Coordinators(Box<CoordinatorClient>),
}

/// What the client knows of the cluster.
#[derive(Debug, Default)]
struct Table {
    nodes: Vec<RoutedNode>,
    namespaces: HashMap<String, Vec<u64>>,
    /// Whether a table was ever loaded (always, for a fixed list).
    loaded: bool,
    /// When the table was last asked of the coordinators (answered or not).
    asked_at: Option<Instant>,
    /// The last failure to load one.
    error: Option<String>,
}

#[derive(Debug)]
struct Health {
    retry: Retry,
    down_until: Option<Instant>,
}

/// How one attempt on one node ended, when it did not bring ids.
enum Attempt {
    /// Try the next node.
    Failed {
        error: String,
        kind: &'static str,
        retry_after: Option<Duration>,
    },
    /// Every node would say the same: stop here.
    Refused(IdError),
}

/// Picks nodes and fetches ids from them.
#[derive(Debug)]
pub(crate) struct Router {
    transport: Arc<dyn Transport>,
    /// `Authorization` for nodes whose id endpoints need a client credential.
    node_auth: Option<String>,
    source: Source,
    client_key: String,
    request_timeout: Duration,
    table: Mutex<Table>,
    health: Mutex<HashMap<String, Health>>,
    /// Wakes the routing refresher early.
    pub refresh: tokio::sync::Notify,
    /// The log state of reloads on demand (one at a time).
    reload: tokio::sync::Mutex<Retry>,
}

impl Router {
    pub fn new(
        transport: Arc<dyn Transport>,
        source: Source,
        nodes: Vec<String>,
        client_key: String,
        request_timeout: Duration,
    ) -> Self {
        let table = Table {
            nodes: nodes
                .into_iter()
                .enumerate()
                .map(|(i, url)| RoutedNode {
                    host_id: i as u64,
                    url,
                })
                .collect(),
            namespaces: HashMap::new(),
            loaded: matches!(source, Source::Nodes),
            asked_at: None,
            error: None,
        };
        Self {
            transport,
            node_auth: None,
            source,
            client_key,
            request_timeout,
            table: Mutex::new(table),
            health: Mutex::new(HashMap::new()),
            refresh: tokio::sync::Notify::new(),
            reload: tokio::sync::Mutex::new(Retry::new(
                "routing table",
                NODE_RETRY_MIN,
                NODE_RETRY_MAX,
            )),
        }
    }

    /// Sends `token` to the nodes as their client credential.
    pub fn with_node_token(mut self, token: Option<String>) -> Self {
        self.node_auth = token.map(|t| format!("Bearer {}", t.trim()));
        self
    }

    pub fn coordinators(&self) -> Option<&CoordinatorClient> {
        match &self.source {
            Source::Coordinators(c) => Some(c),
            Source::Nodes => None,
        }
    }

    /// Loads the routing table from the coordinators. Keeps the previous one on failure.
    pub async fn refresh_table(&self, retry: &mut Retry) {
        let Some(coordinators) = self.coordinators() else {
            return;
        };
        self.table.lock().expect("poisoned").asked_at = Some(Instant::now());
        match coordinators.routing().await {
            Ok(t) => {
                retry.succeeded();
                self.install(t);
            }
            Err(e) => {
                retry.failed(e.kind(), &e);
                self.table.lock().expect("poisoned").error = Some(e.to_string());
            }
        }
    }

    fn install(&self, t: RoutingTable) {
        let mut table = self.table.lock().expect("poisoned");
        let nodes: Vec<RoutedNode> = t
            .nodes
            .into_iter()
            .map(|n| RoutedNode {
                host_id: n.host_id,
                url: n.url.trim().trim_end_matches('/').to_string(),
            })
            .filter(|n| n.url.starts_with("http://") || n.url.starts_with("https://"))
            .collect();
        if !table.loaded || table.nodes != nodes {
            tracing::info!(
                nodes = nodes.len(),
                namespaces = t.namespaces.len(),
                "routing table loaded from the coordinators"
            );
        }
        table.nodes = nodes;
        table.namespaces = t
            .namespaces
            .into_iter()
            .map(|n| (n.name, n.serving))
            .collect();
        table.loaded = true;
        table.error = None;
    }

    /// The node URLs to try for `ns` (`None`: plain ids), best first.
    pub fn order(&self, ns: Option<&str>) -> Vec<String> {
        let table = self.table.lock().expect("poisoned");
        let ids: Vec<u64> = table.nodes.iter().map(|n| n.host_id).collect();
        let ordered: Vec<u64> = match ns {
            None => rendezvous_order(&self.client_key, &ids),
            Some(name) => {
                let serving: Vec<u64> = table
                    .namespaces
                    .get(name)
                    .map(|s| s.iter().copied().filter(|h| ids.contains(h)).collect())
                    .unwrap_or_default();
                let others: Vec<u64> = ids
                    .iter()
                    .copied()
                    .filter(|h| !serving.contains(h))
                    .collect();
                let mut order = rendezvous_order(name, &serving);
                order.extend(rendezvous_order(name, &others));
                order
            }
        };
        let mut urls: Vec<String> = ordered
            .iter()
            .filter_map(|h| table.nodes.iter().find(|n| n.host_id == *h))
            .map(|n| n.url.clone())
            .collect();
        drop(table);
        // Healthy nodes first, in that order; then those backing off, soonest back first.
        let now = Instant::now();
        let health = self.health.lock().expect("poisoned");
        urls.sort_by_key(|u| match health.get(u).and_then(|h| h.down_until) {
            Some(t) if t > now => (1, t),
            _ => (0, now),
        });
        urls
    }

    /// Fetches `count` ids for `ns` from the first node that serves them; the URL of that node
    /// comes along. Fails with every node's error when none could, or at once with an API
    /// error that every node would repeat.
    pub async fn fetch(
        &self,
        ns: Option<&str>,
        count: usize,
    ) -> Result<(Vec<u64>, String), IdError> {
        if self.coordinators().is_some() && !self.table.lock().expect("poisoned").loaded {
            // The first request of a client waits for the first table (the first request of
            // another stream waits for the same load).
            let mut retry = self.reload.lock().await;
            if !self.table.lock().expect("poisoned").loaded {
                self.refresh_table(&mut retry).await;
            }
        }
        let mut order = self.order(ns);
        let mut failures = Vec::new();
        for round in 0..2 {
            match self.round(ns, &order, count, &mut failures).await {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            // Every node failed. The table may be stale (a node moved, the namespace was
            // reassigned): reload it now, unless it is fresh, and go round once more if the
            // nodes changed.
            if round > 0 || !self.reload_if_stale().await {
                break;
            }
            let again = self.order(ns);
            if again.iter().all(|u| order.contains(u)) {
                break;
            }
            order = again;
        }
        self.refresh.notify_one();
        Err(IdError::Unavailable {
            stream: stream_name(ns),
            failures,
        })
    }

    /// Reloads the table if it was last asked of the coordinators more than
    /// [`ROUTING_REFRESH_MIN`] ago; whether it did.
    async fn reload_if_stale(&self) -> bool {
        if self.coordinators().is_none() {
            return false;
        }
        let stale = match self.table.lock().expect("poisoned").asked_at {
            Some(t) => t.elapsed() >= ROUTING_REFRESH_MIN,
            None => true,
        };
        if stale {
            let mut retry = self.reload.lock().await;
            self.refresh_table(&mut retry).await;
        }
        stale
    }

    /// One pass over `order`; `None` when every node failed (their errors in `failures`).
    async fn round(
        &self,
        ns: Option<&str>,
        order: &[String],
        count: usize,
        failures: &mut Vec<NodeFailure>,
    ) -> Result<Option<(Vec<u64>, String)>, IdError> {
        if order.is_empty() {
            let table = self.table.lock().expect("poisoned");
            let error = match &table.error {
                Some(e) => format!("no routing table from the coordinators: {e}"),
                None => "the routing table lists no node with a URL".to_string(),
            };
            drop(table);
            failures.push(NodeFailure {
                url: "(no nodes)".into(),
                error,
            });
            return Ok(None);
        }
        let path = match ns {
            None => format!("/ids?count={count}"),
            Some(name) => format!("/ns/{name}/ids?count={count}"),
        };
        for url in order {
            match self.fetch_one(url, &path, count).await {
                Ok(ids) => {
                    self.node_ok(url);
                    return Ok(Some((ids, url.clone())));
                }
                Err(Attempt::Refused(e)) => {
                    self.node_ok(url);
                    return Err(e);
                }
                Err(Attempt::Failed {
                    error,
                    kind,
                    retry_after,
                }) => {
                    self.node_failed(url, kind, &error, retry_after);
                    failures.push(NodeFailure {
                        url: url.clone(),
                        error,
                    });
                }
            }
        }
        Ok(None)
    }

    fn node_ok(&self, url: &str) {
        let mut health = self.health.lock().expect("poisoned");
        if let Some(h) = health.get_mut(url) {
            if h.retry.failures() > 0 {
                tracing::info!(%url, after_failures = h.retry.failures(), "node serves ids again");
                h.retry = Retry::new("node", NODE_RETRY_MIN, NODE_RETRY_MAX);
            }
            h.down_until = None;
        }
    }

    fn node_failed(&self, url: &str, kind: &str, error: &str, retry_after: Option<Duration>) {
        let mut health = self.health.lock().expect("poisoned");
        let h = health.entry(url.to_string()).or_insert_with(|| Health {
            retry: Retry::new("node", NODE_RETRY_MIN, NODE_RETRY_MAX),
            down_until: None,
        });
        // Logged by the schedule at warn once per kind of failure, at debug after that.
        let backoff = h.retry.failed(kind, &format_args!("{url}: {error}"));
        let wait = backoff.max(retry_after.unwrap_or_default().min(RETRY_AFTER_MAX));
        h.down_until = Some(Instant::now() + wait);
    }

    /// One request to one node, following its redirects, within the request timeout.
    async fn fetch_one(&self, base: &str, path: &str, count: usize) -> Result<Vec<u64>, Attempt> {
        let deadline = Instant::now() + self.request_timeout;
        let mut url = format!("{base}{path}");
        for hop in 0..=REDIRECTS_MAX {
            let left = deadline.saturating_duration_since(Instant::now());
            let resp = match self.get(&url, left).await {
                Ok(r) => r,
                Err(Attempt::Failed { error, kind, .. }) if hop > 0 => {
                    // The node the namespace was redirected to is down (its replacement is
                    // not assigned yet): the node that redirected serves it itself when
                    // asked with `hop=1`, so the caller sees no failure. Values stay unique;
                    // only the namespace's global order is given up until the table follows.
                    let here = format!("{base}{path}&hop=1");
                    let left = deadline.saturating_duration_since(Instant::now());
                    return match self.get(&here, left).await {
                        Ok(r) if r.status().as_u16() == 200 => {
                            tracing::debug!(%base, redirected_to = %url, "served where redirected from");
                            parse_ids(&r, count)
                        }
                        _ => Err(failed(format!("redirected to {url}: {error}"), kind)),
                    };
                }
                Err(e) => return Err(e),
            };
            let status = resp.status().as_u16();
            let body = resp.body();
            match status {
                200 => return parse_ids(&resp, count),
                307 | 308 if hop < REDIRECTS_MAX => {
                    let Some(location) = resp
                        .headers()
                        .get(http::header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                    else {
                        return Err(failed("redirect without a Location".into(), "bad_redirect"));
                    };
                    let next = resolve(&url, location, path);
                    tracing::debug!(from = %url, to = %next, "following a node's redirect");
                    url = next;
                }
                // A node over its per-client rate (429) is busy for this client, like a
                // node that is down: the next one serves, and this one is asked again after
                // its `Retry-After`.
                429 | 500..=599 => {
                    let retry_after = resp
                        .headers()
                        .get(http::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let (code, message) = error_body(body);
                    return Err(Attempt::Failed {
                        error: format!("HTTP {status} {}: {message}", code.as_str()),
                        kind: if code == ErrorCode::Unknown {
                            "http_5xx"
                        } else {
                            code.as_str()
                        },
                        retry_after,
                    });
                }
                400..=499 => {
                    let (code, message) = error_body(body);
                    return Err(Attempt::Refused(IdError::Api {
                        node: url,
                        status,
                        code,
                        message,
                    }));
                }
                _ => {
                    return Err(failed(
                        format!("unexpected HTTP status {status}"),
                        "bad_status",
                    ))
                }
            }
        }
        Err(failed(
            format!("more than {REDIRECTS_MAX} redirects, the last to {url}"),
            "bad_redirect",
        ))
    }

    async fn get(&self, url: &str, timeout: Duration) -> Result<http::Response<Vec<u8>>, Attempt> {
        // The binary representation (8 bytes an id, nothing to parse), or JSON from a node
        // that does not offer it.
        let mut request = http::Request::get(url).header(http::header::ACCEPT, ACCEPT_IDS);
        if let Some(a) = &self.node_auth {
            request = request.header(http::header::AUTHORIZATION, a);
        }
        let request = request
            .body(Vec::new())
            .map_err(|e| failed(format!("bad request to {url}: {e}"), "bad_request"))?;
        match tokio::time::timeout(timeout, self.transport.send(request)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(failed(e, "unreachable")),
            Err(_) => Err(failed(
                format!("no answer within {} ms", timeout.as_millis()),
                "timeout",
            )),
        }
    }
}

fn failed(error: String, kind: &'static str) -> Attempt {
    Attempt::Failed {
        error,
        kind,
        retry_after: None,
    }
}

/// The name of a stream in messages.
pub(crate) fn stream_name(ns: Option<&str>) -> String {
    match ns {
        None => "plain ids".to_string(),
        Some(name) => format!("namespace `{name}`"),
    }
}

fn error_body(body: &[u8]) -> (ErrorCode, String) {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => (b.error.code, b.error.message),
        Err(_) => (
            ErrorCode::Unknown,
            String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        ),
    }
}

/// What the SDK accepts from `/ids` and `/ns/{name}/ids`.
const ACCEPT_IDS: &str = "application/octet-stream, application/json;q=0.5";

/// The ids of a 200 answer, in the representation its `Content-Type` names.
fn parse_ids(resp: &http::Response<Vec<u8>>, count: usize) -> Result<Vec<u64>, Attempt> {
    let binary = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(CONTENT_TYPE_BINARY));
    let ids = if binary {
        shardflake_proto::node::parse_ids_binary(resp.body())
            .map_err(|e| failed(format!("undecodable answer: {e}"), "bad_answer"))?
    } else {
        serde_json::from_slice::<IdsResponse>(resp.body())
            .map_err(|e| failed(format!("undecodable answer: {e}"), "bad_answer"))?
            .ids
    };
    if ids.is_empty() || ids.len() > count {
        return Err(failed(
            format!("answered {} ids, {count} were asked for", ids.len()),
            "bad_answer",
        ));
    }
    Ok(ids)
}

/// Where a redirect from `from` to `location` leads: an absolute URL as it is (with the
/// request's path appended when it names only a node), a path on the same node.
fn resolve(from: &str, location: &str, path: &str) -> String {
    let location = location.trim();
    if let Some(rest) = location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("https://"))
    {
        return match rest.find('/') {
            Some(i) if rest.len() > i + 1 => location.to_string(),
            _ => format!("{}{path}", location.trim_end_matches('/')),
        };
    }
    let scheme_end = from.find("://").map_or(0, |i| i + 3);
    let origin_end = from[scheme_end..]
        .find('/')
        .map_or(from.len(), |i| scheme_end + i);
    format!(
        "{}/{}",
        &from[..origin_end],
        location.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(content_type: &str, body: Vec<u8>) -> http::Response<Vec<u8>> {
        http::Response::builder()
            .header(http::header::CONTENT_TYPE, content_type)
            .body(body)
            .unwrap()
    }

    #[test]
    fn ids_are_read_in_the_representation_the_node_answers_with() {
        let binary: Vec<u8> = [7u64, 9].iter().flat_map(|i| i.to_be_bytes()).collect();
        let ok = |r| parse_ids(&r, 2).ok();
        assert_eq!(
            ok(answer("application/octet-stream", binary.clone())),
            Some(vec![7, 9])
        );
        let json = serde_json::to_vec(&IdsResponse::new(vec![7, 9])).unwrap();
        assert_eq!(ok(answer("application/json", json)), Some(vec![7, 9]));
        // More ids than asked for, a torn binary body, none at all: refused.
        assert_eq!(
            parse_ids(&answer("application/octet-stream", binary.clone()), 1).ok(),
            None
        );
        assert_eq!(
            ok(answer("application/octet-stream", binary[..11].to_vec())),
            None
        );
        assert_eq!(ok(answer("application/octet-stream", Vec::new())), None);
    }

    #[test]
    fn redirects_resolve_to_a_full_url() {
        let from = "http://a:7000/ns/x/ids?count=5";
        let path = "/ns/x/ids?count=5";
        assert_eq!(
            resolve(from, "http://b:7001/ns/x/ids?count=5", path),
            "http://b:7001/ns/x/ids?count=5"
        );
        assert_eq!(
            resolve(from, "http://b:7001/", path),
            "http://b:7001/ns/x/ids?count=5"
        );
        assert_eq!(
            resolve(from, "https://b:7001", path),
            "https://b:7001/ns/x/ids?count=5"
        );
        assert_eq!(
            resolve(from, "/ns/x/ids?count=5", path),
            "http://a:7000/ns/x/ids?count=5"
        );
    }

    #[test]
    fn a_namespace_goes_to_its_serving_hosts_first() {
        let nodes: Vec<String> = (0..4).map(|i| format!("http://n{i}")).collect();
        let router = Router::new(
            Arc::new(crate::ReqwestTransport::new(Duration::from_secs(1)).unwrap()),
            Source::Nodes,
            nodes,
            "k".into(),
            Duration::from_secs(1),
        );
        router.install(RoutingTable {
            nodes: (0..4)
                .map(|i| RoutedNode {
                    host_id: 10 + i,
                    url: format!("http://n{i}/"),
                })
                .collect(),
            namespaces: vec![shardflake_proto::ns::RoutedNamespace {
                name: "orders".into(),
                serving: vec![12, 13, 99],
            }],
        });
        let order = router.order(Some("orders"));
        let serving: Vec<String> = rendezvous_order("orders", &[12, 13])
            .iter()
            .map(|h| format!("http://n{}", h - 10))
            .collect();
        assert_eq!(order[..2], serving[..], "{order:?}");
        assert_eq!(order.len(), 4);
        // A failing node goes last until its backoff has passed.
        router.node_failed(&order[0], "unreachable", "refused", None);
        let again = router.order(Some("orders"));
        assert_eq!(again[3], order[0]);
        assert_eq!(again[0], order[1]);
        // Plain ids use every node.
        assert_eq!(router.order(None).len(), 4);
    }
}
