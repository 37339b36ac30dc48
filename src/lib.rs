//! wharf: a pull-through caching proxy and mirror for OCI / Docker container registries.
//!
//! Clients (the Docker daemon, containerd, Podman, skopeo) point at wharf instead of the upstream
//! registry. wharf serves the read side of the OCI Distribution API from its own disk cache, fetches
//! what it lacks from the configured upstream with that upstream's credentials, and keeps a blob only
//! after its sha256 and size have been verified.
//!
//! The crate is split by boundary: [`config`] (the operator's file), [`oci`] (pure protocol types),
//! [`server`] (the downstream HTTP API), [`upstream`] (the registry client) and [`cache`] (blob store,
//! index and in-flight fills). `main.rs` only wires these together.

// LEAD-WIP: cache, server and start/run are being wired in (see the lead's working copy).
pub mod config;
pub mod oci;
pub mod secret;
pub mod upstream;
