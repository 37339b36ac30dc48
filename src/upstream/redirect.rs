//! Where an upstream's redirects may lead: the policy, the address classes it refuses, and the DNS
//! resolver that applies it to the addresses a name resolves to.
//!
//! An upstream's `Location` is chosen by whatever answers in its name, so following it blindly
//! turns wharf into a proxy for the network it sits on: a `302` to `http://169.254.169.254/...` or
//! to an admin port on `127.0.0.1` would be fetched and served to the client as a manifest or blob.
//! [`Policy::check`] decides each hop before anything is sent:
//! - the scheme must be `https`, or `http` when the upstream itself is plain `http` with
//!   `insecure = true` (an `https` upstream never redirects down to `http`);
//! - a hop to the upstream's own origin (scheme, host *and port*) is always allowed, wherever that
//!   is, because wharf already talks to it; another port on the same host is a different service
//!   (a registry on `127.0.0.1:5000` may redirect to `127.0.0.1:5000`, not to `127.0.0.1:8500`);
//! - a host listed in the upstream's `redirect_hosts` (exact name or address, any port) is allowed;
//! - an IP-literal host must not be [`internal`] (loopback, private, link-local, ...);
//! - any other name is [`Hop::Checked`]: it is fetched through a client whose [`CheckedResolver`]
//!   drops every internal address the name resolves to, so the check holds on the resolved
//!   addresses (no DNS rebinding between check and connect: the connection goes to the addresses
//!   the check saw).
//!
//! Behind an HTTP proxy (`HTTPS_PROXY`, ...) the proxy resolves the target's name, not wharf:
//! the proxy's own name is exempt from the resolver's filter so it can be reached, and wharf
//! checks the target's name itself first with [`check_name`] (refused if any address it resolves
//! to here is internal; a name that does not resolve here is left to the proxy, whose egress rules
//! then have the last word). IP literals are checked as everywhere.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

/// What one redirect hop is allowed to be, once [`Policy::check`] passed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// The upstream's own origin, or a host the operator listed in `redirect_hosts`: sent through
    /// the upstream's ordinary client, wherever it resolves.
    Trusted,
    /// Anywhere else: sent through the client whose resolver refuses internal addresses.
    Checked,
}

/// Why a redirect was not followed. The `Display` is safe to show a client: it names the target's
/// host, never its path or query (which may carry a signed URL's credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The target's scheme is not one wharf may follow.
    #[error("redirect to a {scheme} URL refused: only https is followed (or http from an insecure plain-http upstream)")]
    Scheme {
        /// The target's scheme.
        scheme: String,
    },
    /// An https upstream redirected to plain http.
    #[error("redirect from https down to plain http ({host}) refused")]
    Downgrade {
        /// The target's host.
        host: String,
    },
    /// The target has no host.
    #[error("redirect to a URL without a host refused")]
    NoHost,
    /// The target is (or resolves only to) an address wharf does not send an upstream's traffic to.
    #[error("redirect to {host} refused: it is a {class} address (list the host in redirect_hosts if the registry really stores content there)")]
    Internal {
        /// The target's host as given.
        host: String,
        /// The kind of address ([`internal`]).
        class: &'static str,
    },
}

/// The redirect policy of one upstream.
#[derive(Debug, Clone)]
pub struct Policy {
    base: Url,
    insecure: bool,
    redirect_hosts: Vec<String>,
}

/// A reqwest DNS resolver that drops internal addresses (see [`internal`]) from every answer, and
/// fails with [`Refused::Internal`] when nothing is left. Names in `exempt` (HTTP proxies) resolve
/// unfiltered.
#[derive(Debug, Clone, Default)]
pub struct CheckedResolver {
    exempt: Arc<Vec<String>>,
}

// === impl Policy ===

impl Policy {
    /// The policy for an upstream at `base`; `redirect_hosts` as configured (lower case, bare
    /// names or addresses).
    pub fn new(base: Url, insecure: bool, redirect_hosts: Vec<String>) -> Self {
        Self {
            base,
            insecure,
            redirect_hosts,
        }
    }

    /// Decides whether the redirect to `target` may be followed, and through which client.
    ///
    /// # Errors
    /// [`Refused`] naming the rule the target breaks.
    pub fn check(&self, target: &Url) -> Result<Hop, Refused> {
        let host_text = || target.host_str().unwrap_or_default().to_owned();
        match target.scheme() {
            "https" => {}
            "http" if self.base.scheme() == "http" && self.insecure => {}
            "http" if self.base.scheme() == "https" => {
                return Err(Refused::Downgrade { host: host_text() })
            }
            scheme => {
                return Err(Refused::Scheme {
                    scheme: scheme.to_owned(),
                })
            }
        }
        let host = target.host().ok_or(Refused::NoHost)?;
        if target.origin() == self.base.origin() {
            return Ok(Hop::Trusted);
        }
        if self.listed(&host) {
            return Ok(Hop::Trusted);
        }
        let ip = match host {
            Host::Domain(_) => return Ok(Hop::Checked),
            Host::Ipv4(ip) => IpAddr::V4(ip),
            Host::Ipv6(ip) => IpAddr::V6(ip),
        };
        match internal(ip) {
            Some(class) => Err(Refused::Internal {
                host: host_text(),
                class,
            }),
            None => Ok(Hop::Checked),
        }
    }

    /// Whether `redirect_hosts` names this host (a name case-insensitively, without a trailing
    /// dot; an address by value, so `::1` and `0:0::1` are the same).
    fn listed(&self, host: &Host<&str>) -> bool {
        self.redirect_hosts.iter().any(|listed| match host {
            Host::Domain(name) => listed
                .trim_end_matches('.')
                .eq_ignore_ascii_case(name.trim_end_matches('.')),
            Host::Ipv4(ip) => listed.parse::<IpAddr>() == Ok(IpAddr::V4(*ip)),
            Host::Ipv6(ip) => listed.parse::<IpAddr>() == Ok(IpAddr::V6(*ip)),
        })
    }
}

// === impl CheckedResolver ===

impl CheckedResolver {
    /// A resolver that lets the hosts of the HTTP proxies configured in the environment resolve
    /// unfiltered (the proxy, not wharf, then resolves the targets).
    pub fn from_env() -> Self {
        Self::with_exempt(proxy_hosts(|key| std::env::var(key).ok()))
    }

    /// A resolver with these (lower-case) names exempt from the filter.
    pub fn with_exempt(exempt: Vec<String>) -> Self {
        Self {
            exempt: Arc::new(exempt),
        }
    }

    /// Whether requests may go through an HTTP proxy (one is configured in the environment), so
    /// that target names are resolved by the proxy rather than by this resolver.
    pub fn proxied(&self) -> bool {
        !self.exempt.is_empty()
    }
}

/// Resolves `host` here and refuses it when any address it resolves to is internal: the check for
/// a request that an HTTP proxy will resolve itself. A name that does not resolve here passes (a
/// proxied site often cannot resolve outside names locally); the proxy then decides.
///
/// # Errors
/// [`Refused::Internal`] naming the host and the class of the address.
pub async fn check_name(host: &str) -> Result<(), Refused> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let Ok(addrs) = tokio::net::lookup_host((host.as_str(), 0)).await else {
        return Ok(());
    };
    let (_, refused) = filter(addrs.collect());
    match refused {
        Some(class) => Err(Refused::Internal { host, class }),
        None => Ok(()),
    }
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let exempt = self.exempt.contains(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if exempt {
                return Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs);
            }
            let (public, refused) = filter(addrs);
            match (public.is_empty(), refused) {
                (false, _) => Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs),
                (true, Some(class)) => {
                    Err(Box::new(Refused::Internal { host, class })
                        as Box<dyn StdError + Send + Sync>)
                }
                (true, None) => Err(format!("{host} has no addresses").into()),
            }
        })
    }
}

/// Splits resolved addresses into the public ones and (the class of one of) the refused ones.
fn filter(addrs: Vec<SocketAddr>) -> (Vec<SocketAddr>, Option<&'static str>) {
    let mut refused = None;
    let public = addrs
        .into_iter()
        .filter(|addr| match internal(addr.ip()) {
            Some(class) => {
                refused = Some(class);
                false
            }
            None => true,
        })
        .collect();
    (public, refused)
}

/// The [`Refused`] a transport error carries when the [`CheckedResolver`] refused its name.
pub fn refused_in(error: &(dyn StdError + 'static)) -> Option<Refused> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        cause = e.source();
    }
    None
}

/// The hosts of the HTTP proxies set in the environment (as reqwest reads it: `ALL_PROXY`,
/// `HTTPS_PROXY`, `HTTP_PROXY`, upper or lower case), lower case.
fn proxy_hosts(var: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let keys = [
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ];
    let mut hosts = Vec::new();
    for value in keys.iter().filter_map(|key| var(key)) {
        let value = value.trim();
        let url = if value.contains("://") {
            Url::parse(value)
        } else {
            Url::parse(&format!("http://{value}"))
        };
        if let Some(host) = url.ok().as_ref().and_then(Url::host_str) {
            let host = host
                .trim_matches(['[', ']'])
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    }
    hosts
}

// === address classes ===

/// The class of an address an upstream's redirect must not reach, or `None` for a public one:
/// loopback, unspecified ("this network", 0/8 and `::`), private (10/8, 172.16/12, 192.168/16),
/// shared CGNAT space (100.64/10), link-local (169.254/16, `fe80::/10`, which holds cloud
/// metadata services), unique-local (`fc00::/7`), multicast and broadcast, and the reserved
/// 240/4. IPv6 forms that carry an IPv4 address (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are classified by the IPv4 address they carry.
pub fn internal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_loopback() {
        "loopback"
    } else if a == 0 {
        "unspecified"
    } else if ip.is_private() {
        "private"
    } else if a == 100 && (64..128).contains(&b) {
        "shared (CGNAT)"
    } else if ip.is_link_local() {
        "link-local"
    } else if ip.is_broadcast() {
        "broadcast"
    } else if ip.is_multicast() {
        "multicast"
    } else if a >= 240 {
        "reserved"
    } else {
        return None;
    })
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if let Some(v4) = embedded_v4(ip) {
        return internal_v4(v4);
    }
    Some(if segments[0] & 0xffc0 == 0xfe80 {
        "link-local"
    } else if segments[0] & 0xfe00 == 0xfc00 {
        "unique-local"
    } else if segments[0] & 0xffc0 == 0xfec0 {
        "site-local"
    } else if ip.is_multicast() {
        "multicast"
    } else {
        return None;
    })
}

/// The IPv4 address an IPv6 address carries, in the forms a connection would reach it by.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated; `::` and `::1` are
        // handled before this is asked).
        [0, 0, 0, 0, 0, 0xffff | 0, _, _] => Some(low()),
        // 64:ff9b::a.b.c.d (NAT64, RFC 6052).
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low()),
        // 2002:aabb:ccdd::/48 (6to4, RFC 3056).
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes() {
        let cases: &[(&str, Option<&str>)] = &[
            // IPv4.
            ("127.0.0.1", Some("loopback")),
            ("127.0.0.2", Some("loopback")),
            ("127.255.255.254", Some("loopback")),
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("unspecified")),
            ("10.0.0.5", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.1", None),
            ("172.15.255.255", None),
            ("192.168.1.1", Some("private")),
            ("100.64.0.1", Some("shared (CGNAT)")),
            ("100.127.255.255", Some("shared (CGNAT)")),
            ("100.128.0.1", None),
            ("100.63.255.255", None),
            ("169.254.169.254", Some("link-local")),
            ("255.255.255.255", Some("broadcast")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("240.0.0.1", Some("reserved")),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.216.34", None),
            ("192.169.0.1", None),
            // IPv6.
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("fe80::1", Some("link-local")),
            ("febf:ffff::1", Some("link-local")),
            ("fc00::1", Some("unique-local")),
            ("fd12:3456::1", Some("unique-local")),
            ("fec0::1", Some("site-local")),
            ("ff02::1", Some("multicast")),
            ("2001:4860:4860::8888", None),
            ("2606:4700::1111", None),
            // IPv4 carried in IPv6.
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:10.1.2.3", Some("private")),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some("loopback")),
            ("::10.0.0.1", Some("private")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("64:ff9b::808:808", None),
            ("2002:7f00:1::1", Some("loopback")),
            ("2002:c0a8:101::1", Some("private")),
            ("2002:808:808::1", None),
        ];
        for (text, want) in cases {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(internal(ip), *want, "{text}");
        }
    }

    #[derive(Debug, PartialEq)]
    enum Want {
        Trusted,
        Checked,
        Downgrade,
        Scheme,
        Internal,
    }

    #[test]
    fn redirect_policy() {
        use Want::{Checked, Downgrade, Internal, Scheme, Trusted};
        let listed = vec![
            "storage.internal".to_owned(),
            "10.0.0.5".to_owned(),
            "::1".to_owned(),
            "localhost".to_owned(),
        ];
        // (upstream, insecure, target, want)
        let cases: &[(&str, bool, &str, Want)] = &[
            // Schemes: https anywhere public; http only from an insecure plain-http upstream.
            (
                "https://reg.example",
                false,
                "https://cdn.example/b",
                Checked,
            ),
            (
                "https://reg.example",
                false,
                "http://cdn.example/b",
                Downgrade,
            ),
            (
                "https://reg.example",
                true,
                "http://cdn.example/b",
                Downgrade,
            ),
            (
                "https://reg.example",
                false,
                "http://reg.example/b",
                Downgrade,
            ),
            ("http://reg.example", true, "http://cdn.example/b", Checked),
            ("http://reg.example", false, "http://cdn.example/b", Scheme),
            ("http://reg.example", true, "https://cdn.example/b", Checked),
            ("https://reg.example", false, "ftp://cdn.example/b", Scheme),
            ("https://reg.example", false, "file:///etc/passwd", Scheme),
            // The upstream's own origin, even on loopback or a private network.
            (
                "http://127.0.0.1:5000",
                true,
                "http://127.0.0.1:5000/x",
                Trusted,
            ),
            (
                "http://10.0.0.4:5000",
                true,
                "http://10.0.0.4:5000/x",
                Trusted,
            ),
            (
                "https://reg.example",
                false,
                "https://REG.example:443/x",
                Trusted,
            ),
            ("http://[::1]:5000", true, "http://[::1]:5000/x", Trusted),
            // ... but not another port or another loopback address.
            (
                "http://127.0.0.1:5000",
                true,
                "http://127.0.0.1:8500/x",
                Internal,
            ),
            (
                "http://127.0.0.1:5000",
                true,
                "http://127.0.0.2:5000/x",
                Internal,
            ),
            (
                "http://127.0.0.1:5000",
                true,
                "https://127.0.0.1:5000/x",
                Internal,
            ),
            ("http://[::1]:5000", true, "http://[::2]:5000/x", Internal),
            // Internal addresses as IP literals, in any spelling.
            (
                "https://reg.example",
                false,
                "https://169.254.169.254/latest",
                Internal,
            ),
            (
                "https://reg.example",
                false,
                "https://[::ffff:169.254.169.254]/",
                Internal,
            ),
            ("https://reg.example", false, "https://[fe80::1]/", Internal),
            ("https://reg.example", false, "https://[fd00::1]/", Internal),
            ("https://reg.example", false, "https://0.0.0.0/", Internal),
            (
                "https://reg.example",
                false,
                "https://2130706433/",
                Internal,
            ),
            ("https://reg.example", false, "https://0x7f.1/", Internal),
            (
                "https://reg.example",
                false,
                "https://100.64.1.1/",
                Internal,
            ),
            (
                "https://reg.example",
                false,
                "https://192.168.0.10/",
                Internal,
            ),
            ("https://reg.example", false, "https://8.8.8.8/", Checked),
            // Names are checked on their resolved addresses, by the resolver.
            (
                "https://reg.example",
                false,
                "https://metadata.example/",
                Checked,
            ),
            (
                "https://reg.example",
                false,
                "https://reg.example:8443/x",
                Checked,
            ),
            (
                "http://reg.lab:5000",
                true,
                "http://reg.lab:5001/x",
                Checked,
            ),
            // Listed hosts, any port, by name or address.
            (
                "https://reg.example",
                false,
                "https://storage.internal/b",
                Trusted,
            ),
            (
                "https://reg.example",
                false,
                "https://Storage.Internal.:9000/b",
                Trusted,
            ),
            (
                "https://reg.example",
                false,
                "https://10.0.0.5:9000/b",
                Trusted,
            ),
            ("https://reg.example", false, "https://10.0.0.6/b", Internal),
            ("https://reg.example", false, "https://[0:0::1]/b", Trusted),
            (
                "http://127.0.0.1:5000",
                true,
                "http://localhost:9/b",
                Trusted,
            ),
            (
                "https://reg.example",
                false,
                "https://x.storage.internal/b",
                Checked,
            ),
            // A listed host still needs an allowed scheme.
            (
                "https://reg.example",
                false,
                "http://storage.internal/b",
                Downgrade,
            ),
        ];
        for (base, insecure, target, want) in cases {
            let policy = Policy::new(Url::parse(base).unwrap(), *insecure, listed.clone());
            let got = match policy.check(&Url::parse(target).unwrap()) {
                Ok(Hop::Trusted) => Trusted,
                Ok(Hop::Checked) => Checked,
                Err(Refused::Downgrade { .. }) => Downgrade,
                Err(Refused::Scheme { .. }) => Scheme,
                Err(Refused::Internal { .. }) => Internal,
                Err(Refused::NoHost) => panic!("{target}: no host"),
            };
            assert_eq!(&got, want, "upstream {base}, target {target}");
        }
    }

    #[test]
    fn refusals_name_the_host_not_the_path() {
        let policy = Policy::new(Url::parse("https://reg.example").unwrap(), false, vec![]);
        let err = policy
            .check(
                &Url::parse("https://169.254.169.254/latest/meta-data?X-Amz-Signature=s3cret")
                    .unwrap(),
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("169.254.169.254") && text.contains("link-local"),
            "{text}"
        );
        assert!(
            !text.contains("s3cret") && !text.contains("meta-data"),
            "{text}"
        );
        let err = policy
            .check(&Url::parse("http://cdn.example/b?token=s3cret").unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "redirect from https down to plain http (cdn.example) refused"
        );
    }

    #[test]
    fn proxies_from_the_environment() {
        let env = |key: &str| match key {
            "HTTPS_PROXY" => Some("http://Proxy.Corp:3128".to_owned()),
            "http_proxy" => Some("proxy.corp:3128".to_owned()),
            "ALL_PROXY" => Some("socks5://[fd00::3]:1080".to_owned()),
            _ => None,
        };
        assert_eq!(proxy_hosts(env), vec!["fd00::3", "proxy.corp"]);
        assert!(proxy_hosts(|_| None).is_empty());
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_internal_addresses() {
        use reqwest::dns::Resolve as _;
        let resolver = CheckedResolver::default();
        let err = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost resolved through the checked resolver"),
            Err(e) => e,
        };
        assert!(
            matches!(refused_in(err.as_ref()), Some(Refused::Internal { host, .. }) if host == "localhost"),
            "{err}"
        );
        let exempt = CheckedResolver::with_exempt(vec!["localhost".into()]);
        let addrs: Vec<_> = exempt
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }

    #[tokio::test]
    async fn names_for_a_proxy_are_checked_here_first() {
        assert!(matches!(
            check_name("localhost").await,
            Err(Refused::Internal { host, class: "loopback" }) if host == "localhost"
        ));
        assert!(matches!(
            check_name("LocalHost.").await,
            Err(Refused::Internal { .. })
        ));
        assert_eq!(check_name("93.184.216.34").await, Ok(()));
        assert!(!CheckedResolver::default().proxied());
        assert!(CheckedResolver::with_exempt(vec!["proxy.corp".into()]).proxied());
    }

    #[test]
    fn filtering_keeps_the_public_addresses() {
        let addrs = vec![
            "127.0.0.1:0".parse().unwrap(),
            "93.184.216.34:0".parse().unwrap(),
            "[fe80::1]:0".parse().unwrap(),
        ];
        let (public, refused) = filter(addrs);
        assert_eq!(
            public,
            vec!["93.184.216.34:0".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(refused, Some("link-local"));
    }
}
