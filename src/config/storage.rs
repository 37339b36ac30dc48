//! `[storage]` and `[gc]`: where the cache lives, its size budget and watermarks, the free-space
//! floor, the pause after a write error, the blob backend (`backend`, `[storage.s3]`), and what
//! `wharf gc` removes.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::error::KeyError;
use super::{duration, err, secret_file, Sources};
pub use crate::bucket::S3Config;
use crate::secret::Secret;
use crate::size::parse_size;

#[derive(Debug, Clone, PartialEq)]
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
    /// Where blobs live beyond the local directory (`backend`, default `"disk"`).
    pub backend: Backend,
}

/// The blob backend: `[storage] backend`.
// One value per configuration, read once at start: the size of the disk variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Backend {
    /// Blobs on the local disk under `path` only (`backend = "disk"`, the default).
    #[default]
    Disk,
    /// Blobs in an S3-compatible object store (`backend = "s3"` with `[storage.s3]`).
    S3(S3Config),
}

/// `[gc]`.
#[derive(Debug, Clone, PartialEq)]
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
    #[serde(default = "default_backend")]
    pub(super) backend: String,
    pub(super) s3: Option<RawS3>,
}

/// `[storage.s3]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawS3 {
    bucket: String,
    #[serde(default)]
    prefix: String,
    endpoint: Option<String>,
    #[serde(default)]
    allow_http: bool,
    #[serde(default = "default_region")]
    region: String,
    #[serde(default)]
    path_style: bool,
    access_key_id_file: Option<PathBuf>,
    access_key_id_env: Option<String>,
    secret_access_key_file: Option<PathBuf>,
    secret_access_key_env: Option<String>,
    #[serde(default = "default_s3_timeout")]
    timeout: String,
    #[serde(default = "default_s3_connect_timeout")]
    connect_timeout: String,
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
fn default_backend() -> String {
    "disk".into()
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_s3_timeout() -> String {
    "30s".into()
}
fn default_s3_connect_timeout() -> String {
    "3s".into()
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
            backend: default_backend(),
            s3: None,
        }
    }
}

impl RawStorage {
    /// Checks `[storage]`: the path, the size budget and its watermarks, the free-space floor, the
    /// backend (reading the object store's credentials through `sources`).
    ///
    /// # Errors
    /// The first key refused.
    pub(super) fn validate(self, sources: &dyn Sources) -> Result<StorageConfig, KeyError> {
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
        let backend = match (raw.backend.as_str(), raw.s3) {
            ("disk", None) => Backend::Disk,
            ("s3", Some(s3)) => Backend::S3(s3.validate(sources)?),
            ("s3", None) => {
                return Err(err(
                    "storage.backend",
                    "is \"s3\" but there is no [storage.s3] section; add one with at least bucket = \"NAME\", or set backend = \"disk\"".into(),
                ))
            }
            ("disk", Some(_)) => {
                return Err(err(
                    "storage.s3",
                    "is set but backend is \"disk\", so it would be ignored; set backend = \"s3\" under [storage], or remove [storage.s3]".into(),
                ))
            }
            (other, _) => {
                return Err(err(
                    "storage.backend",
                    format!("{other:?} is not a backend; use \"disk\" (the default) or \"s3\""),
                ))
            }
        };
        Ok(StorageConfig {
            backend,
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

// === impl RawS3 ===

impl RawS3 {
    /// Checks `[storage.s3]`: the bucket, prefix and endpoint, the timeouts, and reads the
    /// credentials.
    ///
    /// # Errors
    /// The first key refused.
    fn validate(self, sources: &dyn Sources) -> Result<S3Config, KeyError> {
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !bucket_ok {
            return Err(err(
                "storage.s3.bucket",
                format!(
                    "{:?} is not a bucket name; use 3 to 63 lowercase letters, digits, '-' or '.', e.g. bucket = \"wharf\"",
                    self.bucket
                ),
            ));
        }
        if !self.prefix.is_empty() && (!self.prefix.ends_with('/') || self.prefix.starts_with('/'))
        {
            return Err(err(
                "storage.s3.prefix",
                format!(
                    "{:?} must end with \"/\" and not start with one; use e.g. prefix = \"cache/\", or leave it out",
                    self.prefix
                ),
            ));
        }
        let endpoint = match self.endpoint.as_deref() {
            None => None,
            Some(text) => Some(endpoint(text, self.allow_http)?),
        };
        if self.region.trim().is_empty() {
            return Err(err(
                "storage.s3.region",
                "is empty; set the store's region, e.g. region = \"us-east-1\" (Garage: \"garage\")".into(),
            ));
        }
        let access_key_id = secret(
            "access_key_id",
            self.access_key_id_file.as_deref(),
            self.access_key_id_env.as_deref(),
            sources,
        )?;
        let secret_access_key = secret(
            "secret_access_key",
            self.secret_access_key_file.as_deref(),
            self.secret_access_key_env.as_deref(),
            sources,
        )?;
        match (&access_key_id, &secret_access_key) {
            (Some(_), None) => return Err(err(
                "storage.s3.secret_access_key_file",
                "is missing but an access key id is set; add secret_access_key_file = \"/etc/wharf/s3.secret\" (or secret_access_key_env), or remove both to use the AWS environment or instance role".into(),
            )),
            (None, Some(_)) => return Err(err(
                "storage.s3.access_key_id_file",
                "is missing but a secret access key is set; add access_key_id_file = \"/etc/wharf/s3.key-id\" (or access_key_id_env), or remove both to use the AWS environment or instance role".into(),
            )),
            _ => {}
        }
        let timeout = duration("storage.s3.timeout", &self.timeout)?;
        let connect_timeout = duration("storage.s3.connect_timeout", &self.connect_timeout)?;
        for (key, value, example) in [
            ("timeout", timeout, "30s"),
            ("connect_timeout", connect_timeout, "3s"),
        ] {
            if value.is_zero() {
                return Err(err(
                    &format!("storage.s3.{key}"),
                    format!("must be more than zero; use e.g. {key} = \"{example}\""),
                ));
            }
        }
        Ok(S3Config {
            bucket: self.bucket,
            prefix: self.prefix,
            endpoint,
            region: self.region,
            path_style: self.path_style,
            access_key_id,
            secret_access_key,
            timeout,
            connect_timeout,
        })
    }
}

/// `endpoint`: an http(s) URL with a host and no path, query or credentials; plain http only to a
/// loopback address or with `allow_http`.
fn endpoint(text: &str, allow_http: bool) -> Result<Url, KeyError> {
    let key = "storage.s3.endpoint";
    let example = "e.g. endpoint = \"https://s3.example:3900\"";
    let url = Url::parse(text).map_err(|e| err(key, format!("is not a URL ({e}); {example}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(
            key,
            "must not contain credentials; use access_key_id_file and secret_access_key_file instead".into(),
        ));
    }
    if url.host_str().is_none() || !matches!(url.scheme(), "http" | "https") {
        return Err(err(
            key,
            format!("{text:?} is not an http(s) URL with a host; {example}"),
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(err(
            key,
            format!("{text:?} has a path or query; give the service's root URL, and the bucket in bucket = \"...\" ({example})"),
        ));
    }
    if url.scheme() == "http" && !allow_http && !is_loopback(&url) {
        return Err(err(
            key,
            format!("{text:?} is plain http to a host that is not loopback, so credentials and blobs would cross the network unencrypted; use https, or set allow_http = true on a trusted network"),
        ));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    }
}

/// One credential from `<name>_file` or `<name>_env`, or `None` when neither is set. Messages name
/// the file or variable, never the value.
fn secret(
    name: &str,
    file: Option<&Path>,
    env: Option<&str>,
    sources: &dyn Sources,
) -> Result<Option<Secret>, KeyError> {
    match (file, env) {
        (Some(_), Some(_)) => Err(err(
            &format!("storage.s3.{name}_env"),
            format!("both {name}_file and {name}_env are set; keep one"),
        )),
        (Some(path), None) => {
            // Read even by the offline commands (`wharf gc` and `check` list the bucket).
            let secret = secret_file::from_file(sources.read(path), path, name)
                .map_err(|reason| err(&format!("storage.s3.{name}_file"), reason))?;
            Ok(Some(secret))
        }
        (None, Some(var)) => {
            let key = format!("storage.s3.{name}_env");
            if !secret_file::is_env_name(var) {
                // Likely the value itself pasted into the wrong key: do not echo it.
                return Err(err(
                    &key,
                    "is not an environment variable name; give the variable's name (letters, digits and _), not the value".into(),
                ));
            }
            let value = sources.env_always(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                err(
                    &key,
                    format!("environment variable {var} is not set or empty; set it in wharf's environment (e.g. an EnvironmentFile= in the systemd unit)"),
                )
            })?;
            Ok(Some(Secret::new(value)))
        }
        (None, None) => Ok(None),
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

    #[test]
    fn s3_backend_keys_and_defaults() {
        let c = load(UP).unwrap();
        assert_eq!(c.storage.backend, Backend::Disk);
        let text = format!(
            r#"
            [storage]
            backend = "s3"
            [storage.s3]
            bucket = "wharf"
            access_key_id_env = "PW"
            secret_access_key_file = "/pw"
            {UP}"#
        );
        let Backend::S3(s3) = load(&text).unwrap().storage.backend else {
            panic!("not s3")
        };
        assert_eq!(s3.bucket, "wharf");
        assert_eq!(s3.prefix, "");
        assert_eq!(s3.endpoint, None);
        assert_eq!(s3.region, "us-east-1");
        assert!(!s3.path_style);
        assert_eq!(
            s3.access_key_id.as_ref().map(Secret::expose),
            Some("env-secret")
        );
        assert_eq!(
            s3.secret_access_key.as_ref().map(Secret::expose),
            Some("file-secret")
        );
        assert_eq!(s3.timeout, Duration::from_secs(30));
        assert_eq!(s3.connect_timeout, Duration::from_secs(3));
        let printed = format!("{s3:?}");
        assert!(
            !printed.contains("env-secret") && !printed.contains("file-secret"),
            "{printed}"
        );

        let text = format!(
            r#"
            [storage]
            backend = "s3"
            [storage.s3]
            bucket = "my.bucket-1"
            prefix = "cache/eu/"
            endpoint = "http://127.0.0.1:3900"
            region = "garage"
            path_style = true
            timeout = "5s"
            connect_timeout = "500ms"
            {UP}"#
        );
        let Backend::S3(s3) = load(&text).unwrap().storage.backend else {
            panic!("not s3")
        };
        assert_eq!(s3.prefix, "cache/eu/");
        assert_eq!(s3.endpoint.unwrap().as_str(), "http://127.0.0.1:3900/");
        assert_eq!(s3.region, "garage");
        assert!(s3.path_style);
        assert_eq!(s3.access_key_id, None, "neither: the AWS environment");
        assert_eq!(s3.secret_access_key, None);
        assert_eq!(s3.timeout, Duration::from_secs(5));
        assert_eq!(s3.connect_timeout, Duration::from_millis(500));

        for endpoint in [
            "http://localhost:9000",
            "http://[::1]:9000",
            "https://s3.example:3900",
        ] {
            let text = format!(
                "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"wharf\"\nendpoint = \"{endpoint}\"\n{UP}"
            );
            load(&text).unwrap();
        }
        let text = format!(
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"wharf\"\nendpoint = \"http://minio.lan:9000\"\nallow_http = true\n{UP}"
        );
        load(&text).unwrap();
    }

    #[test]
    fn s3_refusals_name_the_key() {
        let s3 = |keys: &str| {
            format!("[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"wharf\"\n{keys}\n{UP}")
        };
        let cases: Vec<(String, &str)> = vec![
            (format!("[storage]\nbackend = \"s3\"\n{UP}"), "storage.backend: is \"s3\" but there is no [storage.s3] section"),
            (
                format!("[storage.s3]\nbucket = \"wharf\"\n{UP}"),
                "storage.s3: is set but backend is \"disk\"",
            ),
            (format!("[storage]\nbackend = \"gcs\"\n{UP}"), "storage.backend: \"gcs\" is not a backend; use"),
            (format!("[storage]\nbackend = \"s3\"\n[storage.s3]\nprefix = \"x/\"\n{UP}"), "storage.s3: missing field `bucket`"),
            (s3("colour = 1"), "storage.s3.colour: unknown key"),
            (
                format!("[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"Wharf_1\"\n{UP}"),
                "storage.s3.bucket: \"Wharf_1\" is not a bucket name",
            ),
            (s3("prefix = \"cache\""), "storage.s3.prefix: \"cache\" must end with \"/\""),
            (s3("prefix = \"/cache/\""), "storage.s3.prefix: \"/cache/\" must end with"),
            (s3("endpoint = \"s3.example\""), "storage.s3.endpoint: is not a URL"),
            (s3("endpoint = \"ftp://s3.example\""), "storage.s3.endpoint: \"ftp://s3.example\" is not an http(s) URL"),
            (s3("endpoint = \"https://s3.example/wharf\""), "storage.s3.endpoint: \"https://s3.example/wharf\" has a path"),
            (s3("endpoint = \"https://k:hunter2@s3.example\""), "storage.s3.endpoint: must not contain credentials"),
            (s3("endpoint = \"http://s3.example:9000\""), "is plain http to a host that is not loopback"),
            (s3("region = \"\""), "storage.s3.region: is empty"),
            (s3("access_key_id_file = \"/pw\""), "storage.s3.secret_access_key_file: is missing but an access key id is set"),
            (s3("secret_access_key_env = \"PW\""), "storage.s3.access_key_id_file: is missing but a secret access key is set"),
            (
                s3("access_key_id_file = \"/pw\"\naccess_key_id_env = \"PW\""),
                "storage.s3.access_key_id_env: both access_key_id_file and access_key_id_env are set",
            ),
            (s3("access_key_id_file = \"/nope\"\nsecret_access_key_file = \"/pw\""), "storage.s3.access_key_id_file: cannot read /nope (no such file)"),
            (s3("access_key_id_file = \"/pw\"\nsecret_access_key_file = \"/empty\""), "storage.s3.secret_access_key_file: /empty is empty"),
            (s3("access_key_id_env = \"PW\"\nsecret_access_key_env = \"NOPE\""), "storage.s3.secret_access_key_env: environment variable NOPE is not set"),
            (s3("access_key_id_env = \"PW\"\nsecret_access_key_env = \"wJalr/K7MDENG\""), "storage.s3.secret_access_key_env: is not an environment variable name"),
            (s3("timeout = \"0s\""), "storage.s3.timeout: must be more than zero"),
            (s3("connect_timeout = \"3\""), "storage.s3.connect_timeout: \"3\" is not a duration"),
        ];
        // As assert_refusals, except that the keys' own names say "secret": the values must not show.
        for (text, want) in &cases {
            let got = load(text).map(|_| ()).unwrap_err().to_string();
            assert!(got.starts_with("wharf.toml: "), "{text:?} -> {got}");
            assert!(got.contains(want), "{text:?}: want {want:?} in {got:?}");
            assert!(!got.contains('\n'), "{got:?} is more than one line");
            assert!(got.contains("; "), "{got:?} has no fix");
            assert!(
                !got.contains("hunter2")
                    && !got.contains("file-secret")
                    && !got.contains("env-secret"),
                "{got:?} leaks a secret"
            );
        }
        let got = load(&s3(
            "access_key_id_env = \"PW\"\nsecret_access_key_env = \"wJalr/K7MDENG\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(!got.contains("wJalr"), "{got}");
        let got = load(&s3("endpoint = \"https://k:hunter2@s3.example\""))
            .unwrap_err()
            .to_string();
        assert!(!got.contains("hunter2"), "{got}");
    }

    #[test]
    fn offline_commands_read_the_object_store_credentials() {
        // `wharf gc` and `check` list the bucket: unlike upstream passwords, these are read.
        let dir = tempfile::tempdir().unwrap();
        let (id, secret) = (dir.path().join("id"), dir.path().join("secret"));
        std::fs::write(&id, "GK123\n").unwrap();
        std::fs::write(&secret, "s3-secret-value\n").unwrap();
        let file = dir.path().join("wharf.toml");
        std::fs::write(
            &file,
            format!(
                "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"wharf\"\naccess_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"\n{UP}",
                id.display(),
                secret.display()
            ),
        )
        .unwrap();
        let c = crate::Config::load_offline(&file).unwrap();
        let Backend::S3(s3) = c.storage.backend else {
            panic!("not s3")
        };
        assert_eq!(s3.access_key_id.as_ref().map(Secret::expose), Some("GK123"));
        assert_eq!(
            s3.secret_access_key.as_ref().map(Secret::expose),
            Some("s3-secret-value")
        );
    }
}
