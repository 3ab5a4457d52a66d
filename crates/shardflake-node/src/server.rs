//! Serving: the connection-limited listener, [`serve_state`] with graceful shutdown, and
//! [`run`], which opens the node for a validated configuration and serves it. The process
//! around it (flags, logging, runtime, signals) is the `shardflake` binary's.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use shardflake::SystemClock;
use shardflake_runtime::reload::{self, Reload};
use shardflake_runtime::tls::{ServiceIo, ServiceListener};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{error, info, warn};

use crate::config::NodeConfig;
use crate::gate::ClientAddr;
use crate::http::app;
use crate::state::{AppState, Shared, StartError};
use crate::state_file::StateError;

/// After a shutdown signal, connections still open after this long are dropped.
pub const SHUTDOWN_DRAIN_MS: u64 = 10_000;

/// Why serving stopped with an error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RunError {
    /// The listener failed.
    #[error("serving failed: {0}")]
    Io(#[from] io::Error),
    /// The final state could not be written.
    #[error("final state write failed: {0}")]
    State(#[from] StateError),
    /// Cluster mode: the node stopped because the cluster is not one it may serve
    /// (coordinators of different stores, another layout).
    #[error("cluster misconfigured: {0}")]
    Cluster(String),
}

/// Why [`run`] could not start the node or stopped with an error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The node could not start (state file, generator, coordinator settings).
    #[error(transparent)]
    Start(#[from] StartError),
    /// The listening socket's address could not be read.
    #[error("cannot read the listening address: {0}")]
    Listener(io::Error),
    /// Serving stopped with an error.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Accepts connections while fewer than the limit are open; beyond it, new clients wait in
/// the kernel's accept queue (back-pressure instead of refused connections).
struct LimitedListener {
    inner: ServiceListener,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
}

/// A connection holding one of the listener's permits until it closes.
struct LimitedIo {
    io: ServiceIo,
    _permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
}

impl Connected<IncomingStream<'_, LimitedListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, LimitedListener>) -> Self {
        ClientAddr {
            addr: *stream.remote_addr(),
            cert_name: stream.io().io.cert_name().map(str::to_string),
        }
    }
}

impl Drop for LimitedIo {
    fn drop(&mut self) {
        self.shared.metrics.connections_open.dec();
    }
}

impl Listener for LimitedListener {
    type Io = LimitedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        // The service listener backs off on accept errors (e.g. EMFILE), finishes TLS
        // handshakes off the accept loop, and sets TCP_NODELAY (responses are small and
        // written at once; Nagle would only add latency).
        let (io, addr) = Listener::accept(&mut self.inner).await;
        let m = &self.shared.metrics;
        m.connections_open.inc();
        m.connections_total.inc();
        (
            LimitedIo {
                io,
                _permit: permit,
                shared: self.shared.clone(),
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for LimitedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        AsyncWrite::is_write_vectored(&self.io)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Serves `state` on `listener` until `shutdown` completes, then drains: stops accepting,
/// lets in-flight requests finish (at most [`SHUTDOWN_DRAIN_MS`]), fences the generator and
/// persists the final state. Starts the background keeper if it is not running.
pub async fn serve_state(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    state.start_keeper();
    let listener = match &state.config().tls {
        Some(tls) => ServiceListener::tls(listener, tls.clone()),
        None => ServiceListener::plain(listener),
    };
    let reloader = reload::spawn(reloadable(state.config()), state.config().reload);
    let listener = LimitedListener {
        inner: listener,
        permits: Arc::new(Semaphore::new(state.config().max_connections)),
        shared: state.shared.clone(),
    };
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let draining = state.clone();
    let failed = state.shared.clone();
    let stopped_by_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let failure_seen = stopped_by_failure.clone();
    let graceful = async move {
        tokio::select! {
            _ = shutdown => info!("shutdown requested: draining connections"),
            reason = cluster_failure(&failed) => {
                error!("stopping: {reason}");
                *failure_seen.lock().expect("failure mutex") = Some(reason);
            }
        }
        draining.begin_shutdown();
        let _ = drain_tx.send(());
    };
    let service = app(state.clone()).into_make_service_with_connect_info::<ClientAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(graceful);
    let drain_deadline = async move {
        match drain_rx.await {
            Ok(()) => tokio::time::sleep(Duration::from_millis(SHUTDOWN_DRAIN_MS)).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        r = async { server.await } => r?,
        _ = drain_deadline => warn!(
            "connections still open {SHUTDOWN_DRAIN_MS} ms after the shutdown signal: closing them"
        ),
    }
    reloader.abort();
    state.shutdown().await?;
    if let Some(reason) = stopped_by_failure.lock().expect("failure mutex").take() {
        return Err(RunError::Cluster(reason));
    }
    Ok(())
}

/// What the node reloads on `SIGHUP` or change: its certificate, its client credentials and
/// the node credential it sends to the coordinators.
fn reloadable(config: &NodeConfig) -> Vec<Arc<dyn Reload>> {
    let mut out: Vec<Arc<dyn Reload>> = Vec::new();
    if let Some(tls) = &config.tls {
        out.push(Arc::new(tls.clone()));
    }
    if let Some(c) = &config.clients.credentials {
        out.push(Arc::new(c.clone()));
    }
    if let Some(t) = config.cluster.as_ref().and_then(|c| c.token.clone()) {
        out.push(Arc::new(t));
    }
    out
}

/// Resolves with the reason once the lease keeper has stopped for a configuration error
/// (never in standalone mode).
async fn cluster_failure(shared: &Shared) -> String {
    let Some(cluster) = shared.cluster() else {
        return std::future::pending().await;
    };
    loop {
        let notified = cluster.failed_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(reason) = shared.failure() {
            return reason;
        }
        notified.await;
    }
}

/// Opens the node for `config` on the system clock (standalone, or in cluster mode the lease
/// keeper) and serves it on `listener` until `shutdown` completes; see [`serve_state`].
/// Logs a `listening` line with the bound address first. Needs a tokio runtime.
pub async fn run(
    listener: TcpListener,
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let local = listener.local_addr().map_err(ServeError::Listener)?;
    // The address actually bound (a port of 0 asks the system for one): the holder name and
    // the advertised URL carry it.
    let mut config = config;
    config.listen = local;
    let state = if config.cluster.is_some() {
        AppState::open_cluster(config, Arc::new(SystemClock))?
    } else {
        AppState::open(config)?
    };
    let cfg = state.config();
    if cfg.tls.is_none() && !local.ip().is_loopback() && cfg.cluster.is_some() {
        warn!("plain HTTP on {local}, which other machines can reach: ids and client credentials cross the network in clear; serve HTTPS with --tls-cert and --tls-key");
    }
    info!(
        addr = %local,
        scheme = if cfg.tls.is_some() { "https" } else { "http" },
        layout = %cfg.layout_label(),
        node = %cfg.node_label(),
        clock_policy = %cfg.clock_policy,
        state_file = %state.state_file().display(),
        "listening"
    );
    serve_state(listener, state, shutdown).await?;
    Ok(())
}
