//! `[cluster]`: the other wharf replicas this one shares its upstream fetches with. Each blob
//! digest has an owner among the peers (see `crate::cluster`); a replica that misses a blob it
//! does not own asks the owner for it, authenticated with the shared secret read here. The secret
//! is kept in a [`Secret`]: no message and no `Debug` output ever shows it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::error::KeyError;
use super::upstream::ca_bundle;
use super::{duration, err, secret_file, Sources};
use crate::secret::Secret;

/// The shortest shared secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// The validated `[cluster]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Where the peers are.
    pub peers: PeerSource,
    /// This replica's own address as the peers know it (`self`): an origin (`scheme://host:port`).
    pub own: Url,
    /// The shared secret that signs and checks peer requests (the contents of `secret_file`, at
    /// least [`MIN_SECRET_LEN`] bytes, one trailing line ending dropped).
    pub secret: Secret,
    /// How long the owner may take to send a blob's response headers before this replica goes to
    /// the upstream itself (`owner_timeout`, default `2s`).
    pub owner_timeout: Duration,
    /// Extra CA certificates (PEM, the contents of `ca_file`) trusted for `https` peers.
    pub ca_pem: Option<Vec<u8>>,
}

/// Where the list of peers comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSource {
    /// A fixed list (`peers`), each an origin; `self` is one of them.
    Static(Vec<Url>),
    /// A DNS name whose addresses are the peers (`peers_dns`), resolved again every 30 s; each
    /// address `a` becomes the peer `<scheme>://a:<port>`.
    Dns {
        /// The name to resolve.
        host: String,
        /// The peers' port.
        port: u16,
        /// `http` or `https` (`peer_scheme`, default `http`).
        scheme: String,
    },
}

/// `[cluster]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    peers: Option<Vec<String>>,
    peers_dns: Option<String>,
    peer_scheme: Option<String>,
    #[serde(rename = "self")]
    own: Option<String>,
    secret_file: Option<PathBuf>,
    #[serde(default = "default_owner_timeout")]
    owner_timeout: String,
    ca_file: Option<PathBuf>,
}

fn default_owner_timeout() -> String {
    "2s".into()
}

// === impl RawCluster ===

impl RawCluster {
    /// Checks the section, reading the secret and the CA file through `sources`.
    ///
    /// # Errors
    /// The first key refused.
    pub(super) fn validate(self, sources: &dyn Sources) -> Result<ClusterConfig, KeyError> {
        let own_text = self.own.ok_or_else(|| {
            err(
                "cluster.self",
                "is missing; set this replica's address as the peers reach it, e.g. self = \"http://wharf-0:5000\"".into(),
            )
        })?;
        let own = peer_url(&own_text).map_err(|p| err("cluster.self", p))?;
        let peers = match (self.peers, self.peers_dns) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "cluster.peers_dns",
                    "both peers and peers_dns are set; keep one".into(),
                ))
            }
            (None, None) => {
                return Err(err(
                    "cluster.peers",
                    "is missing; list the replicas, e.g. peers = [\"http://wharf-0:5000\", \"http://wharf-1:5000\"], or set peers_dns = \"wharf-headless.ns.svc:5000\"".into(),
                ))
            }
            (Some(list), None) => {
                if self.peer_scheme.is_some() {
                    return Err(err(
                        "cluster.peer_scheme",
                        "only applies to peers_dns; write the scheme in each of peers instead"
                            .into(),
                    ));
                }
                static_peers(&list, &own)?
            }
            (None, Some(dns)) => dns_peers(&dns, self.peer_scheme.as_deref())?,
        };
        let secret = secret(self.secret_file, sources)?;
        let owner_timeout = duration("cluster.owner_timeout", &self.owner_timeout)?;
        if owner_timeout.is_zero() {
            return Err(err(
                "cluster.owner_timeout",
                "must be more than zero; use e.g. owner_timeout = \"2s\"".into(),
            ));
        }
        let ca_pem = match &self.ca_file {
            Some(path) => Some(ca_bundle(path, sources).map_err(|p| err("cluster.ca_file", p))?),
            None => None,
        };
        Ok(ClusterConfig {
            peers,
            own,
            secret,
            owner_timeout,
            ca_pem,
        })
    }
}

/// A peer's address: an http(s) origin, without credentials, path, query or fragment.
fn peer_url(text: &str) -> Result<Url, String> {
    let example = "use e.g. \"http://wharf-0:5000\"";
    let shown = if text.contains('@') {
        "the URL".to_owned()
    } else {
        format!("{text:?}")
    };
    let url = Url::parse(text).map_err(|e| format!("{shown} is not a URL ({e}); {example}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{shown} is not an http(s) URL; {example}"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "must not contain credentials (peers authenticate with secret_file); {example}"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{shown} has no host; {example}"));
    }
    if url.query().is_some() || url.fragment().is_some() || !matches!(url.path(), "" | "/") {
        return Err(format!(
            "{shown} must be a replica's root, without path, query or fragment; {example}"
        ));
    }
    Ok(url)
}

/// `peers`: addresses, no duplicates, `self` among them.
fn static_peers(list: &[String], own: &Url) -> Result<PeerSource, KeyError> {
    let mut peers: Vec<Url> = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        let key = format!("cluster.peers[{i}]");
        let url = peer_url(text).map_err(|p| err(&key, p))?;
        if peers.iter().any(|p| p.origin() == url.origin()) {
            return Err(err(
                &key,
                format!("{text:?} is listed twice; list each replica once"),
            ));
        }
        peers.push(url);
    }
    if !peers.iter().any(|p| p.origin() == own.origin()) {
        return Err(err(
            "cluster.self",
            format!(
                "{} is not one of peers; set self to this replica's entry in peers, written the same way",
                own.origin().ascii_serialization()
            ),
        ));
    }
    Ok(PeerSource::Static(peers))
}

/// `peers_dns` (`host:port`) and `peer_scheme`.
fn dns_peers(dns: &str, scheme: Option<&str>) -> Result<PeerSource, KeyError> {
    let fix = "write host:port, e.g. peers_dns = \"wharf-headless.ns.svc:5000\"";
    let (host, port) = dns
        .rsplit_once(':')
        .ok_or_else(|| err("cluster.peers_dns", format!("{dns:?} has no port; {fix}")))?;
    let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
        err(
            "cluster.peers_dns",
            format!("{dns:?} has no valid port; {fix}"),
        )
    })?;
    if host.is_empty() || host.contains(['/', ' ', '@', ':']) {
        return Err(err(
            "cluster.peers_dns",
            format!("{dns:?} is not a host name; {fix}"),
        ));
    }
    let scheme = scheme.unwrap_or("http");
    if !matches!(scheme, "http" | "https") {
        return Err(err(
            "cluster.peer_scheme",
            format!("{scheme:?} is not a scheme wharf speaks; use \"http\" or \"https\""),
        ));
    }
    Ok(PeerSource::Dns {
        host: host.to_ascii_lowercase(),
        port,
        scheme: scheme.to_owned(),
    })
}

/// `secret_file`: required, at least [`MIN_SECRET_LEN`] bytes. Messages name the file, never the
/// contents.
fn secret(path: Option<PathBuf>, sources: &dyn Sources) -> Result<Secret, KeyError> {
    let path = path.ok_or_else(|| {
        err(
            "cluster.secret_file",
            format!("is missing; create a file of at least {MIN_SECRET_LEN} random bytes shared by every replica (e.g. openssl rand -hex 32 > /etc/wharf/cluster.secret) and set secret_file to it"),
        )
    })?;
    let secret = secret_file::from_file(sources.read_secret(&path), &path, "secret")
        .map_err(|reason| err("cluster.secret_file", reason))?;
    let text = secret.expose();
    if text.len() < MIN_SECRET_LEN {
        return Err(err(
            "cluster.secret_file",
            format!(
                "{} holds {} bytes, fewer than {MIN_SECRET_LEN}; put at least {MIN_SECRET_LEN} random bytes in it (e.g. openssl rand -hex 32)",
                path.display(),
                text.len()
            ),
        ));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{load, UP};
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn cluster(body: &str) -> String {
        format!("{UP}[cluster]\nsecret_file = \"/cluster.secret\"\n{body}")
    }

    #[test]
    fn static_peers_are_read() {
        let c = load(&cluster(
            "peers = [\"http://wharf-0:5000\", \"https://wharf-1:5443\"]\nself = \"http://wharf-0:5000/\"\nowner_timeout = \"500ms\"\nca_file = \"/ca.pem\"\n",
        ))
        .unwrap();
        let c = c.cluster.unwrap();
        let PeerSource::Static(peers) = &c.peers else {
            panic!("{:?}", c.peers)
        };
        assert_eq!(peers.len(), 2);
        assert_eq!(c.own.as_str(), "http://wharf-0:5000/");
        assert_eq!(c.secret.expose(), KEY);
        assert_eq!(c.owner_timeout, Duration::from_millis(500));
        assert!(c.ca_pem.is_some());
        assert!(!format!("{c:?}").contains(KEY));
    }

    #[test]
    fn dns_peers_and_defaults() {
        let c = load(&cluster(
            "peers_dns = \"wharf-headless.ns.svc:5000\"\nself = \"http://10.0.0.5:5000\"\n",
        ))
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(
            c.peers,
            PeerSource::Dns {
                host: "wharf-headless.ns.svc".into(),
                port: 5000,
                scheme: "http".into()
            }
        );
        assert_eq!(c.owner_timeout, Duration::from_secs(2));
        assert!(load(UP).unwrap().cluster.is_none());
    }

    #[test]
    fn commands_that_contact_nothing_skip_the_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wharf.toml");
        let text = format!(
            "{UP}[cluster]\npeers = [\"http://a:5000\"]\nself = \"http://a:5000\"\nsecret_file = \"/nonexistent/cluster.secret\"\n"
        );
        std::fs::write(&path, text).unwrap();
        let e = super::super::Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("cluster.secret_file"), "{e}");
        assert!(super::super::Config::load_offline(&path)
            .unwrap()
            .cluster
            .is_none());
    }

    #[test]
    fn refusals() {
        let peers = "peers = [\"http://a:5000\", \"http://b:5000\"]\n";
        let cases: Vec<(String, &str)> = vec![
            (cluster(peers), "cluster.self: is missing"),
            (
                cluster("self = \"http://a:5000\"\n"),
                "cluster.peers: is missing",
            ),
            (
                cluster(&format!("{peers}self = \"http://c:5000\"\n")),
                "cluster.self: http://c:5000 is not one of peers",
            ),
            (
                cluster(
                    "peers = [\"http://a:5000\", \"http://a:5000/\"]\nself = \"http://a:5000\"\n",
                ),
                "cluster.peers[1]",
            ),
            (
                cluster("peers = [\"ftp://a\"]\nself = \"http://a:5000\"\n"),
                "cluster.peers[0]",
            ),
            (
                cluster(&format!("{peers}self = \"http://a:5000/x\"\n")),
                "cluster.self",
            ),
            (
                cluster(&format!(
                    "{peers}peers_dns = \"x:1\"\nself = \"http://a:5000\"\n"
                )),
                "cluster.peers_dns: both",
            ),
            (
                cluster("peers_dns = \"wharf\"\nself = \"http://a:5000\"\n"),
                "cluster.peers_dns",
            ),
            (
                cluster(
                    "peers_dns = \"w:5000\"\npeer_scheme = \"ftp\"\nself = \"http://a:5000\"\n",
                ),
                "cluster.peer_scheme",
            ),
            (
                cluster(&format!(
                    "{peers}self = \"http://a:5000\"\nowner_timeout = \"0s\"\n"
                )),
                "cluster.owner_timeout",
            ),
            (
                format!("{UP}[cluster]\n{peers}self = \"http://a:5000\"\n"),
                "cluster.secret_file: is missing",
            ),
            (
                format!("{UP}[cluster]\n{peers}self = \"http://a:5000\"\nsecret_file = \"/pw\"\n"),
                "cluster.secret_file: /pw holds 11 bytes",
            ),
            (
                format!(
                    "{UP}[cluster]\n{peers}self = \"http://a:5000\"\nsecret_file = \"/nope\"\n"
                ),
                "cluster.secret_file: cannot read /nope",
            ),
        ];
        for (text, want) in &cases {
            let got = load(text).map(|_| ()).unwrap_err().to_string();
            assert!(got.starts_with("wharf.toml: "), "{text:?} -> {got}");
            assert!(got.contains(want), "{text:?}: want {want:?} in {got:?}");
            assert!(!got.contains('\n'), "{got:?} is more than one line");
            assert!(got.contains("; "), "{got:?} has no fix");
            assert!(
                !got.contains(KEY) && !got.contains("file-secret"),
                "{got:?} leaks the secret"
            );
        }
    }
}
