//! The flags every command shares for TLS and credentials, parsed once: a server's
//! certificate (`serve`, `coordinator`), a client's trust and identity (`serve` towards its
//! coordinators, `fetch`, `audit`), and credentials from variables and files — never from a
//! flag's value, which `ps` shows.

use std::path::PathBuf;

use anyhow::{bail, Result};
use shardflake_proto::auth::{Scope, LEGACY_CLUSTER_TOKEN_ENV};
use shardflake_runtime::credentials::{BearerToken, CredentialSource};
use shardflake_runtime::tls::{ClientTlsFiles, ServerTlsFiles};

/// `--tls-cert`, `--tls-key`, `--client-ca`, `--client-names`: serve HTTPS.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerTlsArgs {
    /// Serve HTTPS with this certificate chain (PEM); reloaded on SIGHUP and when the file
    /// changes. Needs --tls-key.
    #[arg(long, env = "SHARDFLAKE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "SHARDFLAKE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: require a client certificate signed by this CA (PEM) on every connection.
    #[arg(long, env = "SHARDFLAKE_CLIENT_CA", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Mutual TLS: accept only client certificates valid for one of these DNS names
    /// (comma-separated; needs --client-ca).
    #[arg(
        long,
        env = "SHARDFLAKE_CLIENT_NAMES",
        value_delimiter = ',',
        requires = "client_ca"
    )]
    pub client_names: Vec<String>,
}

impl ServerTlsArgs {
    /// The files, when HTTPS is asked for.
    pub fn files(&self) -> Option<ServerTlsFiles> {
        let (cert, key) = (self.tls_cert.clone()?, self.tls_key.clone()?);
        Some(ServerTlsFiles {
            cert,
            key,
            client_ca: self.client_ca.clone(),
            client_names: self.client_names.clone(),
        })
    }
}

/// `--ca-file`, `--tls-client-cert`, `--tls-client-key`: how `https://` servers are verified,
/// and the certificate shown to servers that require one.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientTlsArgs {
    /// Verify `https://` servers against this CA certificate (PEM) instead of the system's
    /// roots.
    #[arg(long, env = "SHARDFLAKE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Mutual TLS: present this client certificate (PEM). Needs --tls-client-key.
    #[arg(long, env = "SHARDFLAKE_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "SHARDFLAKE_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The files.
    pub fn files(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca_file: self.ca_file.clone(),
            identity: self
                .tls_client_cert
                .clone()
                .zip(self.tls_client_key.clone()),
        }
    }
}

/// A variable's value, if set and not empty.
pub fn env_value(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// Whether the single token of earlier versions is set (each service refuses it, naming the
/// scoped credentials that replace it).
pub fn legacy_token_set() -> bool {
    env_value(LEGACY_CLUSTER_TOKEN_ENV).is_some()
}

/// The sources of `scope`'s credentials a service accepts: its variable and its file (both
/// may be given; a file is what rotation without a restart needs).
pub fn accepted(scope: Scope, file: Option<&PathBuf>) -> Vec<CredentialSource> {
    let mut out = Vec::new();
    if let Some(v) = env_value(scope.token_env()) {
        out.push(CredentialSource::value(scope, scope.token_env(), &v));
    }
    if let Some(f) = file {
        out.push(CredentialSource::file(scope, f));
    }
    out
}

/// The client credentials a node's id endpoints accept (`SHARDFLAKE_CLIENT_TOKEN`,
/// `--client-token-file`); named `client#N` unless the file names them.
pub fn client_credentials(file: Option<&PathBuf>) -> Vec<CredentialSource> {
    accepted(Scope::Client, file)
}

/// The token a command sends: from `file`, else from the variable `var`. Refuses the old
/// single token, so that a script still setting it learns what to set instead.
pub fn sent_token(var: &str, file: Option<&PathBuf>) -> Result<Option<BearerToken>> {
    if legacy_token_set() && env_value(var).is_none() && file.is_none() {
        bail!(
            "{LEGACY_CLUSTER_TOKEN_ENV} is no longer read: set {var} (or its --*-token-file) instead"
        );
    }
    Ok(BearerToken::from_env_or_file(
        var,
        env_value(var).as_deref(),
        file.map(PathBuf::as_path),
    )?)
}
