//! Where a bucket of an S3-compatible object store is and how to reach it: [`S3Config`], what
//! `[storage.s3]` reads ([`crate::config`]) and what the S3 blob store connects with
//! ([`crate::store::s3`]). It sits at the bottom, beside [`crate::secret`], so that neither of those
//! layers names the other.

use std::time::Duration;

use url::Url;

use crate::secret::Secret;

/// A bucket of an S3-compatible object store (AWS S3, MinIO, Ceph RGW, Garage), as `[storage.s3]`
/// configures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket (`bucket`).
    pub bucket: String,
    /// Prepended to every object key (`prefix`, optional; empty, or ending with `/`).
    pub prefix: String,
    /// The service's URL (`endpoint`); `None` for AWS itself. `http://` only for a loopback host or
    /// with `allow_http = true`.
    pub endpoint: Option<Url>,
    /// The signing region (`region`, default `"us-east-1"`).
    pub region: String,
    /// Path-style requests (`https://host/bucket/key`) instead of virtual-hosted ones
    /// (`path_style`, default false; MinIO and Garage want true).
    pub path_style: bool,
    /// The access key id (`access_key_id_file` or `access_key_id_env`); `None` with the secret
    /// also `None`: the usual AWS environment variables or instance role.
    pub access_key_id: Option<Secret>,
    /// The secret access key (`secret_access_key_file` or `secret_access_key_env`).
    pub secret_access_key: Option<Secret>,
    /// The most one request may take (`timeout`, default `30s`).
    pub timeout: Duration,
    /// The most connecting may take (`connect_timeout`, default `3s`).
    pub connect_timeout: Duration,
}
