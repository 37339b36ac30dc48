//! Content digests (`sha256:<64 hex>`) and the streaming verifier that checks bytes against one.
//!
//! wharf stores and serves only sha256 content, which is what every registry in use produces. Other
//! algorithms in the spec's grammar (`sha512:`) parse to a distinct error so the API can say so.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A sha256 content digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// Why a string is not a digest wharf accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// No `algorithm:` prefix.
    #[error("digest has no algorithm prefix (expected sha256:<64 hex digits>)")]
    MissingAlgorithm,
    /// A well-formed digest of an algorithm wharf does not store.
    #[error("digest algorithm {0:?} is not supported (only sha256)")]
    UnsupportedAlgorithm(String),
    /// sha256 with the wrong length or non-hex (or upper-case) characters.
    #[error("sha256 digest must be 64 lower-case hex digits")]
    InvalidEncoding,
}

/// Hashes bytes as they stream past and checks them against an expected digest and size.
#[derive(Clone)]
pub struct Verifier {
    hasher: Sha256,
    len: u64,
}

/// How a finished stream compared with what was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// The bytes hash to another digest.
    Digest { actual: Digest },
    /// The stream had another length than announced.
    Size { expected: u64, actual: u64 },
}

// === impl Digest ===

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The 64 hex digits, without the algorithm.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw 32 bytes, used as a compact index key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Rebuilds a digest from [`Digest::as_bytes`].
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses the 64 hex digits of a sha256 digest (as in a blob's file name).
    ///
    /// # Errors
    /// [`DigestError::InvalidEncoding`] unless `hex` is 64 lower-case hex digits.
    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::InvalidEncoding);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out).map_err(|_| DigestError::InvalidEncoding)?;
        Ok(Self(out))
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algorithm, encoded) = s.split_once(':').ok_or(DigestError::MissingAlgorithm)?;
        // Grammar from the distribution spec: algorithm-component ([a-z0-9]+) joined by [+._-].
        let valid_algorithm = !algorithm.is_empty()
            && algorithm.split(['+', '.', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if algorithm != "sha256" {
            if valid_algorithm && !encoded.is_empty() {
                return Err(DigestError::UnsupportedAlgorithm(algorithm.to_owned()));
            }
            return Err(DigestError::MissingAlgorithm);
        }
        Self::from_hex(encoded)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// === impl Verifier ===

impl Verifier {
    /// A verifier that has seen no bytes.
    pub fn new() -> Self {
        Self {
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Feeds the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no bytes have been seen.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Compares what was seen with the expected digest and, when known, size.
    ///
    /// # Errors
    /// The first [`Mismatch`] found: size first, because it is the cheaper and clearer message.
    pub fn finish(self, expected: &Digest, expected_size: Option<u64>) -> Result<(), Mismatch> {
        if let Some(size) = expected_size {
            if size != self.len {
                return Err(Mismatch::Size {
                    expected: size,
                    actual: self.len,
                });
            }
        }
        let actual = Digest(self.hasher.finalize().into());
        if actual == *expected {
            Ok(())
        } else {
            Err(Mismatch::Digest { actual })
        }
    }
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Digest { actual } => write!(f, "content hashes to {actual}"),
            Self::Size { expected, actual } => {
                write!(f, "content is {actual} bytes, expected {expected}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_table() {
        let cases: &[(&str, Result<(), DigestError>)] = &[
            (EMPTY, Ok(())),
            ("sha256:abc", Err(DigestError::InvalidEncoding)),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                Err(DigestError::InvalidEncoding),
            ),
            (
                "sha256:z3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                Err(DigestError::InvalidEncoding),
            ),
            (
                "sha512:abcd",
                Err(DigestError::UnsupportedAlgorithm("sha512".into())),
            ),
            ("nocolon", Err(DigestError::MissingAlgorithm)),
            (":abcd", Err(DigestError::MissingAlgorithm)),
            ("SHA256:abcd", Err(DigestError::MissingAlgorithm)),
            ("", Err(DigestError::MissingAlgorithm)),
        ];
        for (input, want) in cases {
            let got = input.parse::<Digest>().map(|_| ());
            assert_eq!(&got, want, "{input:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(Digest::of(b""), d);
        assert_eq!(Digest::from_hex(&d.hex()).unwrap(), d);
        assert_eq!(Digest::from_bytes(*d.as_bytes()), d);
    }

    #[test]
    fn verifier_checks_size_then_digest() {
        let digest = Digest::of(b"hello world");
        let mut v = Verifier::new();
        v.update(b"hello ");
        v.update(b"world");
        assert_eq!(v.len(), 11);
        assert_eq!(v.clone().finish(&digest, Some(11)), Ok(()));
        assert_eq!(
            v.clone().finish(&digest, Some(12)),
            Err(Mismatch::Size {
                expected: 12,
                actual: 11
            })
        );
        let other = Digest::of(b"other");
        assert_eq!(
            v.finish(&other, None),
            Err(Mismatch::Digest { actual: digest })
        );
    }
}
