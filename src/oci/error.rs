//! The distribution spec's error codes and the `{"errors":[...]}` envelope clients parse.
//!
//! See opencontainers/distribution-spec `spec.md`, "Error Codes". `UNAVAILABLE` and `UNKNOWN` are not
//! in the OCI list but are what distribution itself sends for upstream and internal failures, and what
//! Docker and containerd display.

use serde::Serialize;

/// An error code from the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The blob is unknown to the registry.
    BlobUnknown,
    /// The digest did not match the content, or did not parse.
    DigestInvalid,
    /// The manifest is unknown.
    ManifestUnknown,
    /// The manifest is invalid.
    ManifestInvalid,
    /// The repository name is invalid.
    NameInvalid,
    /// The repository name is not known to this registry.
    NameUnknown,
    /// Authentication is required.
    Unauthorized,
    /// Access to the resource was denied.
    Denied,
    /// The operation is not supported.
    Unsupported,
    /// The client (or wharf, at the upstream) sent too many requests.
    TooManyRequests,
    /// The range requested cannot be served.
    RangeInvalid,
    /// The service (here: the upstream) is unavailable.
    Unavailable,
    /// Anything else.
    Unknown,
}

/// One entry of the envelope.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorInfo {
    /// The code, as the spec spells it.
    pub code: &'static str,
    /// A human-readable message.
    pub message: String,
}

/// The JSON body of every error response: `{"errors":[{"code":...,"message":...}]}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorEnvelope {
    /// The errors; wharf always sends one.
    pub errors: Vec<ErrorInfo>,
}

// === impl ErrorCode ===

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::ManifestInvalid => "MANIFEST_INVALID",
            Self::NameInvalid => "NAME_INVALID",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Denied => "DENIED",
            Self::Unsupported => "UNSUPPORTED",
            Self::TooManyRequests => "TOOMANYREQUESTS",
            Self::RangeInvalid => "RANGE_INVALID",
            Self::Unavailable => "UNAVAILABLE",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// Parses a code an upstream sent, for passing a 404's precise code through.
    pub fn from_wire(code: &str) -> Option<Self> {
        Some(match code {
            "BLOB_UNKNOWN" => Self::BlobUnknown,
            "DIGEST_INVALID" => Self::DigestInvalid,
            "MANIFEST_UNKNOWN" => Self::ManifestUnknown,
            "MANIFEST_INVALID" => Self::ManifestInvalid,
            "NAME_INVALID" => Self::NameInvalid,
            "NAME_UNKNOWN" => Self::NameUnknown,
            "UNAUTHORIZED" => Self::Unauthorized,
            "DENIED" => Self::Denied,
            "UNSUPPORTED" => Self::Unsupported,
            "TOOMANYREQUESTS" => Self::TooManyRequests,
            "UNAVAILABLE" => Self::Unavailable,
            "UNKNOWN" => Self::Unknown,
            _ => return None,
        })
    }
}

// === impl ErrorEnvelope ===

impl ErrorEnvelope {
    /// An envelope with one error.
    pub fn single(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            errors: vec![ErrorInfo {
                code: code.as_str(),
                message: message.into(),
            }],
        }
    }

    /// The JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| br#"{"errors":[]}"#.to_vec())
    }

    /// The first code of an upstream's error body, if it is one.
    pub fn first_code(body: &[u8]) -> Option<ErrorCode> {
        #[derive(serde::Deserialize)]
        struct Wire {
            errors: Vec<WireInfo>,
        }
        #[derive(serde::Deserialize)]
        struct WireInfo {
            code: String,
        }
        let wire: Wire = serde_json::from_slice(body).ok()?;
        wire.errors
            .first()
            .and_then(|e| ErrorCode::from_wire(&e.code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape() {
        let json = ErrorEnvelope::single(ErrorCode::NameInvalid, "bad \"name\"").to_json();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["errors"][0]["code"], "NAME_INVALID");
        assert_eq!(v["errors"][0]["message"], "bad \"name\"");
    }

    #[test]
    fn wire_codes_round_trip() {
        for code in [
            ErrorCode::BlobUnknown,
            ErrorCode::DigestInvalid,
            ErrorCode::ManifestUnknown,
            ErrorCode::ManifestInvalid,
            ErrorCode::NameInvalid,
            ErrorCode::NameUnknown,
            ErrorCode::Unauthorized,
            ErrorCode::Denied,
            ErrorCode::Unsupported,
            ErrorCode::TooManyRequests,
            ErrorCode::Unavailable,
            ErrorCode::Unknown,
        ] {
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(code));
        }
        assert_eq!(
            ErrorEnvelope::first_code(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"x"}]}"#),
            Some(ErrorCode::ManifestUnknown)
        );
        assert_eq!(ErrorEnvelope::first_code(b"<html>"), None);
    }
}
