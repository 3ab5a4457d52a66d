//! The client side: which servers to trust and, for mutual TLS, which certificate to present.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::sign::SingleCertAndKey;
use rustls::ClientConfig;
use rustls_platform_verifier::BuilderVerifierExt;

use super::{files, provider, TlsError};

/// The protocol the client asks for: its HTTP stack speaks HTTP/1.1.
const CLIENT_ALPN: &[u8] = b"http/1.1";

/// What `--ca-file`, `--tls-client-cert`, `--tls-client-key` name on the client side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// The CA (PEM) to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The client certificate chain and its private key (PEM), for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// A rustls client configuration: roots from `ca_file` only when given, else the system's roots
/// (rustls-platform-verifier); the client certificate when `identity` is given; ALPN `http/1.1`.
///
/// ```
/// use shardflake_runtime::tls::{client_config, ClientTlsFiles};
///
/// let config = client_config(&ClientTlsFiles::default()).unwrap();
/// assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
/// assert!(!config.client_auth_cert_resolver.has_certs());
/// ```
pub fn client_config(files: &ClientTlsFiles) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3");
    // Only one source of roots: a private CA given explicitly must not be widened to every
    // public CA the system trusts.
    let builder = match &files.ca_file {
        Some(ca) => builder.with_root_certificates(files::read_roots(ca)?),
        None => builder
            .with_platform_verifier()
            .map_err(|source| TlsError::SystemRoots { source })?,
    };
    let mut config = match &files.identity {
        Some((cert, key)) => {
            let identity = files::read_identity(cert, key, &provider)?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(identity)))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![CLIENT_ALPN.to_vec()];
    Ok(config)
}
