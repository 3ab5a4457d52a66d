//! [`CoordinatorClient`]: the coordinator's HTTP API over a list of coordinator URLs.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use shardflake_proto::coord::{
    AcquireRequest, BlockGrant, BlockRequest, ClusterInfo, HostsResponse, LeaseGrant,
    ReleaseRequest, RenewRequest, RenewResponse, RepairReport, RepairRequest, ReservationRequest,
    ReservationResponse, StandbyWaitRequest, StandbyWaitResponse, STORE_ID_HEADER,
};
use shardflake_proto::generation::{GenerationStamp, GENERATION_HEADER};
use shardflake_proto::ns::{
    NamespaceDeleted, NamespaceList, NamespaceSpec, NamespaceStatus, NsBlockGrant, NsBlockRequest,
    NsRaiseRequest, NsReturnRequest, NsReturnResponse, RoutingTable,
};
use shardflake_proto::{ErrorBody, ErrorCode};
use thiserror::Error;

use crate::transport::{ClientTlsFiles, ReqwestTransport, Transport};
use shardflake_runtime::credentials::BearerToken;

/// Default time limit of one request to one coordinator.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// Extra time allowed beyond a long poll's own timeout.
const LONG_POLL_SLACK_MS: u64 = 5_000;
/// How a transport failure that is a time limit reads (the call then tries again).
const NO_ANSWER: &str = "no answer within";
/// Most coordinator URLs accepted.
pub const URLS_MAX: usize = 16;

/// Why a call to the coordinators failed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A coordinator answered with an API error (not retried elsewhere: every coordinator
    /// would say the same).
    #[error("coordinator refused ({status} {code}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The stable code ([`ErrorCode::Unknown`] for one this version does not know).
        code: ErrorCode,
        /// The coordinator's message.
        message: String,
    },
    /// No coordinator could be reached or all answered 5xx.
    #[error("no coordinator answered ({tried} tried); last error: {last}")]
    Unavailable {
        /// Coordinators tried.
        tried: usize,
        /// The last failure.
        last: String,
    },
    /// A coordinator answered for another store than the one this client is pinned to.
    /// Two stores lease the same host ids to different nodes, so a client never moves from
    /// one to the other.
    #[error("coordinator {url} serves store {found}, but this node uses store {expected}: coordinators with separate stores hand out the same host ids, so a node never fails over between them; give a node only the URLs of coordinators that share one store")]
    StoreMismatch {
        /// The coordinator that answered.
        url: String,
        /// The store id the client is pinned to.
        expected: String,
        /// The store id it answered with.
        found: String,
    },
    /// A coordinator answered with a store generation below one this client has seen: the
    /// store went back (restored from a backup) and would grant again what it granted since.
    #[error("coordinator {url} answered with store generation {found}, below generation {seen} this client has seen: the store was restored from a backup (or went back); its answers are refused until an operator runs `shardflake repair`")]
    StoreWentBack {
        /// The coordinator that answered.
        url: String,
        /// The highest generation this client has seen.
        seen: u64,
        /// The generation it answered with.
        found: u64,
    },
    /// A bad URL list or token.
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// The API error code, if a coordinator answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A short name of the failure, for logging retries once per kind: the API code,
    /// `unavailable`, `store_mismatch` or `config`.
    pub fn kind(&self) -> &str {
        match self {
            ClientError::Api { code, .. } => code.as_str(),
            ClientError::Unavailable { .. } => "unavailable",
            ClientError::StoreMismatch { .. } => "store_mismatch",
            ClientError::StoreWentBack { .. } => "store_went_back",
            ClientError::Config(_) => "config",
        }
    }
}

/// A client of one or more coordinators sharing a store, with failover between them.
///
/// Requests go to the coordinator that answered last; on a connection error, a timeout or a
/// 5xx the next one is tried, so one coordinator's failure is not seen by the caller.
///
/// **One store.** Every coordinator response names its store (the [`STORE_ID_HEADER`]
/// header). The client pins the first store id it sees and treats a coordinator that answers
/// with another as unusable: it never fails over into a second store, whose host ids are
/// leased to other nodes. [`CoordinatorClient::probe`] checks every URL up front.
#[derive(Debug)]
pub struct CoordinatorClient {
    transport: Arc<dyn Transport>,
    urls: Vec<String>,
    auth: Option<BearerToken>,
    preferred: AtomicUsize,
    timeout: Duration,
    pinned: Mutex<Option<String>>,
    /// `(url, store id)` pairs already reported as foreign, so each is logged once.
    foreign: Mutex<HashSet<(String, String)>>,
    /// The highest store generation seen, sent with every request.
    generation: Mutex<Option<GenerationStamp>>,
    /// The last generation a store went back to, so that it is logged once.
    went_back: Mutex<Option<u64>>,
    /// Conditional GETs: per path, the entity tag and body of the last answer that carried
    /// one (`GET /v1/routing`), sent back in `If-None-Match`; a `304` reuses the body.
    validated: Mutex<HashMap<String, (String, Vec<u8>)>>,
}

/// Paths whose last tagged answer is kept for conditional GETs.
const VALIDATED_PATHS_MAX: usize = 8;

impl CoordinatorClient {
    /// A client of `urls` (`http://host:port`, no path) sending `token` as a bearer token.
    ///
    /// ```
    /// use shardflake_client::CoordinatorClient;
    /// let c = CoordinatorClient::new(
    ///     CoordinatorClient::split_urls("http://10.0.0.1:7070, http://10.0.0.2:7070/"),
    ///     Some("secret".into()),
    /// ).unwrap();
    /// assert_eq!(c.urls(), ["http://10.0.0.1:7070", "http://10.0.0.2:7070"]);
    /// assert!(CoordinatorClient::new(Vec::<String>::new(), None).is_err());
    /// ```
    pub fn new(
        urls: impl IntoIterator<Item = impl Into<String>>,
        token: Option<String>,
    ) -> Result<Self, ClientError> {
        let urls = Self::checked_urls(urls)?;
        let transport = ReqwestTransport::new(Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT))
            .map_err(ClientError::Config)?;
        Self::over(urls, token, Arc::new(transport))
    }

    /// The URLs trimmed (no trailing `/`, blanks dropped), or why they cannot be used.
    fn checked_urls(
        urls: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Vec<String>, ClientError> {
        let urls: Vec<String> = urls
            .into_iter()
            .map(|u| u.into().trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() || urls.len() > URLS_MAX {
            return Err(ClientError::Config(format!(
                "need 1..={URLS_MAX} coordinator URLs, got {}",
                urls.len()
            )));
        }
        if let Some(bad) = urls
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err(ClientError::Config(format!(
                "coordinator URL `{bad}` must start with http:// or https://"
            )));
        }
        Ok(urls)
    }

    /// [`CoordinatorClient::new`] sending every request through `transport` (a simulated
    /// network, a proxy), without building the default HTTP client first.
    pub fn over(
        urls: impl IntoIterator<Item = impl Into<String>>,
        token: Option<String>,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, ClientError> {
        let urls = Self::checked_urls(urls)?;
        Ok(Self {
            transport,
            urls,
            auth: token.map(|t| BearerToken::fixed(&t)),
            preferred: AtomicUsize::new(0),
            timeout: Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT),
            pinned: Mutex::new(None),
            foreign: Mutex::new(HashSet::new()),
            generation: Mutex::new(None),
            went_back: Mutex::new(None),
            validated: Mutex::new(HashMap::new()),
        })
    }

    /// The highest store generation a coordinator has answered with, to be kept across
    /// restarts (a node keeps it in its state directory) and given to
    /// [`CoordinatorClient::with_generation`].
    pub fn generation(&self) -> Option<GenerationStamp> {
        self.generation.lock().expect("poisoned").clone()
    }

    /// Starts from `stamp`, the highest generation seen before (by an earlier run): an
    /// answer below it is refused ([`ClientError::StoreWentBack`]), and coordinators are
    /// told of it, so that a store restored from a backup stops granting. A stamp of another
    /// store is forgotten at the first answer that says so.
    pub fn with_generation(self, stamp: Option<GenerationStamp>) -> Self {
        *self.generation.lock().expect("poisoned") = stamp;
        self
    }

    /// Checks a response's generation against `floor`, the highest seen when its request
    /// was sent (and sent with it: a coordinator whose store is not behind answers at or
    /// above it), and raises the highest seen. Concurrent requests may be answered in any
    /// order, so only `floor` says whether the store went back.
    fn check_generation(
        &self,
        url: &str,
        headers: &http::HeaderMap,
        floor: Option<u64>,
    ) -> Result<(), ClientError> {
        let Some(found) = headers
            .get(GENERATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| GenerationStamp::parse(v).ok())
        else {
            return Ok(());
        };
        let mut seen = self.generation.lock().expect("poisoned");
        match (seen.as_ref(), floor) {
            (_, Some(floor)) if found.generation < floor => {
                let e = ClientError::StoreWentBack {
                    url: url.to_string(),
                    seen: floor,
                    found: found.generation,
                };
                let mut logged = self.went_back.lock().expect("poisoned");
                if *logged != Some(found.generation) {
                    tracing::error!("{e}");
                    *logged = Some(found.generation);
                }
                Err(e)
            }
            (Some(s), _) if found.generation <= s.generation => Ok(()),
            _ => {
                *seen = Some(found);
                Ok(())
            }
        }
    }

    /// The store id this client is pinned to, once a coordinator has answered.
    pub fn store_id(&self) -> Option<String> {
        self.pinned.lock().expect("poisoned").clone()
    }

    /// Checks a response's store id against the pinned one, pinning it if none is.
    fn check_store(&self, url: &str, headers: &http::HeaderMap) -> Result<(), ClientError> {
        let found = match headers.get(STORE_ID_HEADER).and_then(|v| v.to_str().ok()) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => {
                return Err(ClientError::Unavailable {
                    tried: 1,
                    last: format!(
                        "{url}: the response has no {STORE_ID_HEADER} header; not a shardflake coordinator (or an older version)"
                    ),
                })
            }
        };
        let mut pinned = self.pinned.lock().expect("poisoned");
        match pinned.as_deref() {
            None => {
                tracing::info!(store_id = %found, %url, "coordinator store pinned");
                *pinned = Some(found);
                Ok(())
            }
            Some(expected) if expected == found => Ok(()),
            Some(expected) => {
                let e = ClientError::StoreMismatch {
                    url: url.to_string(),
                    expected: expected.to_string(),
                    found: found.clone(),
                };
                if self
                    .foreign
                    .lock()
                    .expect("poisoned")
                    .insert((url.to_string(), found))
                {
                    tracing::error!("{e}");
                }
                Err(e)
            }
        }
    }

    /// Asks every coordinator who it is (`GET /v1/cluster`) and pins the store they share.
    ///
    /// Fails with [`ClientError::StoreMismatch`], naming both ids, if two coordinators answer
    /// for different stores (or one differs from the store already pinned), and with
    /// [`ClientError::Unavailable`] if none answers. Coordinators that do not answer are
    /// skipped: they are checked against the pinned id whenever they answer later.
    pub async fn probe(&self) -> Result<ClusterInfo, ClientError> {
        match self.probe_once().await {
            // A remembered stamp of another store: forgotten; ask again without it.
            Err(e)
                if e.code() == Some(ErrorCode::ForeignGeneration) && self.forget_generation() =>
            {
                self.probe_once().await
            }
            r => r,
        }
    }

    async fn probe_once(&self) -> Result<ClusterInfo, ClientError> {
        let mut first: Option<(String, ClusterInfo)> = None;
        let mut last = String::new();
        for url in &self.urls {
            let full = format!("{url}/v1/cluster");
            let resp = match self
                .exchange(http::Method::GET, &full, None, self.timeout, None)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{full}: {e}");
                    continue;
                }
            };
            let status = resp.status();
            if status.is_server_error() {
                last = format!("{full}: HTTP {status}");
                continue;
            }
            if let Err(e @ ClientError::Unavailable { .. }) = self.check_store(url, resp.headers())
            {
                last = e.to_string();
                continue;
            }
            let text = String::from_utf8_lossy(resp.body()).into_owned();
            if !status.is_success() {
                return Err(api_error(status.as_u16(), &text));
            }
            let info: ClusterInfo =
                serde_json::from_str(&text).map_err(|e| ClientError::Unavailable {
                    tried: 1,
                    last: format!("{full}: undecodable response: {e}"),
                })?;
            match &first {
                None => first = Some((url.clone(), info)),
                Some((first_url, seen)) if seen.store_id != info.store_id => {
                    return Err(ClientError::StoreMismatch {
                        url: url.clone(),
                        expected: format!("{} (from {first_url})", seen.store_id),
                        found: info.store_id,
                    })
                }
                Some(_) => {}
            }
        }
        // A coordinator that answered for a foreign store was refused by `check_store`
        // before its body was read; report it rather than carry on with the others.
        let pinned = self.store_id();
        match first {
            Some((_, info)) if pinned.as_deref() == Some(info.store_id.as_str()) => Ok(info),
            Some((url, info)) => Err(ClientError::StoreMismatch {
                url,
                expected: pinned.unwrap_or_default(),
                found: info.store_id,
            }),
            None => Err(ClientError::Unavailable {
                tried: self.urls.len(),
                last,
            }),
        }
    }

    /// Splits a comma-separated URL list (`--coordinator a,b`).
    pub fn split_urls(list: &str) -> Vec<String> {
        list.split(',').map(str::to_string).collect()
    }

    /// Sets the time limit of one request to one coordinator.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `token` as the bearer credential (its file is re-read when it is reloaded, so a
    /// rotated credential is picked up without a restart).
    pub fn with_bearer(mut self, token: BearerToken) -> Self {
        self.auth = Some(token);
        self
    }

    /// Verifies coordinators against `tls.ca_file` (else the system's roots) and presents
    /// `tls.identity` to coordinators that require client certificates.
    pub fn with_tls(mut self, tls: &ClientTlsFiles) -> Result<Self, ClientError> {
        let t = ReqwestTransport::with_tls(Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT), tls)
            .map_err(ClientError::Config)?;
        self.transport = Arc::new(t);
        Ok(self)
    }

    /// Sends every request through `transport` instead of the default
    /// [`ReqwestTransport`] (a simulated network, a proxy).
    pub fn with_transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = transport;
        self
    }

    /// The coordinator URLs.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, ClientError> {
        self.call(http::Method::POST, path, Some(body), timeout)
            .await
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&Req>,
        timeout: Duration,
    ) -> Result<Resp, ClientError> {
        match self.call_once(method.clone(), path, body, timeout).await {
            // A remembered stamp of another store (a node moved to a new cluster): forgotten;
            // ask again without it.
            Err(e)
                if e.code() == Some(ErrorCode::ForeignGeneration) && self.forget_generation() =>
            {
                self.call_once(method, path, body, timeout).await
            }
            r => r,
        }
    }

    async fn call_once<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&Req>,
        timeout: Duration,
    ) -> Result<Resp, ClientError> {
        let n = self.urls.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut last = String::new();
        let mut mismatch = None;
        // `timeout` bounds the whole call. A coordinator that takes the connection and never
        // answers (a partition that drops packets, a connection stuck in retransmission) must
        // not eat all of it: attempt i of k gets 1/(k - i) of what is left, so the next
        // coordinator — or, with one coordinator, a second attempt on a fresh connection —
        // still answers in time.
        let deadline = tokio::time::Instant::now() + timeout;
        let attempts = n.max(2);
        let mut silent = false;
        for i in 0..attempts {
            // The extra attempt of a single coordinator is for a silent connection only: an
            // answer, even a 5xx, or a refused connection is not retried here.
            if i >= n && !silent {
                break;
            }
            silent = false;
            let idx = (first + i) % n;
            let url = format!("{}{}", self.urls[idx], path);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let share = left / (attempts - i) as u32;
            let body = match body.map(serde_json::to_vec).transpose() {
                Ok(b) => b,
                Err(e) => return Err(ClientError::Config(format!("request body: {e}"))),
            };
            let floor = self.generation().map(|g| g.generation);
            let held = (method == http::Method::GET)
                .then(|| self.validated.lock().expect("poisoned").get(path).cloned())
                .flatten();
            let if_none_match = held.as_ref().map(|(etag, _)| etag.as_str());
            let resp = match self
                .exchange(method.clone(), &url, body, share, if_none_match)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    silent = e.starts_with(NO_ANSWER);
                    last = format!("{url}: {e}");
                    tracing::debug!(%url, error = %e, "coordinator unreachable; trying the next");
                    continue;
                }
            };
            let status = resp.status();
            let text = || String::from_utf8_lossy(resp.body()).into_owned();
            if status.is_server_error() {
                // Every coordinator of the store says the same of a store that went back:
                // say it rather than try the others.
                let e = api_error(status.as_u16(), &text());
                if e.code() == Some(ErrorCode::StoreRestored) {
                    return Err(e);
                }
                last = format!("{url}: HTTP {status}");
                continue;
            }
            // Whatever a coordinator of another store says, success or error, is not about
            // this node's leases: skip it as if it were down. An answer from a store that
            // went back is not used either.
            let checked = self
                .check_store(&self.urls[idx], resp.headers())
                .and_then(|()| self.check_generation(&self.urls[idx], resp.headers(), floor));
            if let Err(e) = checked {
                if matches!(
                    e,
                    ClientError::StoreMismatch { .. } | ClientError::StoreWentBack { .. }
                ) {
                    mismatch = Some(e);
                } else {
                    last = e.to_string();
                }
                continue;
            }
            let not_modified = status == http::StatusCode::NOT_MODIFIED && held.is_some();
            if !status.is_success() && !not_modified {
                return Err(api_error(status.as_u16(), &text()));
            }
            if idx != first && self.preferred.swap(idx, Ordering::Relaxed) % n != idx {
                // Logged once per change of coordinator, not per request.
                tracing::info!(url = %self.urls[idx], previous = %self.urls[first], "failed over to another coordinator of the store");
            }
            if method == http::Method::GET && status.is_success() {
                if let Some(etag) = resp
                    .headers()
                    .get(http::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                {
                    let mut v = self.validated.lock().expect("poisoned");
                    if v.contains_key(path) || v.len() < VALIDATED_PATHS_MAX {
                        v.insert(path.to_string(), (etag.to_string(), resp.body().clone()));
                    }
                }
            }
            let body: &[u8] = match &held {
                Some((_, b)) if not_modified => b,
                _ => resp.body(),
            };
            // 204 responses carry no body; `()` and friends decode from `null`.
            let bytes: &[u8] = match body {
                [] => b"null",
                b => b,
            };
            return serde_json::from_slice(bytes).map_err(|e| ClientError::Unavailable {
                tried: i + 1,
                last: format!("{url}: undecodable response: {e}"),
            });
        }
        Err(mismatch.unwrap_or(ClientError::Unavailable { tried: n, last }))
    }

    /// Forgets the remembered generation (a stamp of another store); whether there was one.
    fn forget_generation(&self) -> bool {
        let forgotten = self.generation.lock().expect("poisoned").take();
        if let Some(s) = &forgotten {
            tracing::warn!(
                generation = s.generation,
                "the remembered store generation belongs to another store; forgotten"
            );
        }
        forgotten.is_some()
    }

    /// One exchange with one coordinator through the transport, within `timeout`.
    async fn exchange(
        &self,
        method: http::Method,
        url: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
        if_none_match: Option<&str>,
    ) -> Result<http::Response<Vec<u8>>, String> {
        let mut rb = http::Request::builder().method(method).uri(url);
        if let Some(etag) = if_none_match {
            rb = rb.header(http::header::IF_NONE_MATCH, etag);
        }
        if let Some(a) = &self.auth {
            rb = rb.header(http::header::AUTHORIZATION, a.header());
        }
        if body.is_some() {
            rb = rb.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(g) = self.generation.lock().expect("poisoned").as_ref() {
            rb = rb.header(GENERATION_HEADER, g.to_string());
        }
        let request = rb
            .body(body.unwrap_or_default())
            .map_err(|e| format!("bad request: {e}"))?;
        match tokio::time::timeout(timeout, self.transport.send(request)).await {
            Ok(r) => r,
            Err(_) => Err(format!("{NO_ANSWER} {} ms", timeout.as_millis())),
        }
    }

    /// `POST /v1/leases`.
    pub async fn acquire(&self, req: &AcquireRequest) -> Result<LeaseGrant, ClientError> {
        self.post("/v1/leases", req, self.timeout).await
    }

    /// `POST /v1/leases/{host_id}/renew`, with a time limit of `timeout`.
    pub async fn renew(
        &self,
        host_id: u32,
        req: &RenewRequest,
        timeout: Duration,
    ) -> Result<RenewResponse, ClientError> {
        self.post(&format!("/v1/leases/{host_id}/renew"), req, timeout)
            .await
    }

    /// `POST /v1/leases/{host_id}/reservation`.
    pub async fn extend_reservation(
        &self,
        host_id: u32,
        req: &ReservationRequest,
    ) -> Result<ReservationResponse, ClientError> {
        self.post(
            &format!("/v1/leases/{host_id}/reservation"),
            req,
            self.timeout,
        )
        .await
    }

    /// `POST /v1/leases/{host_id}/release`.
    pub async fn release(&self, host_id: u32, req: &ReleaseRequest) -> Result<(), ClientError> {
        self.post::<_, Option<()>>(&format!("/v1/leases/{host_id}/release"), req, self.timeout)
            .await
            .map(|_| ())
    }

    /// `POST /v1/blocks`.
    pub async fn block(&self, req: &BlockRequest) -> Result<BlockGrant, ClientError> {
        self.post("/v1/blocks", req, self.timeout).await
    }

    /// `POST /v1/standby/wait`: long-polls for up to `req.timeout_ms`.
    pub async fn standby_wait(
        &self,
        req: &StandbyWaitRequest,
    ) -> Result<StandbyWaitResponse, ClientError> {
        let t = Duration::from_millis(req.timeout_ms.saturating_add(LONG_POLL_SLACK_MS));
        self.post("/v1/standby/wait", req, t).await
    }

    /// `GET /v1/cluster`, from the preferred coordinator.
    pub async fn cluster(&self) -> Result<ClusterInfo, ClientError> {
        self.call::<(), _>(http::Method::GET, "/v1/cluster", None, self.timeout)
            .await
    }

    /// `GET /v1/hosts`.
    pub async fn hosts(&self) -> Result<HostsResponse, ClientError> {
        self.call::<(), _>(http::Method::GET, "/v1/hosts", None, self.timeout)
            .await
    }

    /// `PUT /v1/namespaces/{name}`: creates a namespace or updates its block bounds.
    pub async fn put_namespace(
        &self,
        name: &str,
        spec: &NamespaceSpec,
    ) -> Result<NamespaceStatus, ClientError> {
        self.call(
            http::Method::PUT,
            &format!("/v1/namespaces/{name}"),
            Some(spec),
            self.timeout,
        )
        .await
    }

    /// `GET /v1/namespaces`.
    pub async fn namespaces(&self) -> Result<NamespaceList, ClientError> {
        self.call::<(), _>(http::Method::GET, "/v1/namespaces", None, self.timeout)
            .await
    }

    /// `POST /v1/namespaces/{name}/blocks`: the caller's next block of a namespace.
    pub async fn ns_block(
        &self,
        name: &str,
        req: &NsBlockRequest,
    ) -> Result<NsBlockGrant, ClientError> {
        self.post(&format!("/v1/namespaces/{name}/blocks"), req, self.timeout)
            .await
    }

    /// `POST /v1/namespaces/{name}/return`: gives back the unused tail of the caller's
    /// newest block (under its current token and lease secret).
    pub async fn ns_return(
        &self,
        name: &str,
        req: &NsReturnRequest,
    ) -> Result<NsReturnResponse, ClientError> {
        self.post(&format!("/v1/namespaces/{name}/return"), req, self.timeout)
            .await
    }

    /// `GET /v1/audit`: the live grants and the grant logs, for `shardflake audit`.
    pub async fn audit(&self) -> Result<shardflake_proto::audit::AuditReport, ClientError> {
        self.call::<(), _>(http::Method::GET, "/v1/audit", None, self.timeout)
            .await
    }

    /// `DELETE /v1/namespaces/{name}`: deletes a namespace (admin credential); with `force`,
    /// even while live nodes hold blocks of it.
    pub async fn delete_namespace(
        &self,
        name: &str,
        force: bool,
    ) -> Result<NamespaceDeleted, ClientError> {
        self.call::<(), _>(
            http::Method::DELETE,
            &format!("/v1/namespaces/{name}?force={force}"),
            None,
            self.timeout,
        )
        .await
    }

    /// `POST /v1/namespaces/{name}/raise`: every value granted from now on is at or above
    /// `next_at_least` (admin credential).
    pub async fn raise_namespace(
        &self,
        name: &str,
        next_at_least: u64,
    ) -> Result<NamespaceStatus, ClientError> {
        self.post(
            &format!("/v1/namespaces/{name}/raise"),
            &NsRaiseRequest { next_at_least },
            self.timeout,
        )
        .await
    }

    /// `POST /v1/repair`: repairs a store restored from a backup (admin credential).
    pub async fn repair(&self, req: &RepairRequest) -> Result<RepairReport, ClientError> {
        self.post("/v1/repair", req, self.timeout).await
    }

    /// `GET /v1/routing`: live nodes and each namespace's serving nodes. Conditional: the
    /// table's entity tag is sent back, and an unchanged table (`304`) costs no body.
    pub async fn routing(&self) -> Result<RoutingTable, ClientError> {
        self.call::<(), _>(http::Method::GET, "/v1/routing", None, self.timeout)
            .await
    }
}

fn api_error(status: u16, text: &str) -> ClientError {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(b) => ClientError::Api {
            status,
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => ClientError::Api {
            status,
            code: ErrorCode::Unknown,
            message: text.to_string(),
        },
    }
}
