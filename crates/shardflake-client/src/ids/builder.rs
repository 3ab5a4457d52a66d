//! [`IdClientBuilder`]: an [`IdClient`]'s settings, validated once, with their limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardflake::FastRng;
use shardflake_proto::node::IDS_COUNT_MAX;

use super::buffer::Prefetch;
use super::route::{Router, Source, ROUTING_REFRESH_MIN};
use super::{
    Config, IdClient, IdError, Inner, CALL_TIMEOUT_MS_DEFAULT, NODES_MAX,
    NODE_REQUEST_TIMEOUT_MS_DEFAULT, PREFETCH_HORIZON_MS_DEFAULT, PREFETCH_MAX_DEFAULT,
    PREFETCH_MIN_DEFAULT, ROUTING_REFRESH_MS_DEFAULT, TIMEOUT_MS_MAX,
};
use crate::transport::ClientTlsFiles;
use crate::{CoordinatorClient, ReqwestTransport, Retry, Transport};

/// Builds an [`IdClient`]; see each setting for its default and range.
///
/// ```
/// use std::time::Duration;
/// use shardflake_client::IdClient;
/// let b = IdClient::builder().nodes(["http://127.0.0.1:1"]).prefetch(10, 5);
/// let e = b.build().unwrap_err().to_string();
/// assert!(e.contains("prefetch"), "{e}");
/// let e = IdClient::builder().build().unwrap_err().to_string();
/// assert!(e.contains("nodes"), "{e}");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct IdClientBuilder {
    nodes: Vec<String>,
    coordinators: Vec<String>,
    token: Option<String>,
    node_token: Option<String>,
    tls: ClientTlsFiles,
    request_timeout: Duration,
    call_timeout: Duration,
    prefetch_min: usize,
    prefetch_max: usize,
    horizon: Duration,
    validity: Option<Duration>,
    routing_refresh: Duration,
    transport: Option<Arc<dyn Transport>>,
}

impl Default for IdClientBuilder {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            coordinators: Vec::new(),
            token: None,
            node_token: None,
            tls: ClientTlsFiles::default(),
            request_timeout: Duration::from_millis(NODE_REQUEST_TIMEOUT_MS_DEFAULT),
            call_timeout: Duration::from_millis(CALL_TIMEOUT_MS_DEFAULT),
            prefetch_min: PREFETCH_MIN_DEFAULT,
            prefetch_max: PREFETCH_MAX_DEFAULT,
            horizon: Duration::from_millis(PREFETCH_HORIZON_MS_DEFAULT),
            validity: None,
            routing_refresh: Duration::from_millis(ROUTING_REFRESH_MS_DEFAULT),
            transport: None,
        }
    }
}

fn clean(urls: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for u in urls {
        let u = u.into().trim().trim_end_matches('/').to_string();
        if !u.is_empty() && !out.contains(&u) {
            out.push(u);
        }
    }
    out
}

impl IdClientBuilder {
    /// Node URLs (`http://host:port`) to fetch from, 1 to [`NODES_MAX`]. Also takes one
    /// comma-separated string per item.
    pub fn nodes(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.nodes = clean(
            urls.into_iter()
                .flat_map(|u| u.into().split(',').map(str::to_string).collect::<Vec<_>>()),
        );
        self
    }

    /// Coordinator URLs to discover the nodes and the namespace assignment from
    /// (`GET /v1/routing`), instead of [`IdClientBuilder::nodes`].
    pub fn coordinators(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.coordinators = clean(
            urls.into_iter()
                .flat_map(|u| u.into().split(',').map(str::to_string).collect::<Vec<_>>()),
        );
        self
    }

    /// The read credential (`SHARDFLAKE_READ_TOKEN`), sent to the coordinators as
    /// `Authorization: Bearer <token>`: it reads the routing table and can do nothing else.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The client credential (`SHARDFLAKE_CLIENT_TOKEN`) of nodes whose id endpoints need
    /// one, sent to the nodes as `Authorization: Bearer <token>`.
    pub fn node_token(mut self, token: impl Into<String>) -> Self {
        self.node_token = Some(token.into());
        self
    }

    /// Verifies `https://` nodes and coordinators against `tls.ca_file` (else the system's
    /// roots) and presents `tls.identity` where a client certificate is required.
    pub fn tls(mut self, tls: ClientTlsFiles) -> Self {
        self.tls = tls;
        self
    }

    /// Time limit of one request to one node (default
    /// [`NODE_REQUEST_TIMEOUT_MS_DEFAULT`] ms, at most [`TIMEOUT_MS_MAX`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Time limit of a call that has to wait for ids, failovers included (default
    /// [`CALL_TIMEOUT_MS_DEFAULT`] ms, at most [`TIMEOUT_MS_MAX`]).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Bounds of one refill: `1 <= min <= max <= 100,000` (a node's largest batch). Defaults
    /// [`PREFETCH_MIN_DEFAULT`] and [`PREFETCH_MAX_DEFAULT`].
    pub fn prefetch(mut self, min: usize, max: usize) -> Self {
        self.prefetch_min = min;
        self.prefetch_max = max;
        self
    }

    /// A refill covers the forecast use over this long (default
    /// [`PREFETCH_HORIZON_MS_DEFAULT`] ms; 1 ms to 1 hour).
    pub fn horizon(mut self, horizon: Duration) -> Self {
        self.horizon = horizon;
        self
    }

    /// Drops buffered ids this long after their request was sent (default: never). Must be
    /// longer than the request timeout, or ids could expire on arrival.
    pub fn validity(mut self, validity: Duration) -> Self {
        self.validity = Some(validity);
        self
    }

    /// How often the routing table is reloaded from the coordinators (default
    /// [`ROUTING_REFRESH_MS_DEFAULT`] ms; at least 1 s). Failures reload it sooner.
    pub fn routing_refresh(mut self, interval: Duration) -> Self {
        self.routing_refresh = interval;
        self
    }

    /// Sends requests through `transport` (one that does not follow redirects) instead of a
    /// [`ReqwestTransport`].
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Validates the settings and starts the client. Must run inside a tokio runtime (the
    /// refill tasks run on it); [`crate::BlockingIdClient`] brings its own.
    pub fn build(self) -> Result<IdClient, IdError> {
        let config = |m: String| Err(IdError::Config(m));
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
        for (name, d) in [
            ("request_timeout", self.request_timeout),
            ("call_timeout", self.call_timeout),
        ] {
            if !(1..=TIMEOUT_MS_MAX).contains(&ms(d)) {
                return config(format!(
                    "{name} {} ms is out of range 1..={TIMEOUT_MS_MAX} ms",
                    ms(d)
                ));
            }
        }
        let max = IDS_COUNT_MAX as usize;
        if !(1 <= self.prefetch_min
            && self.prefetch_min <= self.prefetch_max
            && self.prefetch_max <= max)
        {
            return config(format!(
                "prefetch bounds {}..{} must satisfy 1 <= min <= max <= {max} (a node's largest batch)",
                self.prefetch_min, self.prefetch_max
            ));
        }
        if !(1..=3_600_000).contains(&ms(self.horizon)) {
            return config(format!(
                "prefetch horizon {} ms is out of range 1..=3600000 ms",
                ms(self.horizon)
            ));
        }
        if let Some(v) = self.validity {
            if v <= self.request_timeout {
                return config(format!(
                    "validity {} ms must exceed the request timeout of {} ms, or ids could expire on arrival",
                    ms(v),
                    ms(self.request_timeout)
                ));
            }
        }
        if self.routing_refresh < ROUTING_REFRESH_MIN {
            return config(format!(
                "routing refresh {} ms is below the minimum of {} ms",
                ms(self.routing_refresh),
                ms(ROUTING_REFRESH_MIN)
            ));
        }
        let (urls, what) = match (self.nodes.is_empty(), self.coordinators.is_empty()) {
            (false, true) => (&self.nodes, "node"),
            (true, false) => (&self.coordinators, "coordinator"),
            (true, true) => {
                return config(
                    "give the node URLs (nodes) or the coordinator URLs (coordinators)".into(),
                )
            }
            (false, false) => {
                return config("give either node URLs or coordinator URLs, not both".into())
            }
        };
        if urls.len() > NODES_MAX {
            return config(format!(
                "{} {what} URLs; at most {NODES_MAX} are accepted",
                urls.len()
            ));
        }
        if let Some(bad) = urls
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return config(format!(
                "{what} URL `{bad}` must start with http:// or https://"
            ));
        }
        if self.token.is_some() && self.coordinators.is_empty() {
            return config(
                "the read token is sent to coordinators only; a node's client credential is node_token".into(),
            );
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            IdError::Config(
                "IdClient must be built inside a tokio runtime (its refill tasks run there); \
                 use BlockingIdClient outside one"
                    .into(),
            )
        })?;
        let transport: Arc<dyn Transport> = match self.transport {
            Some(t) => t,
            None => Arc::new(
                ReqwestTransport::with_tls(self.request_timeout, &self.tls)
                    .map_err(IdError::Config)?,
            ),
        };
        let source = if self.coordinators.is_empty() {
            Source::Nodes
        } else {
            let c = CoordinatorClient::new(self.coordinators.clone(), self.token.clone())
                .and_then(|c| c.with_tls(&self.tls))
                .map_err(|e| IdError::Config(e.to_string()))?
                .with_timeout(self.request_timeout);
            Source::Coordinators(Box::new(c))
        };
        let client_key = format!("client-{:016x}", FastRng::from_os().next_u64());
        let router = Arc::new(
            Router::new(
                transport,
                source,
                self.nodes,
                client_key,
                self.request_timeout,
            )
            .with_node_token(self.node_token),
        );
        let prefetch = Prefetch {
            min: self.prefetch_min,
            max: self.prefetch_max,
            horizon: self.horizon,
            validity: self.validity,
        };
        let inner = Arc::new(Inner {
            config: Config {
                call_timeout: self.call_timeout,
                prefetch,
            },
            router: router.clone(),
            runtime,
            streams: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        });
        if router.coordinators().is_some() {
            let refresh = self.routing_refresh;
            let task = inner.runtime.spawn(async move {
                let mut retry = Retry::new(
                    "routing table refresh",
                    ROUTING_REFRESH_MIN,
                    refresh.max(ROUTING_REFRESH_MIN),
                );
                // The first table is loaded by the first request; this keeps it fresh.
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(refresh) => {}
                        () = router.refresh.notified() => {
                            tokio::time::sleep(ROUTING_REFRESH_MIN).await;
                        }
                    }
                    router.refresh_table(&mut retry).await;
                }
            });
            inner.tasks.lock().expect("poisoned").push(task);
        }
        let client = IdClient { inner };
        client.stream_of(None)?;
        Ok(client)
    }
}
