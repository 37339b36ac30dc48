//! HTTPS on wharf's listener: the certificate, its reload, and the rustls configuration.
//!
//! The certificate and key are PEM files (`[server] tls_cert`, `tls_key`): the full chain, leaf
//! first, and the leaf's private key (PKCS#8, PKCS#1 or SEC1). They are checked when the
//! configuration is loaded, so a bad pair stops wharf at start with a one-line error, and loaded
//! again into a [`CertStore`], which hands the current pair to every new handshake. A reload (on
//! SIGHUP, or when the files change; see [`crate::reload`]) swaps the pair under a lock: open
//! connections keep the certificate they were made with, new ones get the new one, and a pair that
//! fails to load leaves the old one in place.
//!
//! ALPN offers `h2` and `http/1.1`; hyper-util's auto builder then serves whichever the client
//! speaks. The handshake runs in the connection's own task, bounded by [`HANDSHAKE_TIMEOUT`], so a
//! client that connects and says nothing holds no more than its socket.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsFiles;
pub use crate::config::{certified_key, TlsError};
use crate::reload::Reloadable;

pub use crate::limits::TLS_HANDSHAKE_TIMEOUT as HANDSHAKE_TIMEOUT;

/// A certificate pair that could not be loaded from its files: which key's file, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} {path}: {problem}")]
pub struct LoadError {
    /// `tls_cert` or `tls_key`.
    pub key: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong with it, and the fix.
    pub problem: String,
}

/// The listener's current certificate; the rustls resolver of every handshake.
pub struct CertStore {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

/// The crypto provider for the listener (ring, as the upstream client uses).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks the pair in `files`.
///
/// # Errors
/// A [`LoadError`] naming the file and the problem.
pub fn load(files: &TlsFiles) -> Result<CertifiedKey, LoadError> {
    let read = |key: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| LoadError {
            key,
            path: path.display().to_string(),
            problem: format!("cannot be read ({e})"),
        })
    };
    let cert = read("tls_cert", &files.cert)?;
    let key = read("tls_key", &files.key)?;
    certified_key(&cert, &key).map_err(|e| LoadError {
        key: e.key(),
        path: if e.key() == "tls_cert" {
            files.cert.display().to_string()
        } else {
            files.key.display().to_string()
        },
        problem: format!("{e}; {}", e.fix()),
    })
}

// === impl CertStore ===

impl CertStore {
    /// Loads the pair in `files`.
    ///
    /// # Errors
    /// When the files cannot be read or do not make a usable pair.
    pub fn open(files: &TlsFiles) -> Result<Self, LoadError> {
        let pair = load(files)?;
        Ok(Self {
            files: files.clone(),
            current: RwLock::new(Arc::new(pair)),
        })
    }

    /// The rustls configuration for the listener: this store as the certificate resolver, ALPN
    /// `h2` then `http/1.1`, TLS 1.2 and 1.3.
    ///
    /// # Errors
    /// Never with the ring provider (which has cipher suites for every default protocol version).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl Reloadable for CertStore {
    fn what(&self) -> &'static str {
        "TLS certificate"
    }

    fn files(&self) -> Vec<std::path::PathBuf> {
        vec![self.files.cert.clone(), self.files.key.clone()]
    }

    fn reload(&self) -> Result<(), String> {
        let pair = load(&self.files).map_err(|e| e.to_string())?;
        *self.current.write() = Arc::new(pair);
        Ok(())
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of every Debug output.
        f.debug_struct("CertStore")
            .field("cert", &self.files.cert)
            .field("key", &self.files.key)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads_and_mismatches_are_named() {
        let (cert, key) = pair("a.test");
        let (other_cert, other_key) = pair("b.test");
        assert!(certified_key(cert.as_bytes(), key.as_bytes()).is_ok());
        // A chain with a second certificate still loads (the leaf comes first).
        let chain = format!("{cert}{other_cert}");
        assert_eq!(
            certified_key(chain.as_bytes(), key.as_bytes())
                .unwrap()
                .cert
                .len(),
            2
        );
        let cases: &[(&str, &str, TlsError)] = &[
            (&cert, &other_key, TlsError::Mismatch),
            ("", &key, TlsError::NoCertificate),
            (&key, &key, TlsError::NoCertificate),
            (&cert, "", TlsError::NoKey),
            (&cert, &cert, TlsError::NoKey),
            (
                &cert,
                "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
                TlsError::KeyPem,
            ),
        ];
        for (c, k, want) in cases {
            assert_eq!(
                certified_key(c.as_bytes(), k.as_bytes()).err().as_ref(),
                Some(want)
            );
        }
        let broken = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        let e = certified_key(broken.as_bytes(), key.as_bytes()).unwrap_err();
        assert_eq!(e.key(), "tls_cert", "{e}");
    }

    #[test]
    fn reload_keeps_the_old_pair_when_the_new_one_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        let (cert, key) = pair("a.test");
        std::fs::write(&files.cert, &cert).unwrap();
        std::fs::write(&files.key, &key).unwrap();
        let store = CertStore::open(&files).unwrap();
        let first = store.current();

        // A new certificate without its key: refused, the old pair stays.
        let (cert2, key2) = pair("b.test");
        std::fs::write(&files.cert, &cert2).unwrap();
        let e = store.reload().unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        assert!(!e.contains("PRIVATE KEY-----\n"), "{e}");
        assert!(Arc::ptr_eq(&first, &store.current()));

        std::fs::write(&files.key, &key2).unwrap();
        store.reload().unwrap();
        assert!(!Arc::ptr_eq(&first, &store.current()));
        assert_ne!(first.cert[0], store.current().cert[0]);
        assert!(!format!("{store:?}").contains("BEGIN"));
    }
}
