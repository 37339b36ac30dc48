//! Where the cache's content lives: the seam between the cache's policy (`cache/`) and its
//! storage backends.
//!
//! - [`meta`]: the [`MetaStore`] trait (what the cache records about its content: blob sizes and
//!   usage, manifest media types, cached tags and referrers lists, access times, pins) and the
//!   plain types it speaks;
//! - [`sled_meta`]: the metadata store on disk that wharf runs on;
//! - [`memory_meta`]: the same in memory, for tests and embedders.
//!
//! Nothing here imports from `cache/`, `server/` or `airgap/`: the backends know bytes and
//! records, not policy.

pub mod memory_meta;
pub mod meta;
pub mod sled_meta;

pub use memory_meta::MemoryMeta;
pub use meta::{BlobIter, IndexError, MetaError, MetaStore, PinSource, TagEntry, Usage};
pub use sled_meta::SledMeta;
