//! Request ids: one per request, in its log line and in the `X-Request-Id` response header, so a
//! client's error report can be matched to wharf's log.
//!
//! A sane incoming `X-Request-Id` (from a load balancer or the client: 1 to 64 of `A-Z a-z 0-9 - _
//! . :`) is kept, so one id follows a request through every hop. Otherwise wharf makes one: 16 hex
//! digits from a per-process counter passed through a bijective mixer keyed at start, so ids are
//! unique within the process, unpredictable, and unlikely to repeat across restarts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

use crate::limits::MAX_REQUEST_ID as MAX_LEN;

/// A request's id, a valid header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

static COUNTER: AtomicU64 = AtomicU64::new(0);
static KEY: OnceLock<u64> = OnceLock::new();

// === impl RequestId ===

impl RequestId {
    /// The incoming id if it is sane, else a new one.
    pub fn for_request(headers: &HeaderMap) -> Self {
        headers
            .get(X_REQUEST_ID)
            .filter(|v| sane(v.as_bytes()))
            .map_or_else(Self::generate, |v| Self(v.clone()))
    }

    /// A new id.
    pub fn generate() -> Self {
        let key = *KEY.get_or_init(|| {
            let mut bytes = [0u8; 8];
            // A failed random source still gives unique ids (the counter), just predictable ones.
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
            u64::from_le_bytes(bytes)
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let value = mix(n ^ key);
        let mut text = [0u8; 16];
        for (i, byte) in text.iter_mut().enumerate() {
            *byte = b"0123456789abcdef"[((value >> (60 - 4 * i)) & 0xf) as usize];
        }
        Self(HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("-")))
    }

    /// The id as a header value.
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII ids are ever built.
        self.0.to_str().unwrap_or("-")
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn sane(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// splitmix64's finaliser: a bijection on u64, so distinct inputs give distinct ids.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_ids_are_kept_only_when_sane() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(X_REQUEST_ID, HeaderValue::from_str(v).unwrap());
            RequestId::for_request(&h)
        };
        assert_eq!(with("abc-123_x.y:z").as_str(), "abc-123_x.y:z");
        let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(with(uuid).as_str(), uuid);
        for bad in ["", "has space", "semi;colon", "quote\"", &"x".repeat(65)] {
            let got = with(bad);
            assert_ne!(got.as_str(), bad);
            assert_eq!(got.as_str().len(), 16, "{bad:?} gives a generated id");
        }
    }

    #[test]
    fn generated_ids_are_unique() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|_| RequestId::generate().as_str().to_owned())
            .collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids
            .iter()
            .all(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())));
    }
}
