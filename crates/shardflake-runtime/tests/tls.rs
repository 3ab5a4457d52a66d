//! The TLS listener and configurations end to end: real sockets on 127.0.0.1, certificates made
//! at run time by a throwaway CA and written as PEM files to a temporary directory.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use shardflake_runtime::testing::{server_files, Pki};
use shardflake_runtime::tls::{
    client_config, install_default_provider, ClientTlsFiles, HandshakeFailures, Peer, ServerTls,
    ServerTlsFiles, ServiceListener, TlsError, FIRST_BYTE_TIMEOUT_MS, HANDSHAKES_PER_ADDRESS_MAX,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How many times a test polls for something another task does; each poll waits `POLL_MS`.
const POLL_ATTEMPTS_MAX: u32 = 500;
const POLL_MS: u64 = 10;

const PLAIN_HTTP_BODY: &str = r#"{"error":{"code":"bad_request","message":"this port speaks HTTPS (TLS): use an https:// URL"}}"#;

/// A running server whose `GET /who` answers `"{peer addr} {cert name or -}"`.
struct Server {
    addr: SocketAddr,
    failures: HandshakeFailures,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

async fn who(ConnectInfo(peer): ConnectInfo<Peer>) -> String {
    format!("{} {}", peer.addr, peer.cert_name.as_deref().unwrap_or("-"))
}

async fn serve(listener: ServiceListener) -> Server {
    let addr = listener.local_addr().unwrap();
    let failures = listener.handshake_failure_counter();
    let app = Router::new().route("/who", get(who));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(async move { stopped.await.unwrap_or(()) })
            .await
    });
    Server {
        addr,
        failures,
        stop,
        task,
    }
}

async fn serve_tls(files: ServerTlsFiles) -> (Server, ServerTls) {
    install_default_provider();
    let tls = ServerTls::load(files).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = ServiceListener::tls(tcp, tls.clone());
    assert!(listener.is_tls());
    (serve(listener).await, tls)
}

async fn connect(addr: SocketAddr, files: &ClientTlsFiles) -> io::Result<TlsStream<TcpStream>> {
    let config: Arc<ClientConfig> = Arc::new(client_config(files).unwrap());
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}

fn peer_cert(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    let certs = stream.get_ref().1.peer_certificates().unwrap();
    certs[0].clone().into_owned()
}

/// Sends `GET /who` on a kept-alive connection and reads one response: (status, body).
async fn get_who<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> io::Result<(u16, String)> {
    let request = "GET /who HTTP/1.1\r\nHost: localhost\r\n\r\n";
    stream.write_all(request.as_bytes()).await?;
    read_response(stream).await
}

/// Reads one HTTP/1.1 response with a `Content-Length`.
async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<(u16, String)> {
    let mut buf = Vec::new();
    let head_len = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8(buf[..head_len].to_vec()).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = buf[head_len..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => body.extend_from_slice(&chunk[..n]),
        }
    }
    Ok((status, String::from_utf8(body).unwrap()))
}

/// Connects with `files` and asks `GET /who`; any failure on the way is an `Err`.
async fn request(addr: SocketAddr, files: &ClientTlsFiles) -> io::Result<(u16, String)> {
    let mut stream = connect(addr, files).await?;
    get_who(&mut stream).await
}

/// Waits (bounded) until the failure count reaches `at_least`.
async fn wait_for_failures(failures: &HandshakeFailures, at_least: u64) {
    for _ in 0..POLL_ATTEMPTS_MAX {
        if failures.get() >= at_least {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(POLL_MS)).await;
    }
    panic!(
        "handshake failures stayed at {}, expected {at_least}",
        failures.get()
    );
}

#[tokio::test]
async fn https_request_is_answered_with_the_peer_address_and_shutdown_stops_accepting() {
    let pki = Pki::new();
    let server_cert = pki.server("server", "server");
    let (server, tls) = serve_tls(server_files(&server_cert)).await;
    assert!(!tls.requires_client_cert());
    assert_eq!(
        tls.files(),
        vec![server_cert.cert.clone(), server_cert.key.clone()]
    );

    let mut stream = connect(server.addr, &pki.client_files(None)).await.unwrap();
    let local = stream.get_ref().0.local_addr().unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(peer_cert(&stream), server_cert.der);
    let (status, body) = get_who(&mut stream).await.unwrap();
    assert_eq!((status, body), (200, format!("{local} -")));
    drop(stream);

    // The server offers HTTP/2 too, for clients that ask for it.
    let mut h2 = client_config(&pki.client_files(None)).unwrap();
    h2.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = TlsConnector::from(Arc::new(h2))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(stream);

    // Graceful shutdown drops the listener, which must stop its accept task and so close the
    // port: connections are refused once the task is gone.
    server.stop.send(()).unwrap();
    server.task.await.unwrap().unwrap();
    for _ in 0..POLL_ATTEMPTS_MAX {
        if TcpStream::connect(server.addr).await.is_err() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(POLL_MS)).await;
    }
    panic!("the TLS port still accepts connections after the listener was dropped");
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_a_json_400_and_the_connection_closes() {
    let pki = Pki::new();
    let (server, _tls) = serve_tls(server_files(&pki.server("server", "server"))).await;

    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let plain_request = "GET /who HTTP/1.1\r\nHost: localhost\r\n\r\n";
    tcp.write_all(plain_request.as_bytes()).await.unwrap();
    // `read_to_end` returns only when the server closes the connection.
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();

    assert!(
        response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{response}"
    );
    let lower = response.to_ascii_lowercase();
    assert!(
        lower.contains("\r\ncontent-type: application/json\r\n"),
        "{response}"
    );
    assert!(lower.contains("\r\nconnection: close\r\n"), "{response}");
    let length = format!("\r\ncontent-length: {}\r\n", PLAIN_HTTP_BODY.len());
    assert!(lower.contains(&length), "{response}");
    assert!(
        response.ends_with(&format!("\r\n\r\n{PLAIN_HTTP_BODY}")),
        "{response}"
    );
    wait_for_failures(&server.failures, 1).await;

    // The port still serves TLS afterwards.
    let (status, _) = request(server.addr, &pki.client_files(None)).await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn mutual_tls_admits_only_allowed_client_names() {
    let pki = Pki::new();
    let node = pki.client("node-1.cluster");
    let intruder = pki.client("intruder.cluster");
    let mut files = server_files(&pki.server("server", "server"));
    files.client_ca = Some(pki.path("ca.pem"));
    files.client_names = vec!["node-1.cluster".into()];
    let (server, tls) = serve_tls(files).await;
    assert!(tls.requires_client_cert());
    assert_eq!(tls.files().last(), Some(&pki.path("ca.pem")));

    let anonymous = request(server.addr, &pki.client_files(None)).await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
    wait_for_failures(&server.failures, 1).await;

    let mut stream = connect(server.addr, &pki.client_files(Some(&node)))
        .await
        .unwrap();
    let local = stream.get_ref().0.local_addr().unwrap();
    let (status, body) = get_who(&mut stream).await.unwrap();
    assert_eq!((status, body), (200, format!("{local} node-1.cluster")));

    let refused = request(server.addr, &pki.client_files(Some(&intruder))).await;
    assert!(refused.is_err(), "intruder.cluster: {refused:?}");
    wait_for_failures(&server.failures, 2).await;
}

#[tokio::test]
async fn mutual_tls_without_an_allow_list_names_the_peer_by_its_certificate() {
    let pki = Pki::new();
    let intruder = pki.client("intruder.cluster");
    let mut files = server_files(&pki.server("server", "server"));
    files.client_ca = Some(pki.path("ca.pem"));
    let (server, _tls) = serve_tls(files).await;

    let (status, body) = request(server.addr, &pki.client_files(Some(&intruder)))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.ends_with(" intruder.cluster"), "{body}");

    // A certificate of another CA is refused during the handshake.
    let other = Pki::new();
    let stranger = other.client("node-1.cluster");
    let mut client = pki.client_files(None);
    client.identity = Some((stranger.cert.clone(), stranger.key.clone()));
    assert!(request(server.addr, &client).await.is_err());
}

#[tokio::test]
async fn reload_serves_the_new_certificate_to_new_connections_only() {
    let pki = Pki::new();
    let old = pki.server("server", "server-old");
    let (server, tls) = serve_tls(server_files(&old)).await;
    let client = pki.client_files(None);

    let mut kept = connect(server.addr, &client).await.unwrap();
    assert_eq!(get_who(&mut kept).await.unwrap().0, 200);
    assert_eq!(peer_cert(&kept), old.der);

    // Same paths, new contents.
    let new = pki.server("server", "server-new");
    assert_ne!(new.der, old.der);
    tls.reload().unwrap();
    let fresh = connect(server.addr, &client).await.unwrap();
    assert_eq!(peer_cert(&fresh), new.der);
    assert_eq!(
        get_who(&mut kept).await.unwrap().0,
        200,
        "the kept connection still works"
    );
    assert_eq!(peer_cert(&kept), old.der);

    // A broken file fails the reload, names the file, and the previous certificate stays.
    std::fs::write(&new.cert, "not a certificate\n").unwrap();
    let err = tls.reload().unwrap_err();
    assert!(matches!(err, TlsError::NotPem { .. }), "{err:?}");
    assert!(err.to_string().contains(&display(&new.cert)), "{err}");
    let after = connect(server.addr, &client).await.unwrap();
    assert_eq!(peer_cert(&after), new.der);

    // A certificate whose key has not been replaced yet is refused the same way.
    let other = pki.server("other", "server-other");
    std::fs::copy(&other.cert, &new.cert).unwrap();
    let err = tls.reload().unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains(&display(&new.cert)), "{err}");
    assert!(err.to_string().contains(&display(&new.key)), "{err}");
    let after = connect(server.addr, &client).await.unwrap();
    assert_eq!(peer_cert(&after), new.der);
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Loads `files` and returns the error, which must name `path`.
fn load_error(files: ServerTlsFiles, path: &Path) -> TlsError {
    let err = ServerTls::load(files).unwrap_err();
    assert!(err.to_string().contains(&display(path)), "{err}");
    err
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let pki = Pki::new();
    let good = pki.server("server", "server");
    let missing = pki.path("missing.pem");
    let not_pem = pki.path("garbage.txt");
    std::fs::write(&not_pem, "hello\n").unwrap();

    let err = load_error(
        ServerTlsFiles {
            cert: missing.clone(),
            ..server_files(&good)
        },
        &missing,
    );
    assert!(matches!(err, TlsError::Unreadable { .. }), "{err:?}");

    // A key file given as the certificate: PEM, but no certificate in it.
    let err = load_error(
        ServerTlsFiles {
            cert: good.key.clone(),
            ..server_files(&good)
        },
        &good.key,
    );
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");

    // A certificate given as the key: PEM, but no key in it.
    let err = load_error(
        ServerTlsFiles {
            key: good.cert.clone(),
            ..server_files(&good)
        },
        &good.cert,
    );
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");

    let err = load_error(
        ServerTlsFiles {
            key: not_pem.clone(),
            ..server_files(&good)
        },
        &not_pem,
    );
    assert!(matches!(err, TlsError::NotPem { .. }), "{err:?}");

    let err = load_error(
        ServerTlsFiles {
            client_ca: Some(not_pem.clone()),
            ..server_files(&good)
        },
        &not_pem,
    );
    assert!(matches!(err, TlsError::NotPem { .. }), "{err:?}");

    let names_only = ServerTlsFiles {
        client_names: vec!["node-1.cluster".into()],
        ..server_files(&good)
    };
    let err = ServerTls::load(names_only).unwrap_err();
    assert!(
        matches!(err, TlsError::ClientNamesWithoutCa { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("--client-ca"), "{err}");
}

#[tokio::test]
async fn plain_listener_serves_http_without_a_certificate_name() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = ServiceListener::plain(tcp);
    assert!(!listener.is_tls());
    let server = serve(listener).await;

    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    assert_eq!(
        get_who(&mut tcp).await.unwrap(),
        (200, format!("{local} -"))
    );
}

#[test]
fn client_config_without_a_ca_file_uses_the_system_roots() {
    let config = client_config(&ClientTlsFiles::default()).unwrap();
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert!(!config.client_auth_cert_resolver.has_certs());
}

#[test]
fn client_config_with_an_identity_presents_it_and_names_broken_files() {
    let pki = Pki::new();
    let node = pki.client("node-1.cluster");
    let config = client_config(&pki.client_files(Some(&node))).unwrap();
    assert!(config.client_auth_cert_resolver.has_certs());

    let missing = pki.path("missing-ca.pem");
    let files = ClientTlsFiles {
        ca_file: Some(missing.clone()),
        identity: None,
    };
    let err = client_config(&files).unwrap_err();
    assert!(err.to_string().contains(&display(&missing)), "{err}");
}

/// A connection from `from` (another loopback address is another peer) to `to`.
async fn connect_from(from: &str, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(to).await
}

/// One host opening silent connections fills only its own share of the handshake slots: its
/// connections beyond [`HANDSHAKES_PER_ADDRESS_MAX`] are closed at once, another host is
/// served meanwhile, and the silent ones are closed after [`FIRST_BYTE_TIMEOUT_MS`].
#[tokio::test]
async fn a_host_opening_silent_connections_cannot_starve_the_others() {
    let pki = Pki::new();
    let (server, _tls) = serve_tls(server_files(&pki.server("server", "server"))).await;
    let mut silent = Vec::new();
    for _ in 0..HANDSHAKES_PER_ADDRESS_MAX {
        silent.push(connect_from("127.0.0.1", server.addr).await.unwrap());
    }
    // One more from the same address is closed without a byte.
    let mut extra = connect_from("127.0.0.1", server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(1), extra.read(&mut buf))
        .await
        .expect("closed at once, not left waiting");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    // Another host is served.
    let config: Arc<ClientConfig> = Arc::new(client_config(&pki.client_files(None)).unwrap());
    let tcp = connect_from("127.0.0.2", server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = TlsConnector::from(config).connect(name, tcp).await.unwrap();
    assert_eq!(get_who(&mut stream).await.unwrap().0, 200);
    // The silent ones are closed after the first-byte deadline.
    let started = tokio::time::Instant::now();
    let first = &mut silent[0];
    let closed = tokio::time::timeout(
        std::time::Duration::from_millis(FIRST_BYTE_TIMEOUT_MS * 3),
        first.read(&mut buf),
    )
    .await
    .expect("closed after the first-byte deadline");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert!(started.elapsed() < std::time::Duration::from_millis(FIRST_BYTE_TIMEOUT_MS * 3));
}
