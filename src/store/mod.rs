//! Where bytes and records live: the storage seam under the cache.
//!
//! - [`blob`]: the contract every blob store keeps ([`BlobStore`]: ranged reads of committed blobs,
//!   two-phase writes that are committed under a verified digest or discarded when dropped, and
//!   [`LocalStore`], the housekeeping that only a local filesystem has);
//! - [`disk`]: the blob store on the local filesystem that wharf runs on; [`memory_blob`]: blobs
//!   in memory, for tests and to prove the seam;
//! - [`meta`]: the [`MetaStore`] trait (what the cache records about its content: blob sizes and
//!   usage, manifest media types, cached tags and referrers lists, access times, pins) and the
//!   plain types it speaks;
//! - [`s3`]: blobs in a bucket of an S3-compatible object store;
//! - [`sled_meta`]: the metadata store on disk that wharf runs on; [`memory_meta`]: the same in
//!   memory.
//!
//! Nothing here knows about cache policy, HTTP or registries: this module imports only from
//! [`crate::oci`] (and [`crate::bucket`], the object store's settings, and [`crate::secret`]).

pub mod blob;
pub mod disk;
pub mod memory_blob;
pub mod memory_meta;
pub mod meta;
pub mod s3;
pub mod sled_meta;

pub use blob::{
    Blob, BlobRead, BlobStore, BlobWriter, ByteStream, Listed, Listing, LocalStore, StagedBlob,
    READ_CHUNK, SMALL_BLOB,
};
pub use disk::{private_dir_all, FsBlobStore, DIR_MODE, FILE_MODE};
pub use memory_blob::MemoryBlobStore;
pub use memory_meta::MemoryMeta;
pub use meta::{BlobIter, IndexError, MetaError, MetaStore, PinSource, TagEntry, Usage};
pub use s3::S3BlobStore;
pub use sled_meta::SledMeta;
