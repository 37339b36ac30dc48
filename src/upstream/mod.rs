//! The upstream side: one client per configured registry, with its authentication.

pub mod auth;
// LEAD-WIP pub mod client;

// LEAD-WIP pub use client::{Upstream, UpstreamError};
