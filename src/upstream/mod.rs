//! The upstream side: one client per configured registry, with its authentication.

pub mod auth;
pub mod client;
pub mod rate;
pub mod redirect;

pub use client::{Upstream, UpstreamError};
