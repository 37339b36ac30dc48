//! The pure parts of upstream authentication: `WWW-Authenticate` challenges, token request URLs,
//! token responses, `Authorization` values, and the policy that decides where credentials may go.
//!
//! The flow is the Docker token spec's (distribution `docs/spec/auth/token.md`,
//! <https://github.com/distribution/distribution/blob/main/docs/spec/auth/token.md>): a `401` with
//! `Bearer realm=...,service=...,scope=...` sends the client to the realm for a token, with Basic
//! credentials when it has them. The realm is chosen by the upstream's answer, so before anything is
//! sent there [`check_realm`] makes sure it is the upstream's own origin (scheme, host and port), on
//! the upstream's registrable domain, or listed by the operator in `token_realms`, and that
//! credentials travel over plain HTTP only to a plain-HTTP upstream's own host and port. This module does no I/O (the client in `client.rs`
//! does), so every rule here is unit-tested directly, and no error it builds carries a password or a
//! token.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use http::HeaderValue;
use serde::Deserialize;
use url::{Host, Url};

use crate::secret::{Credentials, Secret};

/// The shortest lifetime a token is given: the token spec says a token is valid for at least 60
/// seconds, and an `expires_in` that is absent or smaller means 60.
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// The longest lifetime a token is given, whatever the realm says. A realm that answers
/// `"expires_in": 1e300` would otherwise make `Instant + expires_in` overflow (and panic) in the
/// token cache; a day is far beyond any real registry's token lifetime (Docker Hub: 300 s).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// One usable authentication challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer realm=...`: get a token from the realm, then send `Authorization: Bearer <token>`.
    Bearer(BearerChallenge),
    /// `Basic`: send the credentials directly.
    Basic {
        /// The realm's name, informational only.
        realm: Option<String>,
    },
}

/// A Bearer challenge's parameters. Parameters other than these (`error`, `error_description`, ...)
/// are dropped by [`parse_challenges`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerChallenge {
    /// The token endpoint, as sent (not yet checked: see [`token_url`] and [`check_realm`]).
    pub realm: String,
    /// The `service` to ask the token for.
    pub service: Option<String>,
    /// The `scope` the upstream asked for: one or more space-separated scopes.
    pub scope: Option<String>,
}

/// A token from a realm. Its `Debug` shows the lifetime but never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The token itself.
    pub value: Secret,
    /// How long it is valid, between [`MIN_TOKEN_LIFETIME`] and [`MAX_TOKEN_LIFETIME`].
    pub expires_in: Duration,
}

/// An authentication failure. No variant carries a credential or a token; realm URLs are shown
/// without any user name or password they might hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The challenge's realm is not an http(s) URL wharf may use.
    #[error("token realm {realm:?} cannot be used: {reason}")]
    BadRealm {
        /// The realm, without user name or password.
        realm: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The realm is neither the upstream's host, nor on its registrable domain, nor listed.
    #[error(
        "token realm host {realm_host} is not on the domain of upstream {upstream} ({upstream_host}), \
         so wharf will not contact it; if it is the registry's real token service, add \
         \"{realm_host}\" to token_realms for upstream {upstream}"
    )]
    ForeignRealm {
        /// The upstream's configured name.
        upstream: String,
        /// The upstream's host.
        upstream_host: String,
        /// The realm's host.
        realm_host: String,
    },
    /// The realm is on the upstream's host but another port or scheme: another service, which the
    /// upstream's answer does not get to choose (the host has no registrable domain to vouch for
    /// it, and it is not listed).
    #[error(
        "token realm {realm_origin} is another service on the host of upstream {upstream} \
         ({upstream_origin}), so wharf will not contact it; if it is the registry's real token \
         service, add \"{realm_host}\" to token_realms for upstream {upstream}"
    )]
    OtherService {
        /// The upstream's configured name.
        upstream: String,
        /// The upstream's scheme, host and port.
        upstream_origin: String,
        /// The realm's scheme, host and port.
        realm_origin: String,
        /// The realm's host.
        realm_host: String,
    },
    /// Credentials would travel over plain HTTP somewhere other than a plain-HTTP upstream's own
    /// host and port.
    #[error(
        "token realm host {realm_host} is plain http; wharf sends upstream {upstream}'s credentials \
         over plain http only to the upstream's own host and port ({upstream_host}) when the \
         upstream itself is plain http. The registry must advertise an https token realm"
    )]
    InsecureRealm {
        /// The upstream's configured name.
        upstream: String,
        /// The upstream's host.
        upstream_host: String,
        /// The realm's host.
        realm_host: String,
    },
    /// The realm refused the token request.
    #[error(
        "token realm {realm} refused the token request ({status}); check the credentials \
         configured for this upstream"
    )]
    TokenRefused {
        /// The realm's host.
        realm: String,
        /// The status it answered.
        status: u16,
    },
    /// The realm's answer was not a usable token response.
    #[error("token realm answered without a usable token: {reason}")]
    BadTokenResponse {
        /// What is wrong with it (never the body itself, which may hold a token).
        reason: &'static str,
    },
    /// The token has characters an `Authorization` header cannot carry.
    #[error("token realm returned a token that cannot be sent in an Authorization header")]
    TokenNotHeaderSafe,
}

// === challenges ===

/// Parses every challenge in one `WWW-Authenticate` value (RFC 9110 §11.6.1: `#challenge`, where a
/// challenge is `auth-scheme [ token68 / #auth-param ]`).
///
/// Scheme and parameter names are case-insensitive; values may be quoted strings (with `\`
/// escapes, and commas inside) or bare values, which run to the next comma or whitespace (laxer than
/// the RFC's `token`, because some registries send `realm=https://...` unquoted). Unknown schemes and
/// parameters are skipped, a repeated parameter keeps its first value, and malformed text is skipped
/// up to the next comma. A Bearer challenge without a non-empty realm cannot be answered and is left
/// out, as is a parameter whose quoted value is never closed.
///
/// This never fails: an empty result means the header holds nothing wharf can answer, which the
/// caller treats like an absent header. Call it once per header line when a response has several.
pub fn parse_challenges(header_value: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut current: Option<PendingChallenge<'_>> = None;
    let mut cursor = Cursor { rest: header_value };
    loop {
        cursor.skip_separators();
        if cursor.rest.is_empty() {
            break;
        }
        let name = cursor.take_while(is_tchar);
        if name.is_empty() {
            // Not a token (a stray quote, '=', ...): skip this list element.
            cursor.skip_element();
            continue;
        }
        cursor.skip_whitespace();
        if cursor.eat('=') {
            // `name = value`: a parameter of the current challenge.
            cursor.skip_whitespace();
            let value = if cursor.eat('"') {
                cursor.quoted_string()
            } else {
                Some(
                    cursor
                        .take_while(|c| !matches!(c, ',' | ' ' | '\t'))
                        .to_owned(),
                )
            };
            // A parameter before any scheme, or with an unterminated quoted string, is dropped.
            if let (Some(challenge), Some(value)) = (current.as_mut(), value) {
                challenge.params.push((name, value));
            }
            cursor.skip_whitespace();
            if !cursor.rest.is_empty() && !cursor.rest.starts_with(',') {
                cursor.skip_element(); // Text after the value: malformed, skip to the next comma.
            }
            continue;
        }
        // A token not followed by '=' starts a new challenge. (A token68 after an unknown scheme,
        // as in `Negotiate YWJj==`, reads as a parameter or a scheme of its own: skipped either way.)
        if let Some(done) = current.take() {
            out.extend(done.finish());
        }
        current = Some(PendingChallenge {
            scheme: name,
            params: Vec::new(),
        });
    }
    if let Some(done) = current {
        out.extend(done.finish());
    }
    out
}

/// A challenge being parsed: its scheme and parameters so far (names not yet lower-cased).
struct PendingChallenge<'a> {
    scheme: &'a str,
    params: Vec<(&'a str, String)>,
}

/// The unparsed rest of a header value.
struct Cursor<'a> {
    rest: &'a str,
}

/// `tchar` (RFC 9110 §5.6.2): the characters of a scheme or parameter name.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

// === impl PendingChallenge ===

impl PendingChallenge<'_> {
    /// The challenge, if it is one wharf can answer.
    fn finish(self) -> Option<Challenge> {
        let get = |key: &str| {
            self.params
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(key))
                .map(|(_, value)| value.clone())
        };
        if self.scheme.eq_ignore_ascii_case("bearer") {
            let realm = get("realm").filter(|realm| !realm.is_empty())?;
            Some(Challenge::Bearer(BearerChallenge {
                realm,
                service: get("service"),
                scope: get("scope"),
            }))
        } else if self.scheme.eq_ignore_ascii_case("basic") {
            Some(Challenge::Basic {
                realm: get("realm"),
            })
        } else {
            None
        }
    }
}

// === impl Cursor ===

impl<'a> Cursor<'a> {
    fn skip_whitespace(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    /// Skips whitespace and the commas of the list (empty elements are allowed: RFC 9110 §5.6.1).
    fn skip_separators(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t', ',']);
    }

    fn eat(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let end = self.rest.find(|c| !keep(c)).unwrap_or(self.rest.len());
        let (taken, rest) = self.rest.split_at(end);
        self.rest = rest;
        taken
    }

    /// Reads a quoted string whose opening quote was just eaten, resolving `\` escapes. `None` when
    /// it is never closed (everything is then consumed).
    fn quoted_string(&mut self) -> Option<String> {
        let mut value = String::new();
        let mut chars = self.rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[i + 1..];
                    return Some(value);
                }
                '\\' => match chars.next() {
                    Some((_, escaped)) => value.push(escaped),
                    None => break,
                },
                _ => value.push(c),
            }
        }
        self.rest = "";
        None
    }

    /// Skips to the next comma outside a quoted string (or to the end). Always consumes at least one
    /// character, which is what keeps [`parse_challenges`]'s loop finite.
    fn skip_element(&mut self) {
        let mut in_quotes = false;
        let mut escaped = false;
        for (i, c) in self.rest.char_indices() {
            if in_quotes {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => in_quotes = false,
                    _ => {}
                }
            } else if c == '"' {
                in_quotes = true;
            } else if c == ',' && i > 0 {
                self.rest = &self.rest[i..];
                return;
            }
        }
        self.rest = "";
    }
}

// === token requests ===

/// The pull scope for a repository: `repository:<name>:pull`.
pub fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

/// The URL to ask a realm for a token: the realm (keeping any query it already has, dropping any
/// fragment) with `service` added when the challenge names one, and one `scope` per space-separated
/// scope of the challenge, or of `default_scope` when the challenge names none (the token spec:
/// "this query parameter should be specified multiple times if there is more than one scope entry").
/// With neither, no `scope` is sent (a token for `/v2/` itself). Values are form-urlencoded.
///
/// # Errors
/// [`AuthError::BadRealm`] when the realm is not an absolute `http`/`https` URL, or carries a user
/// name or password (wharf sends its own credentials, never the upstream's choice of them).
pub fn token_url(challenge: &BearerChallenge, default_scope: &str) -> Result<Url, AuthError> {
    let mut url = Url::parse(challenge.realm.trim()).map_err(|_| AuthError::BadRealm {
        realm: challenge.realm.clone(),
        reason: "it is not an absolute URL",
    })?;
    check_realm_url(&url)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(AuthError::BadRealm {
            realm: without_userinfo(&url),
            reason: "it carries a user name or password",
        });
    }
    url.set_fragment(None);
    let scope = challenge
        .scope
        .as_deref()
        .filter(|scope| !scope.trim().is_empty())
        .unwrap_or(default_scope);
    let service = challenge.service.as_deref().filter(|s| !s.is_empty());
    let pairs: Vec<(&str, &str)> = service
        .map(|service| ("service", service))
        .into_iter()
        .chain(scope.split_ascii_whitespace().map(|scope| ("scope", scope)))
        .collect();
    if !pairs.is_empty() {
        // Only now: `query_pairs_mut` would leave a bare `?` on a realm without a query.
        url.query_pairs_mut().extend_pairs(pairs);
    }
    Ok(url)
}

// === realm policy ===

/// Decides whether a token realm may be contacted for `upstream`, and whether credentials may be
/// sent to it. `upstream_name` is the configured name, used in the errors.
///
/// Realms are compared with the upstream by scheme, host and port. The realm must be `http` or
/// `https`, and be one of: the upstream's own origin (same scheme, host and port); a host on the
/// same registrable domain as the upstream's, by the public suffix list (`auth.docker.io` for
/// `registry-1.docker.io`, but not `bar.co.uk` for `foo.co.uk`), any port; or a host listed in
/// `token_realms` (exact, case-insensitive, any port). IP addresses and single-label hosts such as
/// `localhost` have no registrable domain, so they must be the upstream's own origin or be listed:
/// another port of the upstream's `127.0.0.1` is another service, which a hostile upstream must
/// not be able to point wharf at.
///
/// When `sends_credentials` is true the realm must also be `https`, unless the upstream itself is
/// plain `http` and the realm is its own origin (same host and port): a lab registry serving its
/// own tokens, where the credentials cross the same plain-HTTP path anyway. (An `https` upstream
/// never has its credentials downgraded to plain HTTP, even on its own host; a plain-HTTP
/// upstream's credentials never go over plain HTTP to another port, even a listed one.)
///
/// # Errors
/// [`AuthError::BadRealm`] when the realm's scheme is not `http`/`https` or it has no host;
/// [`AuthError::ForeignRealm`] when its host is not allowed; [`AuthError::OtherService`] when it is
/// another port or scheme of an upstream host that cannot vouch for it; [`AuthError::InsecureRealm`]
/// when credentials would go over plain HTTP where they may not. Each names the realm, the
/// upstream and the fix.
pub fn check_realm(
    upstream_name: &str,
    upstream: &Url,
    realm: &Url,
    token_realms: &[String],
    sends_credentials: bool,
) -> Result<(), AuthError> {
    check_realm_url(realm)?;
    let realm_host = HostKey::of(realm).ok_or_else(|| AuthError::BadRealm {
        realm: without_userinfo(realm),
        reason: "it has no host",
    })?;
    let upstream_host = HostKey::of(upstream);
    let same_host = upstream_host.as_ref() == Some(&realm_host);
    let same_origin = same_host
        && realm.scheme() == upstream.scheme()
        && realm.port_or_known_default() == upstream.port_or_known_default();
    let allowed = same_origin
        || token_realms.iter().any(|listed| realm_host.is(listed))
        || upstream_host
            .as_ref()
            .is_some_and(|up| up.same_registrable_domain(&realm_host));
    let names = || {
        (
            upstream_name.to_owned(),
            match (upstream.host_str().unwrap_or_default(), upstream.port()) {
                (host, Some(port)) => format!("{host}:{port}"),
                (host, None) => host.to_owned(),
            },
            realm.host_str().unwrap_or_default().to_owned(),
        )
    };
    if !allowed && same_host {
        let (upstream_name, _, realm_host) = names();
        return Err(AuthError::OtherService {
            upstream: upstream_name,
            upstream_origin: upstream.origin().ascii_serialization(),
            realm_origin: realm.origin().ascii_serialization(),
            realm_host,
        });
    }
    if !allowed {
        let (upstream, upstream_host, realm_host) = names();
        return Err(AuthError::ForeignRealm {
            upstream,
            upstream_host,
            realm_host,
        });
    }
    let plain_http_lab = same_origin && upstream.scheme() == "http";
    if sends_credentials && realm.scheme() != "https" && !plain_http_lab {
        let (upstream, upstream_host, realm_host) = names();
        return Err(AuthError::InsecureRealm {
            upstream,
            upstream_host,
            realm_host,
        });
    }
    Ok(())
}

/// A realm must be an `http` or `https` URL.
fn check_realm_url(url: &Url) -> Result<(), AuthError> {
    if matches!(url.scheme(), "http" | "https") {
        Ok(())
    } else {
        Err(AuthError::BadRealm {
            realm: without_userinfo(url),
            reason: "its scheme must be http or https",
        })
    }
}

/// The URL as text without user name and password, for errors.
fn without_userinfo(url: &Url) -> String {
    let mut url = url.clone();
    // Both fail only for URLs without a host, which have no user info to hide.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// A host as compared by the realm policy: a domain (lower-case, without a trailing dot, which
/// names the same DNS name) or an IP address.
#[derive(Debug, PartialEq, Eq)]
enum HostKey {
    Domain(String),
    Ip(IpAddr),
}

// === impl HostKey ===

impl HostKey {
    fn of(url: &Url) -> Option<Self> {
        Some(match url.host()? {
            Host::Domain(domain) => Self::Domain(domain.trim_end_matches('.').to_ascii_lowercase()),
            Host::Ipv4(ip) => Self::Ip(ip.into()),
            Host::Ipv6(ip) => Self::Ip(ip.into()),
        })
    }

    /// Whether a `token_realms` entry names this host.
    fn is(&self, listed: &str) -> bool {
        match self {
            Self::Domain(domain) => listed.trim_end_matches('.').eq_ignore_ascii_case(domain),
            Self::Ip(ip) => listed.trim_matches(['[', ']']).parse::<IpAddr>() == Ok(*ip),
        }
    }

    /// Whether both are domains with the same registrable domain. A name that is itself a public
    /// suffix or a single label (`localhost`) has none, so it matches nothing here.
    fn same_registrable_domain(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Domain(a), Self::Domain(b)) => {
                matches!((psl::domain_str(a), psl::domain_str(b)), (Some(x), Some(y)) if x == y)
            }
            _ => false,
        }
    }
}

// === token responses ===

/// Parses a realm's answer: `token`, or `access_token` when `token` is absent or empty (the token
/// spec allows either, for OAuth 2 compatibility), and `expires_in` in seconds, clamped to
/// [`MIN_TOKEN_LIFETIME`]..=[`MAX_TOKEN_LIFETIME`] (absent, negative or non-numeric means the
/// minimum). `issued_at` is ignored: the lifetime counts from when the answer arrived, which is
/// safe against a realm whose clock differs from ours.
///
/// # Errors
/// [`AuthError::BadTokenResponse`] when the body is not a JSON object of that shape or holds no
/// non-empty token. The error never includes the body.
pub fn parse_token_response(body: &[u8]) -> Result<Token, AuthError> {
    #[derive(Deserialize)]
    struct Wire {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<serde_json::Value>,
    }
    // serde_json's own errors quote the offending value, which may be the token: drop them.
    let wire: Wire = serde_json::from_slice(body).map_err(|_| AuthError::BadTokenResponse {
        reason: "the body is not a JSON object with a string token",
    })?;
    let value = wire
        .token
        .filter(|token| !token.is_empty())
        .or(wire.access_token.filter(|token| !token.is_empty()))
        .ok_or(AuthError::BadTokenResponse {
            reason: "it has neither a token nor an access_token",
        })?;
    let seconds = wire
        .expires_in
        .as_ref()
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0)
        .clamp(
            MIN_TOKEN_LIFETIME.as_secs_f64(),
            MAX_TOKEN_LIFETIME.as_secs_f64(),
        );
    Ok(Token {
        value: Secret::new(value),
        // In range by the clamp above, so the cast neither wraps nor saturates.
        expires_in: Duration::from_secs(seconds as u64),
    })
}

// === Authorization values ===

/// `Authorization: Basic base64(username:password)` (RFC 7617), marked sensitive so that `http`
/// and `hyper` keep it out of their `Debug` output and HPACK tables. A username containing `:`
/// cannot be expressed in Basic; it is encoded as given.
pub fn basic_header(creds: &Credentials) -> HeaderValue {
    let pair = format!("{}:{}", creds.username, creds.password.expose());
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
        .expect("\"Basic \" and base64 are visible ASCII");
    value.set_sensitive(true);
    value
}

/// `Authorization: Bearer <token>`, marked sensitive.
///
/// # Errors
/// [`AuthError::TokenNotHeaderSafe`] when the token is empty or has a character other than visible
/// ASCII (a space, a control character, non-ASCII): sending it would be rejected or, worse,
/// change the header's meaning. The error does not include the token.
pub fn bearer_header(token: &Token) -> Result<HeaderValue, AuthError> {
    let raw = token.value.expose();
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::TokenNotHeaderSafe);
    }
    let mut value = HeaderValue::try_from(format!("Bearer {raw}"))
        .map_err(|_| AuthError::TokenNotHeaderSafe)?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Challenge {
        Challenge::Bearer(BearerChallenge {
            realm: realm.into(),
            service: service.map(Into::into),
            scope: scope.map(Into::into),
        })
    }

    fn basic(realm: Option<&str>) -> Challenge {
        Challenge::Basic {
            realm: realm.map(Into::into),
        }
    }

    #[test]
    fn challenges() {
        let cases: Vec<(&str, Vec<Challenge>)> = vec![
            // Docker Hub.
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
                vec![bearer(
                    "https://auth.docker.io/token",
                    Some("registry.docker.io"),
                    Some("repository:library/nginx:pull"),
                )],
            ),
            // ghcr.io.
            (
                r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:user/image:pull""#,
                vec![bearer(
                    "https://ghcr.io/token",
                    Some("ghcr.io"),
                    Some("repository:user/image:pull"),
                )],
            ),
            // distribution's insufficient_scope: a comma inside quotes, an unknown param.
            (
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push",error="insufficient_scope""#,
                vec![bearer(
                    "https://auth.example.com/token",
                    Some("registry.example.com"),
                    Some("repository:a/b:pull,push"),
                )],
            ),
            // Case-insensitive scheme and names; values keep their case.
            (
                r#"BEARER REALM="https://R/T", Service="Svc", sCoPe="repository:A:pull""#,
                vec![bearer(
                    "https://R/T",
                    Some("Svc"),
                    Some("repository:A:pull"),
                )],
            ),
            // Extra whitespace everywhere, around '=' too, and empty list elements.
            (
                " \t Bearer   realm = \"r\" ,  , service =\ts ,scope= \"x y\" \t",
                vec![bearer("r", Some("s"), Some("x y"))],
            ),
            // Bare values, including an unquoted URL.
            (
                "Bearer realm=https://r/t,service=s",
                vec![bearer("https://r/t", Some("s"), None)],
            ),
            // Escapes: \" and \\ inside a quoted string.
            (
                r#"Bearer realm="a\"b\\c,d""#,
                vec![bearer(r#"a"b\c,d"#, None, None)],
            ),
            // Several challenges, in order.
            (
                r#"Basic realm="x", Bearer realm="y""#,
                vec![basic(Some("x")), bearer("y", None, None)],
            ),
            (
                r#"Bearer realm="y",service="s", Basic realm="x""#,
                vec![bearer("y", Some("s"), None), basic(Some("x"))],
            ),
            (
                r#"Basic realm="Registry Realm""#,
                vec![basic(Some("Registry Realm"))],
            ),
            (r#"basic realm="Zürich""#, vec![basic(Some("Zürich"))]),
            ("Basic", vec![basic(None)]),
            ("Basic, Basic", vec![basic(None), basic(None)]),
            // Unknown schemes are skipped, with their params or token68.
            (
                r#"Digest realm="d", nonce="n,m", Bearer realm="y""#,
                vec![bearer("y", None, None)],
            ),
            (
                r#"Negotiate YWJj==, Bearer realm="y""#,
                vec![bearer("y", None, None)],
            ),
            ("Negotiate", vec![]),
            // Unknown params are ignored; a repeated one keeps its first value.
            (
                r#"Bearer foo="bar",realm="y",error=invalid_token,error_description="a, b""#,
                vec![bearer("y", None, None)],
            ),
            (
                r#"Bearer realm="first",realm="second""#,
                vec![bearer("first", None, None)],
            ),
            // Bearer without a usable realm: left out.
            (r#"Bearer service="no-realm""#, vec![]),
            (r#"Bearer realm="",service="s""#, vec![]),
            ("Bearer realm=", vec![]),
            ("Bearer", vec![]),
            // An unterminated quoted string drops that parameter.
            (r#"Bearer realm="https://x"#, vec![]),
            (
                r#"Bearer realm="r",scope="repository:a:pull"#,
                vec![bearer("r", None, None)],
            ),
            // Junk after a value is skipped to the next comma.
            (
                r#"Bearer realm="r"junk "q,x", service="s""#,
                vec![bearer("r", Some("s"), None)],
            ),
            // Garbage: nothing usable, and no panic or endless loop.
            ("", vec![]),
            (" , ,, ", vec![]),
            ("=x", vec![]),
            (r#""quoted""#, vec![]),
            (r#"realm="no scheme", Basic"#, vec![basic(None)]),
            (r#"Bearer realm="r" = = ,"#, vec![bearer("r", None, None)]),
            ("\u{e9}\u{e9} x, Basic", vec![basic(None)]),
        ];
        for (header, want) in cases {
            assert_eq!(parse_challenges(header), want, "{header}");
        }
    }

    #[test]
    fn every_truncation_of_a_challenge_parses_without_panic() {
        let header = r#"Negotiate YWJj==, Basic realm="Zürich", Bearer realm="https://r/t",service=s,scope="a\"b,c""#;
        // Cut at every character boundary: each prefix must parse (and terminate).
        let mut cut_points: Vec<usize> = header.char_indices().map(|(i, _)| i).collect();
        cut_points.push(header.len());
        let mut with_bearer = 0;
        for &end in &cut_points {
            let got = parse_challenges(&header[..end]);
            if got.iter().any(|c| matches!(c, Challenge::Bearer(_))) {
                with_bearer += 1;
            }
        }
        // The Bearer appears once its realm's closing quote is in: from `...r/t"` on.
        let first = header.find(r#"r/t""#).unwrap() + r#"r/t""#.len();
        assert_eq!(
            with_bearer,
            cut_points.iter().filter(|&&end| end >= first).count()
        );
        assert_eq!(
            parse_challenges(header),
            vec![
                basic(Some("Zürich")),
                bearer("https://r/t", Some("s"), Some(r#"a"b,c"#)),
            ]
        );
    }

    #[test]
    fn pull_scopes() {
        for (repo, want) in [
            ("library/nginx", "repository:library/nginx:pull"),
            ("a/b/c", "repository:a/b/c:pull"),
            ("app", "repository:app:pull"),
        ] {
            assert_eq!(pull_scope(repo), want, "{repo}");
        }
    }

    #[test]
    fn token_urls() {
        const HUB_SCOPE: &str = "repository:library/nginx:pull";
        // (realm, service, challenge scope, default scope, want)
        type Case = (
            &'static str,
            Option<&'static str>,
            Option<&'static str>,
            &'static str,
            &'static str,
        );
        let cases: &[Case] = &[
            (
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                Some(HUB_SCOPE),
                "repository:other:pull",
                "https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%2Fnginx%3Apull",
            ),
            // No scope in the challenge: the default.
            (
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                None,
                HUB_SCOPE,
                "https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%2Fnginx%3Apull",
            ),
            (
                "https://r/token",
                None,
                Some(" "),
                "repository:d:pull",
                "https://r/token?scope=repository%3Ad%3Apull",
            ),
            // The realm's own query is kept, its fragment dropped.
            (
                "https://r/token?account=bot&x=1#frag",
                Some("s"),
                None,
                "repository:a:pull",
                "https://r/token?account=bot&x=1&service=s&scope=repository%3Aa%3Apull",
            ),
            // Several scopes: one parameter each.
            (
                "http://127.0.0.1:5001/token",
                Some("reg"),
                Some("repository:a:pull  repository:b:pull,push"),
                "",
                "http://127.0.0.1:5001/token?service=reg&scope=repository%3Aa%3Apull&scope=repository%3Ab%3Apull%2Cpush",
            ),
            // Values are encoded; an empty service is left out.
            (
                "https://r/t",
                Some("my svc&x=y"),
                None,
                "",
                "https://r/t?service=my+svc%26x%3Dy",
            ),
            ("https://r/t", Some(""), None, "", "https://r/t"),
            (" https://r/t ", None, None, "", "https://r/t"),
        ];
        for &(realm, service, scope, default_scope, want) in cases {
            let challenge = BearerChallenge {
                realm: realm.into(),
                service: service.map(Into::into),
                scope: scope.map(Into::into),
            };
            let got = token_url(&challenge, default_scope).map(String::from);
            assert_eq!(got.as_deref(), Ok(want), "{realm} {service:?} {scope:?}");
        }
    }

    #[test]
    fn token_url_refuses_unusable_realms() {
        // (realm, want realm in the error, want reason)
        let cases = [
            (
                "ftp://r/token",
                "ftp://r/token",
                "its scheme must be http or https",
            ),
            (
                "file:///etc/passwd",
                "file:///etc/passwd",
                "its scheme must be http or https",
            ),
            ("/token", "/token", "it is not an absolute URL"),
            ("not a url", "not a url", "it is not an absolute URL"),
            (
                "https://bot:s3cret@r/token",
                "https://r/token",
                "it carries a user name or password",
            ),
        ];
        for (realm, want_realm, reason) in cases {
            let challenge = BearerChallenge {
                realm: realm.into(),
                service: None,
                scope: None,
            };
            let err = token_url(&challenge, "repository:a:pull").unwrap_err();
            assert_eq!(
                err,
                AuthError::BadRealm {
                    realm: want_realm.into(),
                    reason
                },
                "{realm}"
            );
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }

    #[derive(Debug, PartialEq)]
    enum Verdict {
        Ok,
        Bad,
        Foreign,
        Other,
        Insecure,
    }

    #[test]
    fn realm_policy() {
        use Verdict::{Bad, Foreign, Insecure, Ok, Other};
        let listed = ["auth.example.com".to_owned(), "10.0.0.5".to_owned()];
        // (upstream, realm, sends credentials, want)
        let cases: &[(&str, &str, bool, Verdict)] = &[
            // Same registrable domain (docker.io).
            (
                "https://registry-1.docker.io",
                "https://auth.docker.io/token",
                true,
                Ok,
            ),
            (
                "https://registry-1.docker.io",
                "https://AUTH.Docker.IO./token",
                true,
                Ok,
            ),
            (
                "https://docker.io",
                "https://auth.docker.io/token",
                true,
                Ok,
            ),
            (
                "https://registry-1.docker.io",
                "http://auth.docker.io/token",
                false,
                Ok,
            ),
            (
                "https://registry-1.docker.io",
                "http://auth.docker.io/token",
                true,
                Insecure,
            ),
            // Elsewhere, including look-alikes.
            (
                "https://registry-1.docker.io",
                "https://evil.com/token",
                false,
                Foreign,
            ),
            (
                "https://registry-1.docker.io",
                "https://evil.com/token",
                true,
                Foreign,
            ),
            (
                "https://registry-1.docker.io",
                "https://docker.io.evil.com/t",
                true,
                Foreign,
            ),
            (
                "https://registry-1.docker.io",
                "https://evildocker.io/t",
                true,
                Foreign,
            ),
            // Public suffixes (ICANN and private) are not a shared domain.
            (
                "https://reg.foo.co.uk",
                "https://auth.foo.co.uk/token",
                true,
                Ok,
            ),
            (
                "https://foo.co.uk",
                "https://bar.co.uk/token",
                true,
                Foreign,
            ),
            (
                "https://a.github.io",
                "https://b.github.io/token",
                false,
                Foreign,
            ),
            // Listed in token_realms: exact host, any case; https still needed for credentials.
            (
                "https://registry-1.docker.io",
                "https://auth.example.com/token",
                true,
                Ok,
            ),
            (
                "https://registry-1.docker.io",
                "https://Auth.Example.COM/token",
                true,
                Ok,
            ),
            (
                "https://registry-1.docker.io",
                "https://x.auth.example.com/t",
                true,
                Foreign,
            ),
            (
                "https://registry-1.docker.io",
                "http://auth.example.com/token",
                false,
                Ok,
            ),
            (
                "https://registry-1.docker.io",
                "http://auth.example.com/token",
                true,
                Insecure,
            ),
            ("http://10.0.0.4:5000", "https://10.0.0.5/token", true, Ok),
            // The upstream's own origin: the plain-http lab registry serving its own tokens.
            (
                "http://127.0.0.1:5000",
                "http://127.0.0.1:5000/token",
                true,
                Ok,
            ),
            ("http://127.0.0.1", "http://127.0.0.1:80/token", true, Ok),
            ("http://[::1]:5000", "http://[::1]:5000/token", true, Ok),
            (
                "https://reg.lab.example",
                "https://reg.lab.example:443/t",
                true,
                Ok,
            ),
            // Another port or scheme of an address or single-label host is another service.
            (
                "http://127.0.0.1:5000",
                "http://127.0.0.1:9999/token",
                true,
                Other,
            ),
            (
                "http://127.0.0.1:5000",
                "http://127.0.0.1:9999/token",
                false,
                Other,
            ),
            (
                "http://127.0.0.1:5000",
                "http://127.0.0.1/token",
                true,
                Other,
            ),
            (
                "http://127.0.0.1:5000",
                "https://127.0.0.1:5000/token",
                false,
                Other,
            ),
            (
                "http://localhost:5000",
                "http://localhost:5001/token",
                true,
                Other,
            ),
            ("http://[::1]:5000", "http://[::1]:5001/token", true, Other),
            // Listed, it may be contacted, but plain-http credentials still go only to the
            // upstream's own host and port.
            ("http://10.0.0.5:5000", "http://10.0.0.5:5001/t", false, Ok),
            (
                "http://10.0.0.5:5000",
                "http://10.0.0.5:5001/t",
                true,
                Insecure,
            ),
            ("http://10.0.0.5:5000", "https://10.0.0.5:5001/t", true, Ok),
            // On a registrable domain, another port may be contacted, but gets no credentials
            // over plain http.
            (
                "http://reg.lab.example:5000",
                "http://reg.lab.example:5001/t",
                false,
                Ok,
            ),
            (
                "http://reg.lab.example:5000",
                "http://reg.lab.example:5001/t",
                true,
                Insecure,
            ),
            // ... but an https upstream's credentials never go to plain http.
            (
                "https://reg.lab.example",
                "http://reg.lab.example:5001/t",
                true,
                Insecure,
            ),
            (
                "https://reg.lab.example",
                "http://reg.lab.example:5001/t",
                false,
                Ok,
            ),
            // ... and a plain-http upstream's only to its own host.
            (
                "http://reg.lab.example:5000",
                "http://auth.lab.example/t",
                false,
                Ok,
            ),
            (
                "http://reg.lab.example:5000",
                "http://auth.lab.example/t",
                true,
                Insecure,
            ),
            (
                "http://reg.lab.example:5000",
                "https://auth.lab.example/t",
                true,
                Ok,
            ),
            // IP addresses and single labels must match exactly.
            (
                "http://127.0.0.1:5000",
                "http://127.0.0.2/token",
                false,
                Foreign,
            ),
            (
                "http://127.0.0.1:5000",
                "http://localhost/token",
                false,
                Foreign,
            ),
            (
                "http://localhost:5000",
                "http://127.0.0.1/token",
                false,
                Foreign,
            ),
            (
                "http://localhost:5000",
                "http://auth.localhost/token",
                false,
                Foreign,
            ),
            (
                "http://registry:5000",
                "http://auth.registry/token",
                false,
                Foreign,
            ),
            ("http://[::1]:5000", "http://[::2]/token", false, Foreign),
            // Only http(s) realms.
            (
                "https://registry-1.docker.io",
                "ftp://auth.docker.io/token",
                false,
                Bad,
            ),
            ("https://registry-1.docker.io", "file:///token", false, Bad),
        ];
        for (upstream, realm, creds, want) in cases {
            let got = check_realm(
                "up",
                &Url::parse(upstream).unwrap(),
                &Url::parse(realm).unwrap(),
                &listed,
                *creds,
            );
            let got = match got {
                Result::Ok(()) => Ok,
                Err(AuthError::BadRealm { .. }) => Bad,
                Err(AuthError::ForeignRealm { .. }) => Foreign,
                Err(AuthError::OtherService { .. }) => Other,
                Err(AuthError::InsecureRealm { .. }) => Insecure,
                Err(other) => panic!("{upstream} {realm}: unexpected {other:?}"),
            };
            assert_eq!(
                &got, want,
                "upstream {upstream}, realm {realm}, creds {creds}"
            );
        }
    }

    #[test]
    fn realm_errors_name_the_hosts_and_the_fix() {
        let hub = Url::parse("https://registry-1.docker.io").unwrap();
        // (realm, sends credentials, want error, want message)
        let cases = [
            (
                "https://evil.com/t",
                false,
                AuthError::ForeignRealm {
                    upstream: "hub".into(),
                    upstream_host: "registry-1.docker.io".into(),
                    realm_host: "evil.com".into(),
                },
                "token realm host evil.com is not on the domain of upstream hub \
                 (registry-1.docker.io), so wharf will not contact it; if it is the registry's \
                 real token service, add \"evil.com\" to token_realms for upstream hub",
            ),
            (
                "http://auth.docker.io/t",
                true,
                AuthError::InsecureRealm {
                    upstream: "hub".into(),
                    upstream_host: "registry-1.docker.io".into(),
                    realm_host: "auth.docker.io".into(),
                },
                "token realm host auth.docker.io is plain http; wharf sends upstream hub's \
                 credentials over plain http only to the upstream's own host and port \
                 (registry-1.docker.io) when the upstream itself is plain http. The registry \
                 must advertise an https token realm",
            ),
            (
                "ftp://bot:s3cret@auth.docker.io/t",
                true,
                AuthError::BadRealm {
                    realm: "ftp://auth.docker.io/t".into(),
                    reason: "its scheme must be http or https",
                },
                "token realm \"ftp://auth.docker.io/t\" cannot be used: its scheme must be http \
                 or https",
            ),
        ];
        for (realm, creds, want, message) in cases {
            let err =
                check_realm("hub", &hub, &Url::parse(realm).unwrap(), &[], creds).unwrap_err();
            assert_eq!(err.to_string(), message, "{realm}");
            assert_eq!(err, want, "{realm}");
        }
        // A lab upstream: its host and port are named.
        let lab = Url::parse("http://127.0.0.1:5000").unwrap();
        let err = check_realm(
            "lab",
            &lab,
            &Url::parse("http://127.0.0.1:5001/token").unwrap(),
            &[],
            true,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "token realm http://127.0.0.1:5001 is another service on the host of upstream lab \
             (http://127.0.0.1:5000), so wharf will not contact it; if it is the registry's real \
             token service, add \"127.0.0.1\" to token_realms for upstream lab"
        );
        let err = check_realm(
            "lab",
            &lab,
            &Url::parse("http://127.0.0.1:5001/token").unwrap(),
            &["127.0.0.1".to_owned()],
            true,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("only to the upstream's own host and port (127.0.0.1:5000)"),
            "{err}"
        );
    }

    #[test]
    fn token_responses() {
        // (body, want token, want lifetime in seconds)
        let cases: &[(&str, &str, u64)] = &[
            (r#"{"token":"t1","expires_in":300}"#, "t1", 300),
            (r#"{"access_token":"t2"}"#, "t2", 60),
            (
                r#"{"token":"t3","access_token":"other","expires_in":120}"#,
                "t3",
                120,
            ),
            (r#"{"token":"","access_token":"t4"}"#, "t4", 60),
            (r#"{"token":null,"access_token":"t5"}"#, "t5", 60),
            (r#"{"access_token":"t6","token":"t7"}"#, "t7", 60),
            // Lifetimes: minimum 60, maximum a day, seconds only.
            (r#"{"token":"t","expires_in":10}"#, "t", 60),
            (r#"{"token":"t","expires_in":0}"#, "t", 60),
            (r#"{"token":"t","expires_in":-5}"#, "t", 60),
            (r#"{"token":"t","expires_in":60}"#, "t", 60),
            (r#"{"token":"t","expires_in":300.9}"#, "t", 300),
            (r#"{"token":"t","expires_in":"300"}"#, "t", 60),
            (r#"{"token":"t","expires_in":null}"#, "t", 60),
            (r#"{"token":"t","expires_in":86400}"#, "t", 86_400),
            (r#"{"token":"t","expires_in":1000000000000}"#, "t", 86_400),
            (r#"{"token":"t","expires_in":1e300}"#, "t", 86_400),
            // issued_at and unknown fields are ignored.
            (
                r#"{"token":"t","expires_in":120,"issued_at":"2009-11-10T23:00:00Z","refresh_token":"r"}"#,
                "t",
                120,
            ),
        ];
        for &(body, token, seconds) in cases {
            let got = parse_token_response(body.as_bytes());
            assert_eq!(
                got,
                Result::Ok(Token {
                    value: Secret::new(token),
                    expires_in: Duration::from_secs(seconds),
                }),
                "{body}"
            );
        }
    }

    #[test]
    fn bad_token_responses() {
        const NOT_JSON: &str = "the body is not a JSON object with a string token";
        const NO_TOKEN: &str = "it has neither a token nor an access_token";
        let cases = [
            ("", NOT_JSON),
            ("not json", NOT_JSON),
            ("[]", NOT_JSON),
            (r#""tok""#, NOT_JSON),
            (r#"{"token":123456789}"#, NOT_JSON),
            (r#"{"token":"ok","expires_in":300"#, NOT_JSON),
            ("{}", NO_TOKEN),
            (r#"{"expires_in":300}"#, NO_TOKEN),
            (r#"{"token":"","access_token":""}"#, NO_TOKEN),
        ];
        for (body, reason) in cases {
            let err = parse_token_response(body.as_bytes()).unwrap_err();
            assert_eq!(err, AuthError::BadTokenResponse { reason }, "{body}");
            assert!(!err.to_string().contains("123456789"), "{err}");
        }
    }

    #[test]
    fn basic_headers() {
        let cases = [
            (
                "aladdin",
                "open sesame",
                "Basic YWxhZGRpbjpvcGVuIHNlc2FtZQ==",
            ),
            ("u", "p", "Basic dTpw"),
            (
                "mirror-bot",
                "pä:ss wörd",
                "Basic bWlycm9yLWJvdDpww6Q6c3Mgd8O2cmQ=",
            ),
            ("", "", "Basic Og=="),
        ];
        for (username, password, want) in cases {
            let value = basic_header(&Credentials {
                username: username.into(),
                password: Secret::new(password),
            });
            assert_eq!(value.to_str().unwrap(), want, "{username}");
            assert!(value.is_sensitive(), "{username}");
        }
    }

    #[test]
    fn bearer_headers() {
        let token = |value: &str| Token {
            value: Secret::new(value),
            expires_in: MIN_TOKEN_LIFETIME,
        };
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_+/=";
        for value in [jwt, "abc", "QUFB~.=="] {
            let header = bearer_header(&token(value)).unwrap();
            assert_eq!(header.to_str().unwrap(), format!("Bearer {value}"));
            assert!(header.is_sensitive(), "{value}");
        }
        for value in [
            "",
            "a b",
            "a\tb",
            "a\nb",
            "a\r\nX-Evil: 1",
            "a\u{7f}",
            "tökén",
        ] {
            let err = bearer_header(&token(value)).unwrap_err();
            assert_eq!(err, AuthError::TokenNotHeaderSafe, "{value:?}");
        }
    }

    #[test]
    fn tokens_are_redacted_in_debug() {
        let token = Token {
            value: Secret::new("hunter2-token"),
            expires_in: Duration::from_secs(300),
        };
        assert_eq!(
            format!("{token:?}"),
            "Token { value: <redacted>, expires_in: 300s }"
        );
    }
}
