//! Every bound on what wharf reads, keeps or waits for, in one place.
//!
//! wharf sits between clients and upstreams it does not control, so nothing either side sends is
//! read, kept or waited for without a limit. The limits that an operator may tune are
//! configuration keys (their defaults are in `config.toml`); the ones here are fixed, because no
//! honest registry or client comes near them. The README's "Limits" section lists both; keep the
//! two in step.

use std::time::Duration;

// === documents read from an upstream ===

/// The largest manifest (image manifest, index, artifact) wharf reads, keeps or serves. The
/// distribution registry refuses manifests over 4 MiB on push, so no honest upstream serves one.
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// The largest tag list (`/tags/list`) read from an upstream.
pub const MAX_TAGS_BODY: usize = 16 * 1024 * 1024;

/// The largest error body read from an upstream (to find its OCI error code).
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// How many redirects one upstream request may follow.
pub const MAX_REDIRECTS: usize = 5;

/// The largest token response read from a token realm. Real ones are a few KiB (a JWT and its
/// lifetime); a larger one is refused without being buffered.
pub const MAX_TOKEN_BODY: usize = 1024 * 1024;

// === air-gap bundles ===

/// The largest `wharf-bundle.json` in a bundle.
pub const MAX_BUNDLE_JSON: u64 = 64 * 1024 * 1024;

/// The largest `index.json` in a bundle.
pub const MAX_INDEX_JSON: u64 = 16 * 1024 * 1024;

/// The largest `oci-layout` file in a bundle.
pub const MAX_OCI_LAYOUT: u64 = 64 * 1024;

/// The most entries a bundle may have.
pub const MAX_BUNDLE_ENTRIES: u64 = 500_000;

/// The largest pax or GNU extension header in a bundle's tar stream.
pub const MAX_TAR_EXTENSION: u64 = 64 * 1024;

/// The largest request body on the control socket.
pub const MAX_CONTROL_REQUEST: usize = 16 * 1024 * 1024;

// === the downstream side ===

/// How long a TLS handshake may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often an HTTP/2 client connection is pinged, so a peer that vanished is noticed.
pub const H2_PING_INTERVAL: Duration = Duration::from_secs(20);

/// How long an HTTP/2 ping may go unanswered before the connection is closed.
pub const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The longest `X-Request-Id` a client may send (a longer one is replaced).
pub const MAX_REQUEST_ID: usize = 64;
