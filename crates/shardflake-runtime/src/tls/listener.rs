//! The listener both services serve on: plain TCP, or TLS with handshakes off the accept loop.
//!
//! In TLS mode a background task accepts TCP connections and gives each its own handshake
//! task, so a slow or silent client (a port scanner, a half-open connection) never holds up
//! the next one. At most [`HANDSHAKES_IN_FLIGHT_MAX`] handshakes run at once, at most
//! [`HANDSHAKES_PER_ADDRESS_MAX`] of them from one address (one IPv4 address, one IPv6 /64),
//! so a single host opening silent connections cannot fill every slot and starve the nodes'
//! renewals; a connection must send its first byte within [`FIRST_BYTE_TIMEOUT_MS`] and
//! finish its handshake within [`HANDSHAKE_TIMEOUT_MS`]. Finished connections wait in a
//! bounded queue for
//! [`axum::serve::Listener::accept`]. Dropping the listener (graceful shutdown does) stops the
//! background task.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use shardflake_proto::ErrorCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::server::NameRefused;
use super::ServerTls;

/// The longest a connection may take from TCP accept to a finished TLS handshake.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// The most handshakes under way at once; when full, the accept loop waits for one to end and
/// further connections wait in the kernel's backlog.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 1024;
/// The most handshakes under way at once from one address (IPv4) or one /64 (IPv6); more
/// connections from it are closed at once.
pub const HANDSHAKES_PER_ADDRESS_MAX: usize = 32;
/// The longest a new connection may stay silent before its first byte.
pub const FIRST_BYTE_TIMEOUT_MS: u64 = 2_000;
/// The most handshaken connections waiting for the server to take them.
const ACCEPTED_QUEUE_MAX: usize = 64;
/// The first pause after a failed TCP accept; it doubles per failure in a row.
const ACCEPT_BACKOFF_FIRST_MS: u64 = 1;
/// The longest pause after a failed TCP accept.
const ACCEPT_BACKOFF_MS_MAX: u64 = 1_000;
/// The most bytes of a plain-HTTP request read (and dropped) after answering it, so that the
/// close does not reset the connection before the client has read the answer.
const PLAIN_HTTP_DRAIN_BYTES_MAX: usize = 64 * 1024;
/// The first byte of every TLS connection: the content type of a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// What a client speaking plain HTTP to the TLS port is told.
const PLAIN_HTTP_MESSAGE: &str = "this port speaks HTTPS (TLS): use an https:// URL";

/// The listener both services serve on: plain TCP or TLS over TCP.
///
/// It implements [`axum::serve::Listener`] so that
/// `axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())` works for both.
pub struct ServiceListener {
    mode: Mode,
    handshake_failures: HandshakeFailures,
}

enum Mode {
    Plain {
        tcp: TcpListener,
        backoff: AcceptBackoff,
    },
    Tls {
        /// Kept because the TCP listener moved into the background task.
        local_addr: SocketAddr,
        accepted: mpsc::Receiver<(ServiceIo, SocketAddr)>,
        _acceptor: AbortOnDrop,
    },
}

/// The number of failed TLS handshakes (timeouts, plain HTTP, protocol errors, refused client
/// names) since the listener was made; a handle that outlives moving the listener into
/// `axum::serve`, for metrics.
#[derive(Debug, Clone, Default)]
pub struct HandshakeFailures(Arc<AtomicU64>);

impl HandshakeFailures {
    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn increment(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl From<TcpListener> for ServiceListener {
    /// Plain HTTP on `tcp`.
    fn from(tcp: TcpListener) -> Self {
        Self::plain(tcp)
    }
}

impl ServiceListener {
    /// Serves plain HTTP on `tcp`.
    pub fn plain(tcp: TcpListener) -> Self {
        Self {
            mode: Mode::Plain {
                tcp,
                backoff: AcceptBackoff::default(),
            },
            handshake_failures: HandshakeFailures::default(),
        }
    }

    /// Serves HTTPS on `tcp` with the configuration `tls` holds at each handshake. Must be
    /// called within a tokio runtime: it spawns the accept task.
    pub fn tls(tcp: TcpListener, tls: ServerTls) -> Self {
        let local_addr = tcp
            .local_addr()
            .expect("a bound TCP listener knows its address");
        let handshake_failures = HandshakeFailures::default();
        let (sender, accepted) = mpsc::channel(ACCEPTED_QUEUE_MAX);
        let handshakes = Arc::new(Handshakes {
            tls,
            sender,
            failures: handshake_failures.clone(),
            last_refusal: Mutex::new(None),
            per_address: Mutex::new(std::collections::HashMap::new()),
            last_crowd: Mutex::new(None),
        });
        let task = tokio::spawn(accept_loop(tcp, handshakes));
        Self {
            mode: Mode::Tls {
                local_addr,
                accepted,
                _acceptor: AbortOnDrop(task),
            },
            handshake_failures,
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.mode {
            Mode::Plain { tcp, .. } => tcp.local_addr(),
            Mode::Tls { local_addr, .. } => Ok(*local_addr),
        }
    }

    /// Whether the listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.mode, Mode::Tls { .. })
    }

    /// The number of failed TLS handshakes so far (always 0 in plain mode).
    pub fn handshake_failures(&self) -> u64 {
        self.handshake_failures.get()
    }

    /// A handle on the failed-handshake count that stays valid after the listener is moved.
    pub fn handshake_failure_counter(&self) -> HandshakeFailures {
        self.handshake_failures.clone()
    }
}

impl Listener for ServiceListener {
    type Io = ServiceIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ServiceIo, SocketAddr) {
        match &mut self.mode {
            Mode::Plain { tcp, backoff } => {
                let (stream, addr) = accept_tcp(tcp, backoff).await;
                (ServiceIo::Plain(stream), addr)
            }
            Mode::Tls { accepted, .. } => match accepted.recv().await {
                Some(connection) => connection,
                // The accept task holds a sender for as long as it runs, and it runs until the
                // listener is dropped.
                None => unreachable!("the TLS accept task ended while its listener is alive"),
            },
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        ServiceListener::local_addr(self)
    }
}

/// Aborts the accept task when the listener is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The pause after failed TCP accepts (out of file descriptors, out of memory): waiting lets
/// connections close, where retrying at once would spin. One log line per change of error.
#[derive(Default)]
struct AcceptBackoff {
    delay_ms: u64,
    last_error: Option<String>,
    errors: u64,
}

impl AcceptBackoff {
    async fn failed(&mut self, error: io::Error) {
        self.errors += 1;
        let text = error.to_string();
        if self.last_error.as_deref() != Some(text.as_str()) {
            tracing::error!(
                %error,
                errors_total = self.errors,
                "accepting a TCP connection failed; retrying with backoff (logged again when the error changes)"
            );
            self.last_error = Some(text);
        }
        self.delay_ms = match self.delay_ms {
            0 => ACCEPT_BACKOFF_FIRST_MS,
            ms => (ms * 2).min(ACCEPT_BACKOFF_MS_MAX),
        };
        tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
    }

    fn succeeded(&mut self) {
        self.delay_ms = 0;
    }
}

/// The next TCP connection, with `TCP_NODELAY` set: responses are small and written whole,
/// so Nagle's algorithm would only delay them.
async fn accept_tcp(tcp: &TcpListener, backoff: &mut AcceptBackoff) -> (TcpStream, SocketAddr) {
    loop {
        match tcp.accept().await {
            Ok((stream, addr)) => {
                backoff.succeeded();
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(peer = %addr, %error, "cannot set TCP_NODELAY");
                }
                return (stream, addr);
            }
            Err(error) => backoff.failed(error).await,
        }
    }
}

/// What every handshake task shares.
struct Handshakes {
    tls: ServerTls,
    sender: mpsc::Sender<(ServiceIo, SocketAddr)>,
    failures: HandshakeFailures,
    /// The last refused client (address and name), so that a client retrying in a loop logs
    /// one warning, not one per attempt.
    last_refusal: Mutex<Option<(IpAddr, Option<String>)>>,
    /// Handshakes under way per address (IPv6: per /64); an entry goes when its count does.
    per_address: Mutex<std::collections::HashMap<IpAddr, usize>>,
    /// The last address turned away for too many handshakes, logged once per change.
    last_crowd: Mutex<Option<IpAddr>>,
}

/// One handshake counted against its address; the count goes down when it is dropped.
struct AddressSlot {
    handshakes: Arc<Handshakes>,
    key: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self
            .handshakes
            .per_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl Handshakes {
    /// A slot for a handshake from `addr`, or `None` when its address has
    /// [`HANDSHAKES_PER_ADDRESS_MAX`] under way already.
    fn slot(self: &Arc<Self>, addr: SocketAddr) -> Option<AddressSlot> {
        let key = crate::limit::address_key(addr.ip());
        let mut map = self
            .per_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(key).or_insert(0);
        if *n >= HANDSHAKES_PER_ADDRESS_MAX {
            drop(map);
            self.failures.increment();
            let mut last = self
                .last_crowd
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *last != Some(key) {
                tracing::warn!(peer = %addr, max = HANDSHAKES_PER_ADDRESS_MAX,
                    "too many TLS handshakes under way from one address; closing its new connections");
                *last = Some(key);
            }
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            handshakes: Arc::clone(self),
            key,
        })
    }
}

/// Why a connection did not become a TLS connection.
enum HandshakeFailure {
    /// Closed before sending a byte.
    Closed,
    /// Spoke plain HTTP; is answered with a 400.
    PlainHttp(TcpStream),
    /// Took longer than [`HANDSHAKE_TIMEOUT_MS`].
    TimedOut,
    /// Failed the handshake (protocol error, no or untrusted client certificate, I/O error).
    Io(io::Error),
    /// Presented a valid certificate for a name not in `--client-names`; is closed.
    NameRefused {
        refused: NameRefused,
        stream: Box<TlsStream<TcpStream>>,
    },
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeFailure::Closed => f.write_str("closed before sending anything"),
            HandshakeFailure::PlainHttp(_) => f.write_str("spoke plain HTTP; answered 400"),
            HandshakeFailure::TimedOut => write!(f, "took longer than {HANDSHAKE_TIMEOUT_MS} ms"),
            HandshakeFailure::Io(error) => write!(f, "{error}"),
            HandshakeFailure::NameRefused { .. } => f.write_str("client name not allowed"),
        }
    }
}

impl HandshakeFailure {
    /// What a failed connection is told before it closes.
    async fn farewell(self) {
        match self {
            HandshakeFailure::PlainHttp(stream) => answer_plain_http(stream).await,
            // Best effort: a close_notify tells the client the server ended the connection.
            HandshakeFailure::NameRefused { mut stream, .. } => drop(stream.shutdown().await),
            _ => {}
        }
    }
}

async fn accept_loop(tcp: TcpListener, handshakes: Arc<Handshakes>) {
    let permits = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
    let mut backoff = AcceptBackoff::default();
    loop {
        // The permit comes first, so that a full house stops accepting instead of holding
        // accepted connections no task serves.
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, addr) = accept_tcp(&tcp, &mut backoff).await;
        // Closing at once frees the permit: a crowd from one address costs it nothing but
        // its own connections.
        let Some(slot) = handshakes.slot(addr) else {
            drop(stream);
            continue;
        };
        tokio::spawn(Arc::clone(&handshakes).run(stream, addr, (permit, slot)));
    }
}

impl Handshakes {
    /// One connection's handshake task; the permit is released when it ends, which includes
    /// waiting for room in the queue, so a server that stops taking connections stops the
    /// accept loop too.
    async fn run(
        self: Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        _permits: (OwnedSemaphorePermit, AddressSlot),
    ) {
        // One deadline for the whole connection, the farewell of a failed one included.
        let deadline = Instant::now() + Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
        let outcome = timeout_at(deadline, self.handshake(stream))
            .await
            .unwrap_or(Err(HandshakeFailure::TimedOut));
        match outcome {
            // A closed queue means the listener is gone (shutdown): the connection just closes.
            Ok(io) => drop(self.sender.send((io, addr)).await),
            Err(failure) => {
                // Counted before the farewell, so the count is up to date when a client
                // sees its connection end.
                self.failed(addr, &failure);
                let _elapsed = timeout_at(deadline, failure.farewell()).await;
            }
        }
    }

    async fn handshake(&self, stream: TcpStream) -> Result<ServiceIo, HandshakeFailure> {
        let mut first = [0u8; 1];
        let first_byte = Duration::from_millis(FIRST_BYTE_TIMEOUT_MS);
        let peeked = tokio::time::timeout(first_byte, stream.peek(&mut first))
            .await
            .map_err(|_| HandshakeFailure::TimedOut)?;
        match peeked.map_err(HandshakeFailure::Io)? {
            0 => return Err(HandshakeFailure::Closed),
            _ if first[0] != TLS_HANDSHAKE_RECORD => {
                return Err(HandshakeFailure::PlainHttp(stream))
            }
            _ => {}
        }
        let stream = TlsAcceptor::from(self.tls.config())
            .accept(stream)
            .await
            .map_err(HandshakeFailure::Io)?;
        match self.tls.peer_name(stream.get_ref().1.peer_certificates()) {
            Ok(cert_name) => Ok(ServiceIo::Tls {
                stream: Box::new(stream),
                cert_name,
            }),
            Err(refused) => Err(HandshakeFailure::NameRefused {
                refused,
                stream: Box::new(stream),
            }),
        }
    }

    fn failed(&self, addr: SocketAddr, failure: &HandshakeFailure) {
        self.failures.increment();
        match failure {
            HandshakeFailure::NameRefused { refused, .. } => self.log_refusal(addr, refused),
            // Scanners and health checks that only open a TCP connection are normal.
            failure => tracing::debug!(peer = %addr, %failure, "TLS handshake failed"),
        }
    }

    fn log_refusal(&self, addr: SocketAddr, refused: &NameRefused) {
        let key = (addr.ip(), refused.presented.clone());
        let mut last = self
            .last_refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let name = key.1.as_deref().unwrap_or("(no DNS name)");
        if last.as_ref() == Some(&key) {
            tracing::debug!(peer = %addr, name, "client certificate not in --client-names; closed");
            return;
        }
        tracing::warn!(peer = %addr, name, "client certificate is not valid for any name of --client-names; connection closed");
        *last = Some(key);
    }
}

/// Tells a client that speaks plain HTTP to the TLS port what to do, then closes.
async fn answer_plain_http(mut stream: TcpStream) {
    let body = format!(
        r#"{{"error":{{"code":"{}","message":"{}"}}}}"#,
        ErrorCode::BadRequest.as_str(),
        PLAIN_HTTP_MESSAGE
    );
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(response.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    // Closing with unread request bytes would make the kernel send a reset, which can discard
    // the answer before the client reads it; so read until the client closes too.
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while drained < PLAIN_HTTP_DRAIN_BYTES_MAX {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// A connection of a [`ServiceListener`]: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum ServiceIo {
    /// A plain TCP connection.
    Plain(TcpStream),
    /// A TLS connection whose handshake has finished.
    Tls {
        /// The connection.
        stream: Box<TlsStream<TcpStream>>,
        /// The client's name from its verified certificate (see [`Peer::cert_name`]).
        cert_name: Option<String>,
    },
}

impl ServiceIo {
    /// The client's name from its verified certificate, if any.
    pub fn cert_name(&self) -> Option<&str> {
        match self {
            ServiceIo::Plain(_) => None,
            ServiceIo::Tls { cert_name, .. } => cert_name.as_deref(),
        }
    }
}

impl AsyncRead for ServiceIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServiceIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServiceIo::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServiceIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServiceIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServiceIo::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServiceIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServiceIo::Tls { stream, .. } => {
                Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServiceIo::Plain(s) => s.is_write_vectored(),
            ServiceIo::Tls { stream, .. } => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServiceIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ServiceIo::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServiceIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServiceIo::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Who is on the other end of a connection: its address, and for mutual TLS the name from its
/// verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// With `--client-names`, the name that matched; without, the certificate's first DNS
    /// name; `None` without a client certificate.
    pub cert_name: Option<String>,
}

impl Connected<IncomingStream<'_, ServiceListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, ServiceListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            cert_name: stream.io().cert_name().map(str::to_owned),
        }
    }
}
