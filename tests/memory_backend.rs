//! The fill, coalescing, verification, eviction and air-gap suites once more, on the in-memory
//! stores ([`wharf::store::MemoryBlobStore`] and [`wharf::store::MemoryMeta`]): each suite is
//! included whole as a module here, and `common::backend()` starts every wharf of this binary on
//! those stores instead of the disk. The cache's code under test is the same; only the stores
//! under it differ.

// Each included suite brings its own `mod common;`: the same support files are loaded once per
// suite, on purpose.
#![allow(clippy::duplicate_mod)]

#[path = "airgap.rs"]
mod airgap;
#[path = "coalescing.rs"]
mod coalescing;
#[path = "eviction.rs"]
mod eviction;
#[path = "hostile_fills.rs"]
mod hostile_fills;
#[path = "verification.rs"]
mod verification;
