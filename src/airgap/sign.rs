//! Signed bundles: Ed25519 keys in PEM files, and the signature member of a bundle.
//!
//! `wharf keygen --out PREFIX` writes `PREFIX.key` (PKCS#8 `PRIVATE KEY`, mode 0600) and
//! `PREFIX.pub` (SPKI `PUBLIC KEY`); keys made by `openssl genpkey -algorithm ed25519` work too.
//! `wharf export --sign PREFIX.key` signs the exact bytes of `wharf-bundle.json` and writes the
//! signature as the bundle's second entry, `wharf-bundle.sig` ([`Signature`]), before any blob.
//! `wharf-bundle.json` names every other file of the bundle with its sha256 and size, so the
//! signature covers all of them: an import that trusts keys checks the signature before it stages
//! a single blob, and then refuses any entry whose bytes do not hash to what the signed list says.
//!
//! A key is named by its id, `ed25519:` and the first 16 hex digits of the sha256 of its 32 public
//! key bytes: printed by `keygen`, `export` and `import --list`, never secret. The private key is
//! held in a [`SigningKey`], whose `Debug` prints nothing of it.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde::{Deserialize, Serialize};

use crate::config::{ed25519_public_key, ED25519_SPKI_PREFIX};
use crate::oci::Digest;

/// The signature's path in a bundle (the second entry, right after `wharf-bundle.json`).
pub const BUNDLE_SIG: &str = "wharf-bundle.sig";
/// The one algorithm wharf signs with.
pub const ALGORITHM: &str = "ed25519";
/// The most bytes of `wharf-bundle.sig` an import reads.
pub const MAX_SIG: u64 = 4096;

/// `wharf-bundle.sig`: who signed `wharf-bundle.json`, and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Signature {
    /// Always [`ALGORITHM`].
    pub algorithm: String,
    /// The signer's key id ([`key_id`]).
    pub key_id: String,
    /// The Ed25519 signature of the exact bytes of `wharf-bundle.json`, base64 (standard, padded).
    pub signature: String,
}

/// A private key to sign bundles with. Serialized (PKCS#8, base64) only to cross the control
/// socket (mode 0600, the server's own user or root) to a running wharf; never printed.
#[derive(Clone, Serialize, Deserialize)]
pub struct SigningKey {
    pkcs8: String,
}

/// A public key whose signatures an import accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    /// The 32 public key bytes.
    pub key: [u8; 32],
    /// Where it was read from, for messages.
    pub source: String,
}

/// What checking a bundle's signature found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    /// No `wharf-bundle.sig`.
    Unsigned,
    /// Signed by a trusted key, and the signature matches.
    Verified {
        /// The signer.
        key_id: String,
    },
    /// Signed by a key that is not trusted (or none is): not checked.
    UnknownKey {
        /// The signer it names.
        key_id: String,
    },
    /// Signed by a trusted key, but the signature does not match: altered after signing.
    Bad {
        /// The signer it names.
        key_id: String,
    },
    /// `wharf-bundle.sig` does not parse.
    Malformed {
        /// What is wrong.
        problem: String,
    },
}

/// Why a key file cannot be used or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing it failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file holds no usable key (the message names no key material).
    #[error("{}: {problem}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, and the fix.
        problem: String,
    },
}

// === impl SigningKey ===

impl SigningKey {
    /// Reads a PEM PKCS#8 Ed25519 private key (`wharf keygen`, `openssl genpkey -algorithm
    /// ed25519`).
    ///
    /// # Errors
    /// The file cannot be read, or holds no Ed25519 private key.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(&pem).map_err(|problem| KeyError::Format {
            path: path.to_owned(),
            problem,
        })
    }

    /// Parses a PEM PKCS#8 Ed25519 private key.
    ///
    /// # Errors
    /// A message (naming no key material).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|_| {
            "holds no PEM private key (-----BEGIN PRIVATE KEY-----); make one with `wharf keygen --out PREFIX`".to_owned()
        })?;
        let key = Self {
            pkcs8: base64::engine::general_purpose::STANDARD.encode(der.secret_pkcs8_der()),
        };
        key.pair()?;
        Ok(key)
    }

    fn pair(&self) -> Result<Ed25519KeyPair, String> {
        let der = base64::engine::general_purpose::STANDARD
            .decode(&self.pkcs8)
            .map_err(|_| "the signing key is not base64".to_owned())?;
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|_| "holds a private key that is not Ed25519 (or is damaged); make one with `wharf keygen --out PREFIX`".to_owned())
    }

    /// The public half.
    ///
    /// # Errors
    /// A damaged key (checked when it was read, so only one built by hand).
    pub fn public(&self) -> Result<[u8; 32], String> {
        let pair = self.pair()?;
        pair.public_key()
            .as_ref()
            .try_into()
            .map_err(|_| "an Ed25519 public key is 32 bytes".to_owned())
    }

    /// Signs `bytes` (the exact bytes of `wharf-bundle.json`).
    ///
    /// # Errors
    /// A damaged key.
    pub fn sign(&self, bytes: &[u8]) -> Result<Signature, String> {
        let pair = self.pair()?;
        let public: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| "an Ed25519 public key is 32 bytes".to_owned())?;
        Ok(Signature {
            algorithm: ALGORITHM.to_owned(),
            key_id: key_id(&public),
            signature: base64::engine::general_purpose::STANDARD.encode(pair.sign(bytes).as_ref()),
        })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

// === impl TrustedKey ===

impl TrustedKey {
    /// Reads a PEM public key (`PREFIX.pub` of `wharf keygen`).
    ///
    /// # Errors
    /// The file cannot be read, or holds no Ed25519 public key.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        let key = ed25519_public_key(&pem).map_err(|e| KeyError::Format {
            path: path.to_owned(),
            problem: format!("{e}; give the .pub file `wharf keygen` wrote"),
        })?;
        Ok(Self {
            key,
            source: path.display().to_string(),
        })
    }

    /// Its id ([`key_id`]).
    pub fn id(&self) -> String {
        key_id(&self.key)
    }
}

// === impl Signature ===

impl Signature {
    /// Parses `wharf-bundle.sig`.
    ///
    /// # Errors
    /// Bad JSON, another algorithm.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let sig: Self = serde_json::from_slice(bytes)
            .map_err(|e| format!("{BUNDLE_SIG} is not a wharf signature ({e})"))?;
        if sig.algorithm != ALGORITHM {
            return Err(format!(
                "{BUNDLE_SIG} uses algorithm {:?}; this wharf knows {ALGORITHM}",
                sig.algorithm
            ));
        }
        Ok(sig)
    }

    /// The JSON of `wharf-bundle.sig`.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of three strings always serializes.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

// === impl Verdict ===

impl Verdict {
    /// Whether the signature verifies with a trusted key.
    pub fn is_verified(&self) -> bool {
        matches!(self, Self::Verified { .. })
    }

    /// The signer it names, if any.
    pub fn signer(&self) -> Option<&str> {
        match self {
            Self::Verified { key_id } | Self::UnknownKey { key_id } | Self::Bad { key_id } => {
                Some(key_id)
            }
            Self::Unsigned | Self::Malformed { .. } => None,
        }
    }

    /// For people: `verified (signed by ed25519:...)`, `NOT signed`, ...
    pub fn describe(&self) -> String {
        match self {
            Self::Unsigned => "not signed".into(),
            Self::Verified { key_id } => format!("signed by {key_id}: verified"),
            Self::UnknownKey { key_id } => {
                format!("signed by {key_id}: not verified (no trusted key with that id)")
            }
            Self::Bad { key_id } => {
                format!("signed by {key_id}: SIGNATURE DOES NOT MATCH (altered after signing)")
            }
            Self::Malformed { problem } => format!("signature unreadable: {problem}"),
        }
    }

    /// Why an import that requires a trusted signature refuses the bundle; `None` when it is
    /// verified. One line, with the fix.
    pub fn refusal(&self, trusted: &[TrustedKey]) -> Option<String> {
        let ids = || {
            trusted
                .iter()
                .map(TrustedKey::id)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Self::Verified { .. } => None,
            Self::Unsigned => Some(format!(
                "the bundle is not signed, and this wharf trusts only bundles signed by {}; export it with `wharf export --sign KEY`",
                ids()
            )),
            Self::UnknownKey { key_id } => Some(format!(
                "the bundle is signed by {key_id}, which is not a trusted key ({}); add its .pub file to [import] trusted_keys or --trusted-key",
                ids()
            )),
            Self::Bad { key_id } => Some(format!(
                "the signature of {} by {key_id} does not match: the bundle was altered after it was signed",
                super::bundle::BUNDLE_JSON
            )),
            Self::Malformed { problem } => Some(format!("{problem}; the bundle cannot be verified")),
        }
    }
}

/// A key's id: `ed25519:` and the first 16 hex digits of the sha256 of its 32 public key bytes.
pub fn key_id(public: &[u8; 32]) -> String {
    let hex = Digest::of(public).hex();
    format!("{ALGORITHM}:{}", &hex[..16])
}

/// Checks the signature `sig` (the bytes of `wharf-bundle.sig`, if the bundle has one) of
/// `bundle_json` against `trusted`.
pub fn verify(bundle_json: &[u8], sig: Option<&[u8]>, trusted: &[TrustedKey]) -> Verdict {
    let Some(sig) = sig else {
        return Verdict::Unsigned;
    };
    let sig = match Signature::parse(sig) {
        Ok(sig) => sig,
        Err(problem) => return Verdict::Malformed { problem },
    };
    let Some(key) = trusted.iter().find(|k| k.id() == sig.key_id) else {
        return Verdict::UnknownKey { key_id: sig.key_id };
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(&sig.signature) else {
        return Verdict::Bad { key_id: sig.key_id };
    };
    match UnparsedPublicKey::new(&ED25519, &key.key).verify(bundle_json, &raw) {
        Ok(()) => Verdict::Verified { key_id: sig.key_id },
        Err(_) => Verdict::Bad { key_id: sig.key_id },
    }
}

/// `wharf keygen --out PREFIX`: writes `PREFIX.key` (mode 0600, refused if it exists) and
/// `PREFIX.pub`; returns the key id.
///
/// # Errors
/// A file that exists already or cannot be written.
pub fn keygen(prefix: &Path) -> Result<String, KeyError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let with = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let (key_path, pub_path) = (with(".key"), with(".pub"));
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Format {
        path: key_path.clone(),
        problem: "the system's random source failed".into(),
    })?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyError::Format {
        path: key_path.clone(),
        problem: "ring made a key it cannot read".into(),
    })?;
    let public: [u8; 32] = pair
        .public_key()
        .as_ref()
        .try_into()
        .map_err(|_| KeyError::Format {
            path: pub_path.clone(),
            problem: "an Ed25519 public key is 32 bytes".into(),
        })?;
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(&public);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| KeyError::Io { path, source }
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(io(&key_path))?;
    file.write_all(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(&key_path))?;
    std::fs::write(&pub_path, pem("PUBLIC KEY", &spki)).map_err(io(&pub_path))?;
    Ok(key_id(&public))
}

/// PEM text of one section.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_sign_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("signer");
        let id = keygen(&prefix).unwrap();
        assert!(id.starts_with("ed25519:") && id.len() == 8 + 16, "{id}");
        let key_file = dir.path().join("signer.key");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key_file).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert!(keygen(&prefix).is_err(), "an existing key is not replaced");

        let signer = SigningKey::read(&key_file).unwrap();
        assert!(!format!("{signer:?}").contains(&signer.pkcs8));
        let trusted = TrustedKey::read(&dir.path().join("signer.pub")).unwrap();
        assert_eq!(trusted.id(), id);
        assert_eq!(signer.public().unwrap(), trusted.key);

        let json = br#"{"wharfBundleVersion":1}"#;
        let sig = signer.sign(json).unwrap();
        assert_eq!(sig.key_id, id);
        let bytes = sig.to_json();
        let keys = [trusted.clone()];
        assert_eq!(
            verify(json, Some(&bytes), &keys),
            Verdict::Verified { key_id: id.clone() }
        );
        assert_eq!(verify(json, None, &keys), Verdict::Unsigned);
        assert_eq!(
            verify(br#"{"wharfBundleVersion":2}"#, Some(&bytes), &keys),
            Verdict::Bad { key_id: id.clone() }
        );
        assert_eq!(
            verify(json, Some(&bytes), &[]),
            Verdict::UnknownKey { key_id: id.clone() }
        );
        let other = dir.path().join("other");
        keygen(&other).unwrap();
        let other = TrustedKey::read(&dir.path().join("other.pub")).unwrap();
        let v = verify(json, Some(&bytes), std::slice::from_ref(&other));
        assert_eq!(v, Verdict::UnknownKey { key_id: id.clone() });
        assert!(v.refusal(&[other]).unwrap().contains("not a trusted key"));
        assert!(matches!(
            verify(json, Some(b"nope"), &keys),
            Verdict::Malformed { .. }
        ));
        assert!(Verdict::Unsigned
            .refusal(&keys)
            .unwrap()
            .contains("not signed"));
    }

    #[test]
    fn openssl_style_keys_and_bad_files() {
        // PKCS#8 v1 (no public key inside), as `openssl genpkey -algorithm ed25519` writes it.
        let v1 = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIL1dzbqz+oGh03QIIiUCkfChsUdYMmUy77Ty79gzzAHO\n-----END PRIVATE KEY-----\n";
        let key = SigningKey::from_pem(v1.as_bytes()).unwrap();
        let public = key.public().unwrap();
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&public);
        let trusted = TrustedKey {
            key: ed25519_public_key(pem("PUBLIC KEY", &spki).as_bytes()).unwrap(),
            source: "t".into(),
        };
        let sig = key.sign(b"x").unwrap().to_json();
        assert!(verify(b"x", Some(&sig), &[trusted]).is_verified());

        let e = SigningKey::from_pem(b"hello").unwrap_err();
        assert!(e.contains("no PEM private key"), "{e}");
        let e = ed25519_public_key(pem("PUBLIC KEY", &[1, 2, 3]).as_bytes()).unwrap_err();
        assert_eq!(e, crate::config::PublicKeyError::NotEd25519);
        assert_eq!(
            ed25519_public_key(b"").unwrap_err(),
            crate::config::PublicKeyError::NoKey
        );
    }
}
