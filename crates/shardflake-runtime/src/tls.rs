//! TLS for every HTTP surface: the server side ([`ServerTls`], reloadable while serving), the
//! listener both services serve on ([`ServiceListener`], plain TCP or TLS), who is on the other
//! end of a connection ([`Peer`]) and the client side ([`client_config`]).
//!
//! Everything here is rustls on the `ring` provider: no OpenSSL, and no second provider, so a
//! cold build compiles no C besides ring. Certificates and keys are PEM files; every error
//! names the file and what is wrong with it, because the person reading it is editing a flag.
//!
//! ```
//! use shardflake_runtime::tls::{ServerTls, ServerTlsFiles, TlsError};
//!
//! let files = ServerTlsFiles {
//!     cert: "/nonexistent/server.pem".into(),
//!     key: "/nonexistent/server.key".into(),
//!     client_ca: None,
//!     client_names: vec![],
//! };
//! let err = ServerTls::load(files).unwrap_err();
//! assert!(matches!(err, TlsError::Unreadable { .. }));
//! assert!(err.to_string().contains("/nonexistent/server.pem"));
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;

mod client;
mod files;
mod listener;
mod server;

pub use client::{client_config, ClientTlsFiles};
pub use files::PEM_FILE_BYTES_MAX;
pub use listener::{
    HandshakeFailures, Peer, ServiceIo, ServiceListener, FIRST_BYTE_TIMEOUT_MS,
    HANDSHAKES_IN_FLIGHT_MAX, HANDSHAKES_PER_ADDRESS_MAX, HANDSHAKE_TIMEOUT_MS,
};
pub use server::{ServerTls, ServerTlsFiles};

/// Installs rustls' ring provider as the process default; idempotent, safe from many threads.
///
/// The configurations built here name their provider explicitly and do not need this; it is
/// for libraries that build their own rustls configuration from the process default (reqwest
/// with `rustls-no-provider`), which panic when none is installed.
pub fn install_default_provider() {
    // `install_default` fails only when a default is already installed: by an earlier call of
    // this function, or by someone else, whose choice stands.
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

/// The provider every configuration of this module is built with.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a TLS configuration could not be built. Every message names the file (or the flag) and
/// what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than any certificate chain or key file (see [`PEM_FILE_BYTES_MAX`]).
    #[error("{} is larger than {bytes_max} bytes: not a PEM certificate or key file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        bytes_max: u64,
    },
    /// The file has no PEM section at all (a DER file, or the wrong file).
    #[error("{} is not PEM: it has no \"-----BEGIN ...-----\" line (convert DER files with `openssl x509 -inform der`)", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
    },
    /// The file has a PEM section that cannot be decoded.
    #[error("{} holds malformed PEM: {source}", path.display())]
    MalformedPem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser found.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The file is PEM but holds no `CERTIFICATE` section.
    #[error("{} holds no certificate (no \"-----BEGIN CERTIFICATE-----\" section)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file is PEM but holds no private key section.
    #[error("{} holds no private key (no \"-----BEGIN PRIVATE KEY-----\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" section)", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is of a type or size rustls cannot sign with.
    #[error("the private key in {} is not usable: {source}", path.display())]
    UnusableKey {
        /// The key file.
        path: PathBuf,
        /// What rustls found.
        #[source]
        source: rustls::Error,
    },
    /// A certificate in the file is not a valid X.509 certificate.
    #[error("{} holds an invalid certificate: {source}", path.display())]
    InvalidCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What rustls found.
        #[source]
        source: rustls::Error,
    },
    /// The private key is not the key of the certificate (often: one file of a pair replaced,
    /// the other not yet).
    #[error("the private key in {} does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The client CA file cannot be used to verify client certificates.
    #[error("the client CA file {} is not usable: {source}", path.display())]
    InvalidClientCa {
        /// The client CA file.
        path: PathBuf,
        /// What rustls found.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// `--client-names` without `--client-ca`: without a verified client certificate there is
    /// no name to check.
    #[error("--client-names ({}) needs --client-ca: without a verified client certificate there is no name to check", names.join(", "))]
    ClientNamesWithoutCa {
        /// The names given.
        names: Vec<String>,
    },
    /// A name of `--client-names` is not a DNS name.
    #[error("--client-names: {name:?} is not a DNS name")]
    InvalidClientName {
        /// The name.
        name: String,
    },
    /// The system's trust roots cannot be used.
    #[error("the system's trust roots cannot be used (pass --ca-file instead): {source}")]
    SystemRoots {
        /// What the platform verifier found.
        #[source]
        source: rustls::Error,
    },
}
