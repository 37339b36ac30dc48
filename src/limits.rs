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

/// How long a tag list fetched from an upstream answers the same request again (at most; `tag_ttl`
/// when that is shorter). Brief, since tags move; long enough that a burst of clients listing the
/// same repository costs one upstream request.
pub const TAG_LIST_TTL: Duration = Duration::from_secs(5);

/// The memory all kept tag lists may take together (each weighed by its size). A list larger than
/// this is still shared by the requests waiting for it, just not kept.
pub const TAG_LISTS_BYTES: u64 = 64 * 1024 * 1024;

/// The largest error body read from an upstream (to find its OCI error code).
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// How many redirects one upstream request may follow.
pub const MAX_REDIRECTS: usize = 5;

/// The largest token response read from a token realm. Real ones are a few KiB (a JWT and its
/// lifetime); a larger one is refused without being buffered.
pub const MAX_TOKEN_BODY: usize = 1024 * 1024;

/// The largest credential file wharf reads again while running (`password_file`, `auth_file`): a
/// password or a Docker config is far smaller, and a path pointed at something huge must not fill
/// memory.
pub const MAX_CREDENTIAL_FILE: u64 = 1024 * 1024;

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

/// hyper's buffer bound on an HTTP/1.1 connection, both ways: the largest request head it reads
/// (a larger one is answered `431`), and how much of a response body it queues before it stops
/// polling the body and flushes. hyper's default (408 KiB) let every connection streaming a large
/// blob hold four 128 KiB reads at once: 64 clients pulling a layer from cache peaked at 80 MiB.
/// At 128 KiB a connection holds one read, and a request head may still be 128 KiB (nginx takes
/// 32 KiB at most).
pub const HTTP1_MAX_BUF: usize = 128 * 1024;

/// How much of one HTTP/2 stream's response h2 queues before it stops polling the body (hyper's
/// default is 400 KiB): one storage read, as on HTTP/1.1 ([`HTTP1_MAX_BUF`]), so a connection's
/// streams hold no more memory than as many HTTP/1.1 connections would, and a blob's read buffers
/// come free for reuse as they are sent.
pub const H2_MAX_SEND_BUF: usize = 128 * 1024;

/// The write buffer in front of a TLS connection, so the small writes of several responses (an
/// HTTP/2 connection writes each stream's frames apart) go out as one TLS record and one system
/// call instead of one each. One TLS record's worth of plaintext; a larger write (a blob's data)
/// passes through unbuffered and uncopied.
pub const TLS_WRITE_BUF: usize = 16 * 1024;

/// The longest `X-Request-Id` a client may send (a longer one is replaced).
pub const MAX_REQUEST_ID: usize = 64;

/// The longest media type a client may send as a filter (`artifactType` of a referrers request);
/// RFC 6838 names are at most 127 + 1 + 127 bytes. A longer one is a `400`.
pub const MAX_MEDIA_TYPE: usize = 255;

// === blob fills ===

/// How often a blob body that broke off, or arrived below the upstream's `min_rate`, is resumed
/// with a `Range` request (a fill, or a pass-through) before it fails. Each attempt is measured
/// for `min_rate` from its own start, so a trickling upstream holds a client for at most about
/// `(MAX_RESUMES + 1) × min_rate_window` plus the pauses between attempts (0.4 s, 0.8 s, 1.6 s).
pub const MAX_RESUMES: u32 = 3;

// === client authentication ===

/// Failed credential checks an address (or a user name) may make before it is backed off.
pub const AUTH_FREE_FAILURES: u32 = 5;

/// The first back-off after [`AUTH_FREE_FAILURES`] failures; each further failure doubles it.
pub const AUTH_BACKOFF_FIRST: Duration = Duration::from_secs(1);

/// The longest back-off, however many failures there were.
pub const AUTH_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

/// How long failures are remembered: an address or user without a failure for this long starts
/// afresh.
pub const AUTH_FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);

/// How long an address that logged in stays trusted: it checks passwords on bcrypt workers of its
/// own, is not held back by another address's failures for the same user, and may still use
/// credentials it already proved while it is backed off.
pub const AUTH_TRUSTED_FOR: Duration = Duration::from_secs(60 * 60);

/// Addresses (IPv6: /64 networks) whose failures are tracked one by one; beyond that, new ones
/// share one record, so a flood of addresses cannot grow memory nor push out a tracked record.
pub const AUTH_TRACKED_ADDRESSES: usize = 10_000;

/// User names whose failures are tracked one by one; beyond that, new ones share one record.
pub const AUTH_TRACKED_USERS: usize = 10_000;

/// Trusted addresses remembered (see [`AUTH_TRUSTED_FOR`]).
pub const AUTH_TRUSTED_ADDRESSES: usize = 10_000;

/// Concurrent bcrypt checks for addresses and users with recent failures (or a check already
/// running); clean and trusted addresses each have one per CPU of their own.
pub const AUTH_SUSPECT_CHECKS: usize = 1;

/// The longest user name kept for tracking (and logged): longer ones are cut.
pub const AUTH_MAX_USER: usize = 64;
