//! `[storage]` and `[gc]`: where the cache lives, its size budget and watermarks, the free-space
//! floor, the pause after a write error, and what `wharf gc` removes.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::KeyError;
use super::{duration, err};
use crate::size::parse_size;

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The directory holding blobs, staging files and the index (`path`, default `./data`). A relative
    /// path is relative to the process's working directory, not to the configuration file.
    pub path: PathBuf,
    /// The most bytes of blobs and manifests to keep (`max_size`, a human size; absent: no limit).
    pub max_size: Option<u64>,
    /// Eviction starts above this percentage of `max_size` (`high_watermark`, default 95).
    pub high_watermark: u8,
    /// Eviction stops at or below this percentage of `max_size` (`low_watermark`, default 85;
    /// below `high_watermark`).
    pub low_watermark: u8,
    /// The free space to leave on the storage's filesystem: downloads that would go below it are
    /// streamed without caching (`min_free`, default `256MiB`).
    pub min_free: u64,
    /// After a write error (disk full, I/O error, read-only filesystem), how long misses are
    /// streamed without caching before writing is tried again (`write_error_pause`, default `30s`,
    /// more than zero).
    pub write_error_pause: Duration,
}

/// `[gc]`.
#[derive(Debug, Clone)]
pub struct GcConfig {
    /// `wharf gc` removes manifests not pulled for this long (`manifest_retention`, default `90d`,
    /// more than zero).
    pub manifest_retention: Duration,
}

/// `[storage]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    #[serde(default = "default_storage")]
    pub(super) path: String,
    pub(super) max_size: Option<String>,
    #[serde(default = "default_high_watermark")]
    pub(super) high_watermark: u64,
    #[serde(default = "default_low_watermark")]
    pub(super) low_watermark: u64,
    #[serde(default = "default_min_free")]
    pub(super) min_free: String,
    #[serde(default = "default_write_error_pause")]
    pub(super) write_error_pause: String,
}

/// `[gc]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGc {
    #[serde(default = "default_manifest_retention")]
    pub(super) manifest_retention: String,
}

// === impl RawStorage ===

fn default_storage() -> String {
    "./data".into()
}
fn default_high_watermark() -> u64 {
    95
}
fn default_low_watermark() -> u64 {
    85
}
fn default_min_free() -> String {
    "256MiB".into()
}
fn default_write_error_pause() -> String {
    "30s".into()
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            path: default_storage(),
            max_size: None,
            high_watermark: default_high_watermark(),
            low_watermark: default_low_watermark(),
            min_free: default_min_free(),
            write_error_pause: default_write_error_pause(),
        }
    }
}

impl RawStorage {
    /// Checks `[storage]`: the path, the size budget and its watermarks, the free-space floor.
    ///
    /// # Errors
    /// The first key refused.
    pub(super) fn validate(self) -> Result<StorageConfig, KeyError> {
        let raw = self;
        if raw.path.trim().is_empty() {
            return Err(err(
                "storage.path",
                "is empty; set it to the cache directory, e.g. path = \"/var/lib/wharf\"".into(),
            ));
        }
        let max_size = match raw.max_size.as_deref() {
            None => None,
            Some(text) => {
                let size = parse_size(text).map_err(|p| err("storage.max_size", p))?;
                if size == 0 {
                    return Err(err(
                        "storage.max_size",
                        "must be more than zero; use e.g. max_size = \"50GiB\", or leave it out for no limit".into(),
                    ));
                }
                Some(size)
            }
        };
        for (key, value) in [
            ("high_watermark", raw.high_watermark),
            ("low_watermark", raw.low_watermark),
        ] {
            if !(1..=100).contains(&value) {
                return Err(err(
                    &format!("storage.{key}"),
                    format!("{value} is not a percentage of max_size; use 1 to 100 (defaults: high 95, low 85)"),
                ));
            }
        }
        if raw.low_watermark >= raw.high_watermark {
            return Err(err(
                "storage.low_watermark",
                format!(
                    "{} is not below high_watermark ({}); eviction stops at the low watermark, so set it lower, e.g. 85 with 95",
                    raw.low_watermark, raw.high_watermark
                ),
            ));
        }
        let min_free = parse_size(&raw.min_free).map_err(|p| err("storage.min_free", p))?;
        let write_error_pause = duration("storage.write_error_pause", &raw.write_error_pause)?;
        if write_error_pause.is_zero() {
            return Err(err(
                "storage.write_error_pause",
                "must be more than zero; use e.g. write_error_pause = \"30s\"".into(),
            ));
        }
        Ok(StorageConfig {
            path: PathBuf::from(raw.path),
            max_size,
            // Both checked to be 1..=100 above.
            high_watermark: u8::try_from(raw.high_watermark).unwrap_or(100),
            low_watermark: u8::try_from(raw.low_watermark).unwrap_or(100),
            min_free,
            write_error_pause,
        })
    }
}

// === impl RawGc ===

fn default_manifest_retention() -> String {
    "90d".into()
}

impl Default for RawGc {
    fn default() -> Self {
        Self {
            manifest_retention: default_manifest_retention(),
        }
    }
}

impl RawGc {
    /// Checks `[gc]`: a retention of more than zero.
    ///
    /// # Errors
    /// The key refused.
    pub(super) fn validate(self) -> Result<GcConfig, KeyError> {
        let manifest_retention = duration("gc.manifest_retention", &self.manifest_retention)?;
        if manifest_retention.is_zero() {
            return Err(err(
                "gc.manifest_retention",
                "must be more than zero; use e.g. manifest_retention = \"90d\"".into(),
            ));
        }
        Ok(GcConfig { manifest_retention })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_refusals, load, UP};
    use super::*;

    #[test]
    fn lifecycle_defaults_and_keys() {
        let c = load(UP).unwrap();
        assert_eq!(c.storage.max_size, None);
        assert_eq!(
            (c.storage.high_watermark, c.storage.low_watermark),
            (95, 85)
        );
        assert_eq!(c.storage.min_free, 256 << 20);
        assert_eq!(c.storage.write_error_pause, Duration::from_secs(30));
        assert_eq!(c.gc.manifest_retention, Duration::from_secs(90 * 86_400));
        assert!(c.pins.is_empty());

        let text = format!(
            r#"
            [storage]
            max_size = "1.5GiB"
            high_watermark = 90
            low_watermark = 50
            min_free = "0"
            write_error_pause = "2s"
            [gc]
            manifest_retention = "12h"
            [[pin]]
            image = "docker.io/nginx:1.27"
            [[pin]]
            image = "docker.io/library/nginx:1.27"
            [[pin]]
            image = "ghcr.io/org/app@sha256:{}"
            {UP}
            [[upstream]]
            name = "ghcr.io"
            url = "https://ghcr.io"
            "#,
            "ab".repeat(32)
        );
        let c = load(&text).unwrap();
        assert_eq!(c.storage.max_size, Some(3 << 29));
        assert_eq!(
            (c.storage.high_watermark, c.storage.low_watermark),
            (90, 50)
        );
        assert_eq!(c.storage.min_free, 0);
        assert_eq!(c.storage.write_error_pause, Duration::from_secs(2));
        assert_eq!(c.gc.manifest_retention, Duration::from_secs(12 * 3600));
        let pins: Vec<String> = c.pins.iter().map(ToString::to_string).collect();
        assert_eq!(
            pins,
            [
                "docker.io/library/nginx:1.27".to_owned(),
                format!("ghcr.io/org/app@sha256:{}", "ab".repeat(32))
            ]
        );
    }

    #[test]
    fn storage_refusals_name_the_key() {
        let cases: Vec<(String, &str)> = vec![
            // Values.
            (format!("[storage]\npath = \"\"\n{UP}"), "storage.path: is empty"),
            (format!("[storage]\npath = \"  \"\n{UP}"), "storage.path: is empty"),
            // Storage budget, gc and pins.
            (
                format!("[storage]\nmax_size = \"lots\"\n{UP}"),
                "storage.max_size: \"lots\" is not a size; write a number and a unit",
            ),
            (
                format!("[storage]\nmax_size = 50\n{UP}"),
                "storage.max_size: is a whole number, expected a string; sizes are quoted strings with a unit",
            ),
            (format!("[storage]\nmax_size = \"0GiB\"\n{UP}"), "storage.max_size: must be more than zero"),
            (
                format!("[storage]\nhigh_watermark = 101\n{UP}"),
                "storage.high_watermark: 101 is not a percentage of max_size; use 1 to 100",
            ),
            (format!("[storage]\nlow_watermark = 0\n{UP}"), "storage.low_watermark: 0 is not a percentage"),
            (
                format!("[storage]\nlow_watermark = 95\n{UP}"),
                "storage.low_watermark: 95 is not below high_watermark (95)",
            ),
            (
                format!("[storage]\nhigh_watermark = 80\n{UP}"),
                "storage.low_watermark: 85 is not below high_watermark (80)",
            ),
            (format!("[storage]\nmin_free = \"-1\"\n{UP}"), "storage.min_free: \"-1\" is not a size"),
            (
                format!("[storage]\nwrite_error_pause = \"0s\"\n{UP}"),
                "storage.write_error_pause: must be more than zero",
            ),
            (format!("[gc]\nmanifest_retention = \"90\"\n{UP}"), "gc.manifest_retention: \"90\" is not a duration"),
            (format!("[gc]\nmanifest_retention = \"0d\"\n{UP}"), "gc.manifest_retention: must be more than zero"),
            (format!("[gc]\nkeep = 1\n{UP}"), "gc.keep: unknown key; valid keys here are manifest_retention"),
        ];
        assert_refusals(&cases);
    }
}
