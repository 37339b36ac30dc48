//! Pure OCI Distribution types: digests, repository names and references, media types and the error
//! envelope. Nothing here does I/O, so all of it is unit-tested directly.

pub mod digest;
pub mod error;
pub mod image_ref;
pub mod media;
pub mod reference;

pub use digest::{Digest, DigestError, Verifier};
pub use error::{ErrorCode, ErrorEnvelope};
pub use image_ref::{ImageRef, ImageRefError};
pub use reference::{Reference, RepoName, Tag};
