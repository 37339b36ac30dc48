//! Pure OCI Distribution types: digests, repository names and references, image references and
//! lists, platforms, media types and the error envelope. Nothing here does I/O, so all of it is
//! unit-tested directly.

pub mod digest;
pub mod error;
pub mod image_list;
pub mod image_ref;
pub mod media;
pub mod platform;
pub mod reference;
pub mod referrer;

pub use digest::{Digest, DigestError, Verifier};
pub use error::{ErrorCode, ErrorEnvelope};
pub use image_list::{ListError, ResolveError};
pub use image_ref::{ImageRef, ImageRefError};
pub use platform::{Platform, PlatformError};
pub use reference::{Reference, RepoName, Tag};
