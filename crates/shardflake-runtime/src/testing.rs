//! Certificates for tests, made at run time (feature `testing`): a throwaway CA and the PEM
//! files it signs, in a temporary directory. Nothing here is part of a service.
//!
//! ```
//! let pki = shardflake_runtime::testing::Pki::new();
//! let server = pki.server("node", "node");
//! assert!(server.cert.exists() && server.key.exists() && pki.ca().exists());
//! let client = pki.client("node-1.cluster");
//! assert!(std::fs::read_to_string(&client.cert).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
//! ```

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;
use tempfile::TempDir;

use crate::tls::{ClientTlsFiles, ServerTlsFiles};

/// A throwaway CA and the files it signs.
pub struct Pki {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and key written as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The certificate (DER), to compare with what a peer presented.
    pub der: CertificateDer<'static>,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// A new CA, its certificate written to `ca.pem` in a new temporary directory.
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("a self-signed CA");
        let pki = Pki {
            dir: tempfile::tempdir().expect("a temporary directory"),
            ca,
        };
        std::fs::write(pki.path("ca.pem"), pki.ca.pem()).expect("ca.pem written");
        pki
    }

    /// A file in the PKI's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// Signs a certificate with common name `common_name` for DNS names and IP addresses
    /// `names`, for `usage`, and writes `{stem}.pem` and `{stem}.key`.
    pub fn issue(
        &self,
        stem: &str,
        common_name: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.ca).expect("signed by the CA");
        let issued = Issued {
            cert: self.path(&format!("{stem}.pem")),
            key: self.path(&format!("{stem}.key")),
            der: cert.der().clone(),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("certificate written");
        std::fs::write(&issued.key, key.serialize_pem()).expect("key written");
        issued
    }

    /// A server certificate for `localhost` and `127.0.0.1` with `common_name` (different
    /// names tell a reloaded certificate from the one before).
    pub fn server(&self, stem: &str, common_name: &str) -> Issued {
        self.issue(
            stem,
            common_name,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate for the DNS name `name` (files `{name}.pem`, `{name}.key`).
    pub fn client(&self, name: &str) -> Issued {
        self.issue(name, name, &[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// What a client trusting this CA (and presenting `identity`) is configured with.
    pub fn client_files(&self, identity: Option<&Issued>) -> ClientTlsFiles {
        ClientTlsFiles {
            ca_file: Some(self.ca()),
            identity: identity.map(|i| (i.cert.clone(), i.key.clone())),
        }
    }
}

/// What a server presenting `server` is configured with (no client certificates).
pub fn server_files(server: &Issued) -> ServerTlsFiles {
    ServerTlsFiles {
        cert: server.cert.clone(),
        key: server.key.clone(),
        client_ca: None,
        client_names: vec![],
    }
}
