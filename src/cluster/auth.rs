//! Peer authentication: replicas prove to each other that they share the cluster's secret.
//!
//! A replica signs each request it sends a peer with the header
//! `X-Wharf-Peer: <unix secs>.<hex HMAC-SHA256 of "<secs> <METHOD> <path?query>">`, keyed with the
//! shared secret. A replica that receives a request with the header checks the MAC (in constant
//! time, through `ring::hmac::verify`) and that the time is within [`MAX_SKEW_SECS`] of its own
//! clock. A request signed this way is from a peer: it skips client authentication and is never
//! forwarded again (so two replicas that disagree about an owner cannot send a request in a loop).
//! The header binds the method, path and query, so a captured header is good for the same request
//! only, and only for two minutes; every peer request is a GET or HEAD of content-addressed data,
//! so replaying one gains nothing. The key never reaches a log, an error or a response.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue, Method};
use ring::hmac;

use crate::secret::Secret;
use crate::upstream::Signer;

/// The header a peer's request carries.
pub const PEER_HEADER: HeaderName = HeaderName::from_static("x-wharf-peer");

/// How far a peer's clock may be from this one's, either way, in seconds.
pub const MAX_SKEW_SECS: u64 = 60;

/// The HMAC key made from the cluster's shared secret.
pub struct PeerKey(hmac::Key);

/// Why a peer header was refused. It says nothing about the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerAuthError {
    /// Not `<secs>.<hex>`.
    #[error("the peer header is not <secs>.<hex mac>")]
    Malformed,
    /// The time is more than [`MAX_SKEW_SECS`] away from this replica's clock.
    #[error("the peer header's time is more than {MAX_SKEW_SECS} s from this replica's clock")]
    Stale,
    /// The MAC does not match: another secret, or another request.
    #[error("the peer header's signature does not match")]
    BadMac,
}

// === impl PeerKey ===

impl PeerKey {
    /// The key for `secret`.
    pub fn new(secret: &Secret) -> Self {
        Self(hmac::Key::new(
            hmac::HMAC_SHA256,
            secret.expose().as_bytes(),
        ))
    }

    /// The header value for a request of `method` to `path_and_query`, signed at `now` (unix
    /// seconds).
    pub fn sign_at(&self, now: u64, method: &Method, path_and_query: &str) -> HeaderValue {
        let tag = hmac::sign(&self.0, message(now, method, path_and_query).as_bytes());
        let value = format!("{now}.{}", hex::encode(tag.as_ref()));
        // Digits, a dot and hex digits: always a valid header value.
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }

    /// Checks a peer header on a request of `method` to `path_and_query`, at `now` (unix seconds).
    ///
    /// # Errors
    /// Why the header is refused.
    pub fn verify_at(
        &self,
        now: u64,
        value: &HeaderValue,
        method: &Method,
        path_and_query: &str,
    ) -> Result<(), PeerAuthError> {
        let text = value.to_str().map_err(|_| PeerAuthError::Malformed)?;
        let (secs, mac) = text.split_once('.').ok_or(PeerAuthError::Malformed)?;
        if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PeerAuthError::Malformed);
        }
        let secs: u64 = secs.parse().map_err(|_| PeerAuthError::Malformed)?;
        let mac = hex::decode(mac).map_err(|_| PeerAuthError::Malformed)?;
        if secs.abs_diff(now) > MAX_SKEW_SECS {
            return Err(PeerAuthError::Stale);
        }
        hmac::verify(
            &self.0,
            message(secs, method, path_and_query).as_bytes(),
            &mac,
        )
        .map_err(|_| PeerAuthError::BadMac)
    }

    /// [`PeerKey::verify_at`] at the current time.
    ///
    /// # Errors
    /// Why the header is refused.
    pub fn verify(
        &self,
        value: &HeaderValue,
        method: &Method,
        path_and_query: &str,
    ) -> Result<(), PeerAuthError> {
        self.verify_at(unix_now(), value, method, path_and_query)
    }
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerKey(<redacted>)")
    }
}

impl Signer for PeerKey {
    fn sign(&self, method: &Method, path_and_query: &str) -> (HeaderName, HeaderValue) {
        (
            PEER_HEADER,
            self.sign_at(unix_now(), method, path_and_query),
        )
    }
}

/// What is signed.
fn message(secs: u64, method: &Method, path_and_query: &str) -> String {
    format!("{secs} {method} {path_and_query}")
}

/// Seconds since the epoch (0 for a clock set before 1970, which then fails every check).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const PATH: &str = "/v2/library/alpine/blobs/sha256:00?ns=docker.io";

    fn key(secret: &str) -> PeerKey {
        PeerKey::new(&Secret::new(secret))
    }

    #[test]
    fn a_signed_request_verifies_within_the_skew() {
        let k = key(SECRET);
        let value = k.sign_at(1_000_000, &Method::GET, PATH);
        for now in [1_000_000, 1_000_060, 999_940] {
            assert_eq!(
                k.verify_at(now, &value, &Method::GET, PATH),
                Ok(()),
                "{now}"
            );
        }
        for now in [1_000_061, 999_939] {
            assert_eq!(
                k.verify_at(now, &value, &Method::GET, PATH),
                Err(PeerAuthError::Stale)
            );
        }
        // The live clock both ways.
        let (name, value) = k.sign(&Method::HEAD, PATH);
        assert_eq!(name, PEER_HEADER);
        assert_eq!(k.verify(&value, &Method::HEAD, PATH), Ok(()));
    }

    #[test]
    fn the_mac_binds_the_secret_method_path_and_time() {
        let k = key(SECRET);
        let value = k.sign_at(1_000_000, &Method::GET, PATH);
        let bad = [
            (
                key("another secret of thirty-two bytes!"),
                Method::GET,
                PATH,
            ),
            (key(SECRET), Method::HEAD, PATH),
            (
                key(SECRET),
                Method::GET,
                "/v2/library/alpine/blobs/sha256:00",
            ),
        ];
        for (k, method, path) in &bad {
            assert_eq!(
                k.verify_at(1_000_000, &value, method, path),
                Err(PeerAuthError::BadMac),
                "{method} {path}"
            );
        }
        let text = value.to_str().unwrap();
        let (_, mac) = text.split_once('.').unwrap();
        let moved = HeaderValue::from_str(&format!("1000001.{mac}")).unwrap();
        assert_eq!(
            k.verify_at(1_000_000, &moved, &Method::GET, PATH),
            Err(PeerAuthError::BadMac)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let k = key(SECRET);
        for text in [
            "", "123", "123.", ".abcd", "12x.abcd", "123.zz", "-1.00", "1.2.3",
        ] {
            let value = HeaderValue::from_str(text).unwrap();
            let got = k.verify_at(123, &value, &Method::GET, PATH);
            assert!(
                matches!(got, Err(PeerAuthError::Malformed | PeerAuthError::BadMac)),
                "{text:?}: {got:?}"
            );
        }
        assert_eq!(
            k.verify_at(123, &HeaderValue::from_static("x"), &Method::GET, PATH),
            Err(PeerAuthError::Malformed)
        );
    }

    #[test]
    fn debug_hides_the_key() {
        assert!(!format!("{:?}", key(SECRET)).contains(SECRET));
    }
}
