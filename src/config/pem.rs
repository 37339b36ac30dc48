//! The listener's certificate pair as PEM text: parsed and checked to match, so a bad pair stops
//! wharf when the configuration is loaded, with a one-line error naming the file and the fix.
//!
//! Pure parsing (no files, no sockets). `server.rs` checks `[server] tls_cert`/`tls_key` with it,
//! and `crate::tls` builds the pair it serves with the same function, so the check at load and
//! the pair at run time cannot disagree.

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, SubjectPublicKeyInfoDer};

/// A certificate and key that cannot be used. The messages name no key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The certificate file has no `CERTIFICATE` section.
    #[error("holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    /// The certificate file is not valid PEM.
    #[error("is not valid PEM ({0})")]
    CertificatePem(String),
    /// The leaf certificate does not parse.
    #[error("holds a certificate that does not parse ({0})")]
    BadCertificate(String),
    /// The key file has no private key section.
    #[error(
        "holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
    )]
    NoKey,
    /// The key file is not valid PEM (no detail: it might quote key material).
    #[error("is not valid PEM")]
    KeyPem,
    /// rustls cannot sign with the key (an unsupported algorithm or curve).
    #[error("holds a private key that cannot be used ({0})")]
    KeyUnusable(String),
    /// The key is not the one the leaf certificate was issued for.
    #[error("holds a private key that does not match the certificate in tls_cert")]
    Mismatch,
}

// === impl TlsError ===

impl TlsError {
    /// Which configuration key's file the problem is in.
    pub fn key(&self) -> &'static str {
        match self {
            Self::NoCertificate | Self::CertificatePem(_) | Self::BadCertificate(_) => "tls_cert",
            Self::NoKey | Self::KeyPem | Self::KeyUnusable(_) | Self::Mismatch => "tls_key",
        }
    }

    /// What the operator should do.
    pub fn fix(&self) -> &'static str {
        match self.key() {
            "tls_cert" => "give the PEM certificate chain, leaf certificate first (e.g. certbot's fullchain.pem)",
            _ => "give the PEM private key the certificate was issued for (e.g. certbot's privkey.pem)",
        }
    }
}

/// Builds a certificate pair from PEM text: the chain (leaf first) and the leaf's private key,
/// checked to match.
///
/// # Errors
/// A [`TlsError`] saying which file is wrong and how.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::CertificatePem(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey,
        _ => TlsError::KeyPem,
    })?;
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::KeyUnusable(e.to_string()))?;
    let pair = CertifiedKey::new(chain, signer);
    match pair.keys_match() {
        Ok(()) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch)
        }
        // The key type cannot tell its public key: nothing to compare, as rustls itself accepts.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(pair),
        Err(e) => Err(TlsError::BadCertificate(e.to_string())),
    }
}

/// The DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (32 bytes) }, followed by the 32 key bytes.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// An Ed25519 public key file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    /// No `PUBLIC KEY` PEM section.
    #[error("holds no PEM public key (-----BEGIN PUBLIC KEY-----)")]
    NoKey,
    /// Not valid PEM.
    #[error("is not valid PEM ({0})")]
    Pem(String),
    /// A public key of another algorithm.
    #[error("holds a public key that is not Ed25519")]
    NotEd25519,
}

/// The 32 bytes of an Ed25519 public key from its PEM `SubjectPublicKeyInfo` (as `wharf keygen`
/// and `openssl pkey -pubout` write it).
///
/// # Errors
/// A [`PublicKeyError`].
pub fn ed25519_public_key(pem: &[u8]) -> Result<[u8; 32], PublicKeyError> {
    let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => PublicKeyError::NoKey,
        other => PublicKeyError::Pem(other.to_string()),
    })?;
    let der: &[u8] = spki.as_ref();
    let key = der
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .ok_or(PublicKeyError::NotEd25519)?;
    key.try_into().map_err(|_| PublicKeyError::NotEd25519)
}
