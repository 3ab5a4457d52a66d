//! The network seam: the client's [`Transport`] and axum's
//! [`Listener`](axum::serve::Listener) over turmoil's simulated TCP, with the faults TCP alone
//! does not show — a request lost before it reached the coordinator, an answer lost after the
//! coordinator applied the request, and a request delivered again later (duplicated and
//! reordered behind newer ones).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use shardflake::FastRng;
use shardflake_client::{Transport, TransportFuture};

use crate::trace::Trace;

/// Rates of the message faults a transport injects, in parts per million of requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageFaults {
    /// The request never arrives.
    pub lose_request_ppm: u32,
    /// The coordinator applies the request but the answer never arrives.
    pub lose_answer_ppm: u32,
    /// A copy of the request arrives again up to [`REPLAY_DELAY_MS_MAX`] later.
    pub replay_ppm: u32,
}

/// Longest delay of a replayed request (ms).
pub const REPLAY_DELAY_MS_MAX: u64 = 3_000;

/// Requests captured on the wire (the last [`WIRETAP_KEPT`] POSTs the nodes sent, secrets
/// included), for a lying client to replay.
#[derive(Debug, Clone, Default)]
pub struct Wiretap(Arc<Mutex<std::collections::VecDeque<http::Request<Vec<u8>>>>>);

/// Requests a [`Wiretap`] keeps.
pub const WIRETAP_KEPT: usize = 64;

impl Wiretap {
    fn capture(&self, r: &http::Request<Vec<u8>>) {
        if r.method() != http::Method::POST {
            return;
        }
        let mut kept = self.0.lock().expect("wiretap");
        if kept.len() == WIRETAP_KEPT {
            kept.pop_front();
        }
        kept.push_back(clone_request(r));
    }

    /// A copy of one captured request, drawn by `rng`.
    pub fn pick(&self, rng: &mut FastRng) -> Option<http::Request<Vec<u8>>> {
        let kept = self.0.lock().expect("wiretap");
        if kept.is_empty() {
            return None;
        }
        Some(clone_request(
            &kept[(rng.next_u64() % kept.len() as u64) as usize],
        ))
    }
}

/// A node's transport to the coordinators over the simulated network.
#[derive(Debug)]
pub struct SimTransport {
    host: String,
    faults: Arc<Mutex<MessageFaults>>,
    rng: Mutex<FastRng>,
    trace: Trace,
    wiretap: Option<Wiretap>,
    /// When the last lease request that was answered with a grant or a renewal was sent
    /// (simulated ms): the node's lease runs out a TTL, less its drift margin, after it.
    lease_sent_ms: Option<Arc<AtomicU64>>,
    /// While set, the answers to lease renewals are lost (the renewals arrive).
    lose_renewal_answers: Arc<AtomicBool>,
}

impl SimTransport {
    /// The transport of `host`, drawing its faults from `rng`.
    pub fn new(host: &str, faults: Arc<Mutex<MessageFaults>>, rng: FastRng, trace: Trace) -> Self {
        Self {
            host: host.to_string(),
            faults,
            rng: Mutex::new(rng),
            trace,
            wiretap: None,
            lease_sent_ms: None,
            lose_renewal_answers: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Loses the answers to lease renewals while `lose` is set.
    pub fn losing_renewal_answers(mut self, lose: Arc<AtomicBool>) -> Self {
        self.lose_renewal_answers = lose;
        self
    }

    /// Notes in `at` when each acknowledged acquire or renewal was sent.
    pub fn noting_leases(mut self, at: Arc<AtomicU64>) -> Self {
        self.lease_sent_ms = Some(at);
        self
    }

    /// Copies every request sent into `wiretap`.
    pub fn tapped(mut self, wiretap: Wiretap) -> Self {
        self.wiretap = Some(wiretap);
        self
    }

    fn roll(&self, ppm: u32) -> bool {
        ppm > 0 && self.rng.lock().expect("rng").next_u64() % 1_000_000 < u64::from(ppm)
    }

    fn below(&self, max: u64) -> u64 {
        self.rng.lock().expect("rng").next_u64() % max.max(1)
    }
}

impl Transport for SimTransport {
    fn send(&self, request: http::Request<Vec<u8>>) -> TransportFuture<'_> {
        Box::pin(async move {
            let f = *self.faults.lock().expect("faults");
            if let Some(w) = &self.wiretap {
                w.capture(&request);
            }
            let what = format!("{} {}", request.method(), request.uri().path());
            if self.roll(f.replay_ppm) {
                let copy = clone_request(&request);
                let delay = Duration::from_millis(self.below(REPLAY_DELAY_MS_MAX));
                self.trace.fault(
                    &self.host,
                    &format!("replay: in {} ms, {what}", delay.as_millis()),
                );
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = exchange(copy).await;
                });
            }
            if self.roll(f.lose_request_ppm) {
                self.trace
                    .fault(&self.host, &format!("lose_request: {what}"));
                // The sender notices only by its time limit.
                std::future::pending::<()>().await;
            }
            let lease_request = request.method() == http::Method::POST
                && (request.uri().path() == "/v1/leases"
                    || request.uri().path().ends_with("/renew"));
            let sent = crate::trace::now_ms();
            let answer = exchange(request).await?;
            let renewal = what.ends_with("/renew");
            if self.roll(f.lose_answer_ppm)
                || (renewal && self.lose_renewal_answers.load(Ordering::Relaxed))
            {
                self.trace
                    .fault(&self.host, &format!("lose_answer: {what}"));
                return Err("connection reset before the answer arrived".into());
            }
            if let Some(at) = self.lease_sent_ms.as_ref().filter(|_| lease_request) {
                if answer.status().is_success() {
                    at.fetch_max(sent, Ordering::Relaxed);
                }
            }
            Ok(answer)
        })
    }
}

fn clone_request(r: &http::Request<Vec<u8>>) -> http::Request<Vec<u8>> {
    let mut b = http::Request::builder()
        .method(r.method().clone())
        .uri(r.uri().clone());
    for (k, v) in r.headers() {
        b = b.header(k, v);
    }
    b.body(r.body().clone()).expect("a copy of a valid request")
}

/// One HTTP/1.1 exchange over a new simulated TCP connection.
pub(crate) async fn exchange(
    request: http::Request<Vec<u8>>,
) -> Result<http::Response<Vec<u8>>, String> {
    let authority = request
        .uri()
        .authority()
        .ok_or_else(|| format!("no host in {}", request.uri()))?
        .to_string();
    let stream = turmoil::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake {authority}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let (mut parts, body) = request.into_parts();
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .map_err(|e| format!("{e}"))?;
    parts.headers.insert(
        http::header::HOST,
        http::HeaderValue::from_str(&authority).map_err(|e| e.to_string())?,
    );
    let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{authority}: body: {e}"))?
        .to_bytes();
    Ok(http::Response::from_parts(parts, body.to_vec()))
}

/// A turmoil listener that axum can serve.
pub struct SimListener(pub turmoil::net::TcpListener);

impl axum::serve::Listener for SimListener {
    type Io = turmoil::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}
