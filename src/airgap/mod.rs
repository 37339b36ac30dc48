//! Air-gapped sites: filling a wharf ahead of time on the connected side, carrying its content
//! across in a bundle, and serving it offline on the other side under the same image names.
//!
//! - [`prefetch`]: `wharf prefetch` pulls whole images into the cache through the same code that
//!   answers clients, and pins them.
//! - [`sync`]: `[[sync]]` entries keep lists of images fresh in the background while wharf serves.
//! - [`export`]: `wharf export` writes images (named, pinned or all) as an OCI image layout in a tar
//!   with a checksum manifest ([`bundle`]), streamed from the blob store; incrementally with
//!   `--since`.
//! - [`import`]: `wharf import` reads a bundle into the cache, verifying everything before anything
//!   is visible.
//!
//! All of it runs against a [`crate::server::App`] (cache and upstreams). When no wharf serves the
//! storage, the command opens it and runs the engine itself; when one does (the storage's index is
//! locked), the command asks that wharf over its [`control`] socket ([`client`]) and prints the
//! same progress and summary ([`report`]). Image lists and platforms are parsed in [`refs`],
//! manifests read in [`manifest`], tar streamed by [`tar`].

pub mod bundle;
pub mod client;
pub mod control;
pub mod export;
pub mod import;
pub mod manifest;
pub mod pins;
pub mod prefetch;
pub mod referrers;
pub mod refs;
pub mod report;
pub mod sign;
pub mod sync;
pub mod tar;
