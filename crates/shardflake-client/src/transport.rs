//! [`Transport`]: how a [`CoordinatorClient`](crate::CoordinatorClient) exchanges one HTTP
//! request with one coordinator.
//!
//! The client decides everything — which coordinator, failover, the store-id check, error
//! codes, time limits — and hands a transport only finished requests. The default is
//! [`ReqwestTransport`] (a connection pool over real TCP); the deterministic simulation
//! (`shardflake-sim`) puts the same client over a simulated network through this seam, so the
//! code under test there is the code that runs in production.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use shardflake_runtime::tls::client_config;
pub use shardflake_runtime::tls::install_default_provider;
pub use shardflake_runtime::tls::ClientTlsFiles;

/// A boxed future, as the transport returns it.
pub type TransportFuture<'a> =
    Pin<Box<dyn Future<Output = Result<http::Response<Vec<u8>>, String>> + Send + 'a>>;

/// One request/response exchange with a coordinator.
///
/// An `Err` is a failure to get an answer at all (connection refused, reset, a body cut off)
/// and makes the client try the next coordinator; any HTTP answer, 5xx included, is an `Ok`.
/// The client enforces its time limits around the returned future, so a transport need not.
pub trait Transport: Send + Sync + Debug + 'static {
    /// Sends `request` (an absolute `http://` or `https://` URL) and reads the whole answer.
    fn send(&self, request: http::Request<Vec<u8>>) -> TransportFuture<'_>;
}

/// The production transport: `reqwest` with a connection pool, `TCP_NODELAY`, a connect
/// time limit, and rustls (ring) for `https://` URLs: the system's roots, or the CA file and
/// client certificate of [`ClientTlsFiles`].
///
/// It never follows a redirect: a `307` would send the request's body — a lease secret —
/// wherever the `Location` points, `http://` included. The id client follows a node's `307`
/// itself, to a node of the routing table, and the coordinators never redirect.
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    http: reqwest::Client,
}

impl ReqwestTransport {
    /// A pool whose connection attempts give up after `connect_timeout`, trusting the
    /// system's roots for `https://`.
    pub fn new(connect_timeout: Duration) -> Result<Self, String> {
        Self::with_tls(connect_timeout, &ClientTlsFiles::default())
    }

    /// [`ReqwestTransport::new`] verifying servers against `tls.ca_file` (when given) and
    /// presenting `tls.identity` for mutual TLS.
    pub fn with_tls(connect_timeout: Duration, tls: &ClientTlsFiles) -> Result<Self, String> {
        // Ours name their provider; this makes reqwest clients that others build in this
        // process (with the workspace's `rustls-no-provider`) work too.
        install_default_provider();
        let config = client_config(tls).map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .tls_backend_preconfigured(config)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| chain(&e))?;
        Ok(Self { http })
    }
}

impl Transport for ReqwestTransport {
    fn send(&self, request: http::Request<Vec<u8>>) -> TransportFuture<'_> {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request).map_err(|e| e.to_string())?;
            let response = self.http.execute(request).await.map_err(|e| chain(&e))?;
            let mut builder = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = response.bytes().await.map_err(|e| chain(&e))?;
            builder.body(body.to_vec()).map_err(|e| e.to_string())
        })
    }
}

/// An error with its causes (`error sending request: ... : Connection refused`): reqwest's
/// own message alone does not say what failed.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
