//! Where bytes and records live: the storage seam under the cache.
//!
//! [`blob`] defines the contract every blob store keeps ([`BlobStore`]: ranged reads of committed
//! blobs, two-phase writes that are committed under a verified digest or discarded when dropped,
//! and [`LocalStore`], the housekeeping that only a local filesystem has). [`disk`] is the store on
//! the local filesystem that wharf runs on; [`memory_blob`] keeps blobs in memory, for tests and to
//! prove the seam. Nothing here knows about cache policy, HTTP or registries: this module imports
//! only from [`crate::oci`].

pub mod blob;
pub mod disk;
pub mod memory_blob;

pub use blob::{
    Blob, BlobRead, BlobStore, BlobWriter, ByteStream, Listing, LocalStore, StagedBlob, READ_CHUNK,
    SMALL_BLOB,
};
pub use disk::{private_dir_all, FsBlobStore, DIR_MODE, FILE_MODE};
pub use memory_blob::MemoryBlobStore;
