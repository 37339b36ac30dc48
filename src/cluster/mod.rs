//! Replicas: which wharf owns each blob digest, and the client that asks the owner for it.
//!
//! `[cluster]` lists the replicas (`peers`, or `peers_dns` resolved again every
//! [`DNS_REFRESH`]). Each digest has one owner among the live peers, chosen by rendezvous
//! (highest random weight) hashing: every peer gets the weight `u64` of the first 8 bytes of
//! `sha256(<peer origin> || <the digest's 32 bytes>)`, and the heaviest owns the digest. Every
//! replica computes the same owner from the same list, with no coordination, and a peer joining or
//! leaving moves only the digests it wins or held (about 1/N of them), where a modulo would remap
//! most. A peer that failed (no connection, no headers within `owner_timeout`, a 5xx, a body cut)
//! is skipped for [`DOWN_FOR`]; its digests go to the next peer by weight meanwhile.
//!
//! A replica that misses a blob it does not own fetches it through the owner, which is just another
//! upstream to it ([`Cluster::owner_upstream`]): an [`Upstream`] built from the blob's upstream's
//! configuration with the owner's address, `mirror_of_mirror` (so the owner is told the upstream's
//! name with `?ns=`), no credentials, `owner_timeout` as its deadline until response headers (a
//! body may then stay silent as long as the upstream's `timeout` allows) and every request signed
//! with the shared secret ([`auth`]). The owner's followers stream live, as
//! for any fill; when the owner does not answer, the fill goes on from the upstream itself.
//!
//! This module sits below the cache: the cache asks it for the owner's upstream and tells it when
//! that failed; it never calls the cache.

pub mod auth;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use url::Url;

use crate::config::{ClusterConfig, PeerSource, UpstreamConfig};
use crate::metrics::Metrics;
use crate::oci::Digest;
use crate::upstream::{Upstream, UpstreamError};
pub use auth::{PeerAuthError, PeerKey, PEER_HEADER};

/// How long a peer that failed is skipped.
pub const DOWN_FOR: Duration = Duration::from_secs(15);

/// How often `peers_dns` is resolved again.
pub const DNS_REFRESH: Duration = Duration::from_secs(30);

/// One replica, by its origin (`http://wharf-0:5000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    url: Url,
    /// `url`'s origin, serialised: what is hashed and compared.
    origin: String,
}

/// This replica's view of the cluster.
pub struct Cluster {
    own: Peer,
    source: PeerSource,
    /// The known peers (from the configuration, or the last DNS answer), this replica included.
    peers: RwLock<Arc<[Peer]>>,
    /// Peers that failed, by origin, until when they are skipped.
    down: Mutex<HashMap<String, Instant>>,
    /// The clients that ask an owner for an upstream's blobs, by (owner origin, upstream name).
    clients: Mutex<HashMap<(String, String), Arc<Upstream>>>,
    /// The configured upstreams, by name: what a client to an owner is built from.
    upstreams: HashMap<String, UpstreamConfig>,
    key: Arc<PeerKey>,
    owner_timeout: Duration,
    ca_pem: Option<Vec<u8>>,
    metrics: Arc<Metrics>,
}

// === impl Peer ===

impl Peer {
    /// The peer at `url` (its path, if any, is dropped).
    pub fn new(url: &Url) -> Self {
        let origin = url.origin().ascii_serialization();
        let url = Url::parse(&origin).unwrap_or_else(|_| url.clone());
        Self { url, origin }
    }

    /// Where the peer is.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The peer's origin, `scheme://host[:port]`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The peer's rendezvous weight for `digest`.
    pub fn weight(&self, digest: &Digest) -> u64 {
        let mut hash = Sha256::new();
        hash.update(self.origin.as_bytes());
        hash.update(digest.as_bytes());
        let out = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&out[..8]);
        u64::from_be_bytes(first)
    }
}

/// The owner of `digest` among `peers`: the heaviest, ties (which sha256 makes all but
/// impossible) broken by origin.
pub fn rendezvous<'a>(
    peers: impl IntoIterator<Item = &'a Peer>,
    digest: &Digest,
) -> Option<&'a Peer> {
    peers.into_iter().max_by(|a, b| {
        a.weight(digest)
            .cmp(&b.weight(digest))
            .then_with(|| a.origin.cmp(&b.origin))
    })
}

// === impl Cluster ===

impl Cluster {
    /// This replica's view of the cluster `config` describes, asking owners for the blobs of
    /// `upstreams`. With `peers_dns`, the list holds only this replica until
    /// [`Cluster::refresh`] first resolves the name.
    pub fn new(
        config: &ClusterConfig,
        upstreams: &[UpstreamConfig],
        metrics: Arc<Metrics>,
    ) -> Self {
        let own = Peer::new(&config.own);
        let peers: Vec<Peer> = match &config.peers {
            PeerSource::Static(list) => list.iter().map(Peer::new).collect(),
            PeerSource::Dns { .. } => vec![own.clone()],
        };
        Self {
            own,
            source: config.peers.clone(),
            peers: RwLock::new(peers.into()),
            down: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            upstreams: upstreams
                .iter()
                .map(|u| (u.name.clone(), u.clone()))
                .collect(),
            key: Arc::new(PeerKey::new(&config.secret)),
            owner_timeout: config.owner_timeout,
            ca_pem: config.ca_pem.clone(),
            metrics,
        }
    }

    /// The key that signs and checks peer requests.
    pub fn key(&self) -> &Arc<PeerKey> {
        &self.key
    }

    /// This replica.
    pub fn own(&self) -> &Peer {
        &self.own
    }

    /// The known peers, this replica included, whether up or down.
    pub fn peers(&self) -> Arc<[Peer]> {
        self.peers.read().clone()
    }

    /// The replica that owns `digest` among the live peers; `None` when it is this one.
    pub fn owner(&self, digest: &Digest) -> Option<Peer> {
        let peers = self.peers();
        let now = Instant::now();
        let owner = {
            let mut down = self.down.lock();
            down.retain(|_, until| *until > now);
            let live = peers
                .iter()
                .filter(|p| *p == &self.own || !down.contains_key(&p.origin));
            rendezvous(live.chain(std::iter::once(&self.own)), digest)?.clone()
        };
        (owner != self.own).then_some(owner)
    }

    /// The client that asks the owner of `digest` for the blobs of `upstream`; `None` when this
    /// replica owns it (or the upstream is offline, or not configured here).
    pub fn owner_upstream(&self, upstream: &Upstream, digest: &Digest) -> Option<Arc<Upstream>> {
        if upstream.offline() {
            return None;
        }
        let owner = self.owner(digest)?;
        let key = (owner.origin.clone(), upstream.name().to_owned());
        if let Some(client) = self.clients.lock().get(&key) {
            return Some(client.clone());
        }
        let config = self.peer_config(&owner, self.upstreams.get(upstream.name())?);
        match Upstream::new(&config, self.metrics.clone()) {
            Ok(client) => {
                let client = Arc::new(
                    client
                        .with_deadline(self.owner_timeout)
                        .with_signer(self.key.clone()),
                );
                Some(self.clients.lock().entry(key).or_insert(client).clone())
            }
            Err(error) => {
                warn!(owner = %owner.origin, upstream = %upstream.name(), %error, "cannot build the client for a peer; going to the upstream");
                None
            }
        }
    }

    /// Marks the peer `peer_upstream` (a client from [`Cluster::owner_upstream`]) down for
    /// [`DOWN_FOR`]: until then its digests go to the next peer by weight.
    pub fn failed(&self, peer_upstream: &Upstream) {
        let origin = peer_upstream.url().origin().ascii_serialization();
        if origin == self.own.origin {
            return;
        }
        let until = Instant::now() + DOWN_FOR;
        if self.down.lock().insert(origin.clone(), until).is_none() {
            warn!(peer = %origin, down_for_s = DOWN_FOR.as_secs(), "peer replica failed; skipping it for a while");
        }
    }

    /// Resolves `peers_dns` again (a no-op for a fixed list). A failed lookup keeps the last list.
    pub async fn refresh(&self) {
        let PeerSource::Dns { host, port, scheme } = &self.source else {
            return;
        };
        match tokio::net::lookup_host((host.as_str(), *port)).await {
            Ok(addrs) => {
                let mut peers: Vec<Peer> = addrs
                    .filter_map(|a| Url::parse(&format!("{scheme}://{a}")).ok())
                    .map(|u| Peer::new(&u))
                    .collect();
                if !peers.contains(&self.own) {
                    peers.push(self.own.clone());
                }
                peers.sort_by(|a, b| a.origin.cmp(&b.origin));
                peers.dedup();
                let changed = **self.peers.read() != *peers;
                if changed {
                    info!(peers = peers.len(), dns = %host, "cluster peers changed");
                    *self.peers.write() = peers.into();
                }
            }
            Err(error) => {
                warn!(dns = %host, %error, "cannot resolve cluster.peers_dns; keeping the last list of peers");
            }
        }
    }

    /// With `peers_dns`, a task that resolves it again every [`DNS_REFRESH`] (call
    /// [`Cluster::refresh`] first for the first answer); `None` for a fixed list.
    pub fn spawn_refresh(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if !matches!(self.source, PeerSource::Dns { .. }) {
            return None;
        }
        let cluster = self.clone();
        Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(DNS_REFRESH).await;
                cluster.refresh().await;
            }
        }))
    }

    /// The configuration of the client that asks `owner` for `upstream`'s blobs.
    fn peer_config(&self, owner: &Peer, upstream: &UpstreamConfig) -> UpstreamConfig {
        debug!(owner = %owner.origin, upstream = %upstream.name, "client for a peer");
        UpstreamConfig {
            url: owner.url.clone(),
            // The owner is one peer: no fallbacks, and no upstream credentials (nor a helper).
            fallback_urls: Vec::new(),
            default: false,
            credentials: None,
            credential_source: None,
            token_realms: Vec::new(),
            // The owner must connect and send headers within owner_timeout (the deadline set on
            // the client); its body may then stay silent as long as the upstream's may, because
            // the owner streams at its upstream's pace.
            connect_timeout: self.owner_timeout.min(upstream.connect_timeout),
            offline: false,
            insecure: false,
            ca_pem: self.ca_pem.clone(),
            allow: None,
            redirect_hosts: Vec::new(),
            // The owner routes by the upstream's name, as any wharf in front of a wharf does.
            mirror_of_mirror: true,
            ..upstream.clone()
        }
    }
}

/// Whether an owner's answer means it is down (no connection, no answer in time, a 5xx, a broken
/// response, or a refusal of this replica's signature): such a peer is skipped for [`DOWN_FOR`].
/// A 404 or another client error is about the blob, not the peer.
pub fn is_down(error: &UpstreamError) -> bool {
    match error {
        UpstreamError::Unreachable { .. }
        | UpstreamError::Timeout { .. }
        | UpstreamError::Protocol { .. }
        | UpstreamError::Auth { .. } => true,
        UpstreamError::Status { status, .. } => {
            status.is_server_error()
                || *status == http::StatusCode::UNAUTHORIZED
                || *status == http::StatusCode::FORBIDDEN
        }
        // Peers are asked without credentials: never theirs.
        UpstreamError::Offline { .. }
        | UpstreamError::Busy { .. }
        | UpstreamError::Credentials { .. } => false,
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("own", &self.own.origin)
            .field("peers", &self.peers().len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn peers(n: usize) -> Vec<Peer> {
        (0..n)
            .map(|i| Peer::new(&Url::parse(&format!("http://wharf-{i}:5000")).unwrap()))
            .collect()
    }

    fn digests(n: u32) -> Vec<Digest> {
        (0..n).map(|i| Digest::of(&i.to_be_bytes())).collect()
    }

    fn config(own: usize, n: usize) -> ClusterConfig {
        ClusterConfig {
            peers: PeerSource::Static(peers(n).iter().map(|p| p.url.clone()).collect()),
            own: peers(n)[own].url.clone(),
            secret: Secret::new("0123456789abcdef0123456789abcdef"),
            owner_timeout: Duration::from_secs(2),
            ca_pem: None,
        }
    }

    fn upstream_config() -> UpstreamConfig {
        let text = "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\nusername = \"u\"\npassword_env = \"PW\"\n";
        struct Env;
        impl crate::config::Sources for Env {
            fn env(&self, _: &str) -> Option<String> {
                Some("hunter2".into())
            }
            fn read(&self, _: &std::path::Path) -> std::io::Result<String> {
                Err(std::io::ErrorKind::NotFound.into())
            }
        }
        crate::config::Config::from_toml_with(text, std::path::Path::new("t.toml"), &Env)
            .unwrap()
            .upstreams
            .remove(0)
    }

    #[test]
    fn the_weight_is_fixed() {
        // Every replica, whatever its version, must compute the same owner: the weight is pinned.
        let p = Peer::new(&Url::parse("http://wharf-0:5000/").unwrap());
        assert_eq!(p.origin(), "http://wharf-0:5000");
        let d = Digest::of(b"");
        let mut h = Sha256::new();
        h.update(b"http://wharf-0:5000");
        h.update(d.as_bytes());
        let want = u64::from_be_bytes(h.finalize()[..8].try_into().unwrap());
        assert_eq!(p.weight(&d), want);
    }

    #[test]
    fn owners_spread_evenly() {
        let ps = peers(4);
        let mut counts = HashMap::new();
        for d in digests(10_000) {
            *counts
                .entry(rendezvous(&ps, &d).unwrap().origin.clone())
                .or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 4);
        for (p, n) in counts {
            assert!((2_200..2_800).contains(&n), "{p} owns {n} of 10000");
        }
    }

    #[test]
    fn a_peer_leaving_or_joining_moves_about_one_nth() {
        let ds = digests(10_000);
        let five = peers(5);
        let four = &five[..4];
        let mut moved_leave = 0;
        for d in &ds {
            let before = rendezvous(&five, d).unwrap();
            let after = rendezvous(four, d).unwrap();
            if before != after {
                // Only the leaving peer's digests move.
                assert_eq!(before, &five[4]);
                moved_leave += 1;
            }
        }
        // 1/5 of 10,000 is 2,000.
        assert!((1_700..2_300).contains(&moved_leave), "{moved_leave} moved");
        // Joining is the same move the other way: every digest that moves goes to the newcomer.
        let mut moved_join = 0;
        for d in &ds {
            let before = rendezvous(four, d).unwrap();
            let after = rendezvous(&five, d).unwrap();
            if before != after {
                assert_eq!(after, &five[4]);
                moved_join += 1;
            }
        }
        assert_eq!(moved_join, moved_leave);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_owner_is_skipped_for_a_while() {
        let metrics = Arc::new(Metrics::new());
        let up = upstream_config();
        let cluster = Cluster::new(&config(0, 3), std::slice::from_ref(&up), metrics.clone());
        let hub = Upstream::new(&up, metrics).unwrap();
        // A digest another peer owns.
        let d = digests(100)
            .into_iter()
            .find(|d| cluster.owner(d).is_some())
            .unwrap();
        let owner = cluster.owner(&d).unwrap();
        let client = cluster.owner_upstream(&hub, &d).unwrap();
        assert_eq!(client.url().origin().ascii_serialization(), owner.origin());
        assert_eq!(client.name(), "docker.io");
        // Cached per (owner, upstream).
        assert!(Arc::ptr_eq(
            &client,
            &cluster.owner_upstream(&hub, &d).unwrap()
        ));
        cluster.failed(&client);
        let next = cluster.owner(&d);
        assert_ne!(next.as_ref(), Some(&owner));
        // The next by weight among the rest, this replica included.
        let rest: Vec<Peer> = peers(3).into_iter().filter(|p| *p != owner).collect();
        let want = rendezvous(&rest, &d).unwrap();
        assert_eq!(next.as_ref().unwrap_or(cluster.own()), want);
        tokio::time::advance(DOWN_FOR + Duration::from_millis(1)).await;
        assert_eq!(cluster.owner(&d), Some(owner));
    }

    #[test]
    fn this_replica_owns_its_share_and_is_never_marked_down() {
        let c = Cluster::new(&config(1, 3), &[], Arc::new(Metrics::new()));
        let ds = digests(3_000);
        let mine = ds.iter().filter(|d| c.owner(d).is_none()).count();
        assert!((800..1_200).contains(&mine), "{mine}");
        let all = peers(3);
        for d in &ds {
            let want = rendezvous(&all, d).unwrap();
            assert_eq!(c.owner(d).as_ref().unwrap_or(c.own()), want);
        }
    }

    #[tokio::test]
    async fn peers_dns_resolves_to_one_peer_per_address_and_keeps_this_one() {
        let mut c = config(0, 1);
        c.peers = PeerSource::Dns {
            host: "localhost".into(),
            port: 5000,
            scheme: "https".into(),
        };
        c.own = Url::parse("https://10.9.9.9:5000").unwrap();
        let cluster = Cluster::new(&c, &[], Arc::new(Metrics::new()));
        // Before the first answer: this replica alone, owner of everything.
        assert_eq!(cluster.peers().len(), 1);
        assert!(cluster.owner(&Digest::of(b"x")).is_none());
        cluster.refresh().await;
        let peers = cluster.peers();
        let origins: Vec<&str> = peers.iter().map(Peer::origin).collect();
        assert!(origins.contains(&"https://127.0.0.1:5000"), "{origins:?}");
        assert!(origins.contains(&"https://10.9.9.9:5000"), "{origins:?}");
        // A name that does not resolve keeps the last list.
        let mut gone = c.clone();
        gone.peers = PeerSource::Dns {
            host: "no-such-host.invalid".into(),
            port: 5000,
            scheme: "http".into(),
        };
        let cluster = Cluster::new(&gone, &[], Arc::new(Metrics::new()));
        cluster.refresh().await;
        assert_eq!(cluster.peers().len(), 1);
    }

    #[test]
    fn the_peer_client_has_no_credentials_and_the_owner_timeout() {
        let c = Cluster::new(&config(0, 2), &[], Arc::new(Metrics::new()));
        let pc = c.peer_config(&peers(2)[1], &upstream_config());
        assert!(pc.credentials.is_none() && !pc.insecure && !pc.default);
        assert_eq!(pc.url.as_str(), "http://wharf-1:5000/");
        assert_eq!(pc.connect_timeout, Duration::from_secs(2));
        assert_eq!(pc.timeout, Duration::from_secs(60));
        assert_eq!(pc.name, "docker.io");
        assert_eq!(pc.forward_ns(), Some("docker.io"));
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }
}
