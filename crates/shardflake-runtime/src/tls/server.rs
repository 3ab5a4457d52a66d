//! The server's TLS configuration: loaded from files, replaced whole on reload, and the check
//! of a client certificate's name against `--client-names`.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, DnsName, ServerName};
use webpki::EndEntityCert;

use super::{files, provider, TlsError};

/// The protocols the server offers, most preferred first: axum serves both.
const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// What `--tls-cert`, `--tls-key`, `--client-ca`, `--client-names` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// The server's certificate chain (PEM), end-entity certificate first.
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The CA (PEM) client certificates must chain to; given, every client must present one.
    pub client_ca: Option<PathBuf>,
    /// The names a client certificate must be valid for one of; empty: any name the CA signed.
    pub client_names: Vec<String>,
}

/// A server's TLS configuration, reloadable while serving. Clone = same shared config.
#[derive(Clone, Debug)]
pub struct ServerTls {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    files: ServerTlsFiles,
    /// `files.client_names`, parsed once: the names never change on reload.
    allowed_names: Vec<DnsName<'static>>,
    /// Each handshake takes the configuration current when it starts, so a reload never
    /// changes a handshake under way nor an established connection.
    current: RwLock<Arc<ServerConfig>>,
}

/// A verified client certificate not valid for any name of `--client-names`.
#[derive(Debug)]
pub(super) struct NameRefused {
    /// The certificate's first DNS name, for the log; `None` if it has none.
    pub(super) presented: Option<String>,
}

impl ServerTls {
    /// Reads the files and builds the configuration.
    pub fn load(files: ServerTlsFiles) -> Result<Self, TlsError> {
        let allowed_names = allowed_names(&files)?;
        let config = build_config(&files)?;
        Ok(Self {
            shared: Arc::new(Shared {
                files,
                allowed_names,
                current: RwLock::new(Arc::new(config)),
            }),
        })
    }

    /// Re-reads the files; on error the previous configuration stays in use (the caller logs
    /// the error). New connections use the new configuration; established ones are untouched.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build_config(&self.shared.files)?;
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        Ok(())
    }

    /// Every file to watch for changes.
    pub fn files(&self) -> Vec<PathBuf> {
        let files = &self.shared.files;
        let mut paths = vec![files.cert.clone(), files.key.clone()];
        paths.extend(files.client_ca.clone());
        paths
    }

    /// Whether clients must present a certificate (`client_ca` given).
    pub fn requires_client_cert(&self) -> bool {
        self.shared.files.client_ca.is_some()
    }

    /// The configuration for a handshake starting now.
    pub(super) fn config(&self) -> Arc<ServerConfig> {
        // A writer only assigns an `Arc`, so a poisoned lock still holds a whole configuration.
        Arc::clone(
            &self
                .shared
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The name of a client that completed the handshake with `certs`: with `--client-names`,
    /// the first allowed name its certificate is valid for (none: refused); without, the
    /// certificate's first DNS name. The chain itself was verified during the handshake.
    pub(super) fn peer_name(
        &self,
        certs: Option<&[CertificateDer<'_>]>,
    ) -> Result<Option<String>, NameRefused> {
        let allowed = &self.shared.allowed_names;
        let end_entity = certs
            .and_then(|certs| certs.first())
            .and_then(|cert| EndEntityCert::try_from(cert).ok());
        let Some(end_entity) = end_entity else {
            return match allowed.is_empty() {
                true => Ok(None),
                false => Err(NameRefused { presented: None }),
            };
        };
        let first_dns_name = end_entity.valid_dns_names().next().map(str::to_owned);
        if allowed.is_empty() {
            return Ok(first_dns_name);
        }
        allowed
            .iter()
            .find(|name| {
                let name = ServerName::DnsName((*name).clone());
                end_entity.verify_is_valid_for_subject_name(&name).is_ok()
            })
            .map(|name| Some(name.as_ref().to_owned()))
            .ok_or(NameRefused {
                presented: first_dns_name,
            })
    }
}

/// `--client-names`, parsed; refused without `--client-ca`, where no name could be verified.
fn allowed_names(files: &ServerTlsFiles) -> Result<Vec<DnsName<'static>>, TlsError> {
    if !files.client_names.is_empty() && files.client_ca.is_none() {
        return Err(TlsError::ClientNamesWithoutCa {
            names: files.client_names.clone(),
        });
    }
    files
        .client_names
        .iter()
        .map(|name| {
            DnsName::try_from(name.as_str())
                .map(|dns| dns.to_owned())
                .map_err(|_| TlsError::InvalidClientName { name: name.clone() })
        })
        .collect()
}

/// A complete configuration from the files as they are now.
fn build_config(files: &ServerTlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let identity = files::read_identity(&files.cert, &files.key, &provider)?;
    let verifier = match &files.client_ca {
        Some(ca) => {
            let roots = Arc::new(files::read_roots(ca)?);
            WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(|source| TlsError::InvalidClientCa {
                    path: ca.clone(),
                    source,
                })?
        }
        None => WebPkiClientVerifier::no_client_auth(),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(identity)));
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
