//! Reading PEM files: certificate chains, private keys, CA bundles and certificate–key pairs.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// The largest PEM file read. A certificate chain with a large bundle of roots is a few hundred
/// KiB; anything larger is the wrong file, and reading it whole would waste memory.
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// The start of every PEM section.
const PEM_BEGIN: &[u8] = b"-----BEGIN ";

/// Reads a PEM file whole, so that a chain and a key are each read in one go.
fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let unreadable = |source| TlsError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(PEM_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > PEM_FILE_BYTES_MAX {
        return Err(TlsError::TooLarge {
            path: path.to_owned(),
            bytes_max: PEM_FILE_BYTES_MAX,
        });
    }
    if !bytes.windows(PEM_BEGIN.len()).any(|w| w == PEM_BEGIN) {
        return Err(TlsError::NotPem {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// Every certificate of a PEM file, in order (the end-entity certificate first in a chain).
pub(super) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::MalformedPem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        source => TlsError::MalformedPem {
            path: path.to_owned(),
            source,
        },
    })
}

/// Every certificate of a CA file, as trust anchors.
pub(super) fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|source| TlsError::InvalidCertificate {
                path: path.to_owned(),
                source,
            })?;
    }
    Ok(roots)
}

/// A certificate chain and its private key, checked to belong together: a pair of which one
/// file was replaced and the other not yet is refused here, not at the first handshake.
pub(super) fn read_identity(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert)?;
    let signing_key = provider
        .key_provider
        .load_private_key(read_key(key)?)
        .map_err(|source| TlsError::UnusableKey {
            path: key.to_owned(),
            source,
        })?;
    let identity = CertifiedKey::new(chain, signing_key);
    match identity.keys_match() {
        // `Unknown`: the key cannot tell its public half, so there is nothing to compare.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(identity),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            })
        }
        Err(source) => Err(TlsError::InvalidCertificate {
            path: cert.to_owned(),
            source,
        }),
    }
}
