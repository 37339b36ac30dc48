//! The fill, coalescing, verification, eviction and air-gap suites once more, on the in-memory
//! stores ([`wharf::store::MemoryBlobStore`] and [`wharf::store::MemoryMeta`]): each suite is
//! included whole as a module here, and `common::backend()` starts every wharf of this binary on
//! those stores instead of the disk. The cache's code under test is the same; only the stores
//! under it differ.

#[path = "coalescing.rs"]
mod coalescing;
#[path = "verification.rs"]
mod verification;
