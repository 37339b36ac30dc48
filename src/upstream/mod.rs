//! The upstream side: one client per configured registry, with its authentication, and the
//! registry protocol it speaks ([`registry`]): the rest of wharf asks for manifests, blobs, tag and
//! referrers lists by name and never builds a `/v2/...` URL or sees an HTTP client type.

pub mod auth;
pub mod client;
pub mod credentials;
pub mod rate;
pub mod redirect;
pub mod registry;

pub use client::{Signer, Upstream, UpstreamError};
pub use registry::{BlobBody, ManifestHead, ManifestResponse, TagsPage};
