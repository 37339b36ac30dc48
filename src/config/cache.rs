//! `[cache]`: how long a tag's digest is trusted, whether a stale one is served when the upstream
//! cannot be asked, and how long "no such tag" is remembered.

use std::time::Duration;

use serde::Deserialize;

use super::error::KeyError;
use super::{default_true, duration, err};

#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// How long a tag's digest is trusted before the upstream is asked again (`tag_ttl`, default
    /// `5m`); never zero.
    pub tag_ttl: Duration,
    /// Whether a cached tag is served (with a `Warning` header) when the upstream cannot be asked
    /// (`serve_stale`, default true).
    pub serve_stale: bool,
    /// How long an upstream's "no such tag" is remembered (`negative_ttl`, default `30s`; `0s` turns
    /// it off).
    pub negative_ttl: Duration,
}

/// `[cache]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    #[serde(default = "default_tag_ttl")]
    pub(super) tag_ttl: String,
    #[serde(default = "default_true")]
    pub(super) serve_stale: bool,
    #[serde(default = "default_negative_ttl")]
    pub(super) negative_ttl: String,
}

// === impl RawCache ===

fn default_tag_ttl() -> String {
    "5m".into()
}
fn default_negative_ttl() -> String {
    "30s".into()
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            tag_ttl: default_tag_ttl(),
            serve_stale: true,
            negative_ttl: default_negative_ttl(),
        }
    }
}

impl RawCache {
    /// Checks `[cache]`: durations, and a tag TTL of more than zero.
    ///
    /// # Errors
    /// The first key refused.
    pub(super) fn validate(self) -> Result<CacheConfig, KeyError> {
        let tag_ttl = duration("cache.tag_ttl", &self.tag_ttl)?;
        let negative_ttl = duration("cache.negative_ttl", &self.negative_ttl)?;
        if tag_ttl.is_zero() {
            return Err(err(
                "cache.tag_ttl",
                "must be more than zero; use e.g. tag_ttl = \"5m\"".into(),
            ));
        }
        Ok(CacheConfig {
            tag_ttl,
            serve_stale: self.serve_stale,
            negative_ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_refusals, UP};

    #[test]
    fn cache_refusals_name_the_key() {
        let cases: Vec<(String, &str)> = vec![
            // Values.
            (
                format!("[cache]\ntag_ttl = \"5\"\n{UP}"),
                "cache.tag_ttl: \"5\" is not a duration",
            ),
            (
                format!("[cache]\ntag_ttl = \"0s\"\n{UP}"),
                "cache.tag_ttl: must be more than zero",
            ),
        ];
        assert_refusals(&cases);
    }
}
