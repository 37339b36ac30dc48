//! The pure parts of upstream authentication: `WWW-Authenticate` challenges, token requests and
//! responses, `Authorization` values, and the policy that decides where credentials may go.
//!
//! The flow is the Docker token spec's (distribution `docs/spec/auth/token.md`): a `401` with
//! `Bearer realm=...,service=...,scope=...` sends the client to the realm for a token, with Basic
//! credentials when it has them. A realm is chosen by the upstream, so before anything is sent there
//! [`check_realm`] makes sure it belongs to the same registrable domain as the upstream (or is listed
//! in `token_realms`), and that credentials only travel over HTTPS or stay on the upstream's host.

use std::time::Duration;

use base64::Engine as _;
use http::HeaderValue;
use serde::Deserialize;
use url::Url;

use crate::secret::{Credentials, Secret};

/// One authentication challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer realm=...`: get a token from the realm.
    Bearer(BearerChallenge),
    /// `Basic`: send credentials directly.
    Basic {
        /// The realm's name, informational only.
        realm: Option<String>,
    },
}

/// A Bearer challenge's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerChallenge {
    /// The token endpoint.
    pub realm: String,
    /// The `service` to ask the token for.
    pub service: Option<String>,
    /// The `scope` the upstream asked for.
    pub scope: Option<String>,
}

/// A token from a realm.
#[derive(Debug, Clone)]
pub struct Token {
    /// The token itself.
    pub value: Secret,
    /// How long it is valid.
    pub expires_in: Duration,
}

/// An authentication failure. No variant carries a credential or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The challenge's realm is not a usable URL.
    #[error("token realm {realm:?} is not a valid http(s) URL")]
    BadRealm {
        /// The realm as sent.
        realm: String,
    },
    /// The realm is on another domain than the upstream.
    #[error("token realm host {realm_host} is not on the domain of {upstream}; if it is the registry's real token service, add \"{realm_host}\" to token_realms for upstream {upstream}")]
    ForeignRealm {
        /// The upstream's name.
        upstream: String,
        /// The realm's host.
        realm_host: String,
    },
    /// Credentials would travel over plain HTTP to another host.
    #[error("token realm host {realm_host} is plain http and not the registry's own host; wharf will not send upstream {upstream}'s credentials there (use an https realm)")]
    InsecureRealm {
        /// The upstream's name.
        upstream: String,
        /// The realm's host.
        realm_host: String,
    },
    /// The realm refused the token request.
    #[error("token realm {realm} refused the token request ({status}); check the credentials configured for this upstream")]
    TokenRefused {
        /// The realm's host.
        realm: String,
        /// The status it answered.
        status: u16,
    },
    /// The realm's answer was not a token response.
    #[error("token realm answered without a usable token")]
    BadTokenResponse,
}

// === challenges ===

/// Parses every challenge in a `WWW-Authenticate` value. Unknown schemes and Bearer challenges
/// without a realm (which cannot be answered) are left out.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut scheme: Option<String> = None;
    let mut params: Vec<(String, String)> = Vec::new();
    let mut rest = header.trim();
    let flush = |scheme: &mut Option<String>,
                 params: &mut Vec<(String, String)>,
                 out: &mut Vec<Challenge>| {
        if let Some(s) = scheme.take() {
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            if s.eq_ignore_ascii_case("bearer") {
                if let Some(realm) = get("realm").filter(|r| !r.is_empty()) {
                    out.push(Challenge::Bearer(BearerChallenge {
                        realm,
                        service: get("service"),
                        scope: get("scope"),
                    }));
                }
            } else if s.eq_ignore_ascii_case("basic") {
                out.push(Challenge::Basic {
                    realm: get("realm"),
                });
            }
        }
        params.clear();
    };
    while !rest.is_empty() {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        // A token followed by '=' is a parameter; otherwise it starts a new challenge.
        let end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..end];
        let after = rest[end..].trim_start_matches([' ', '\t']);
        if let (Some(value_part), true) = (after.strip_prefix('='), scheme.is_some()) {
            let value_part = value_part.trim_start_matches([' ', '\t']);
            let (value, remaining) = if let Some(quoted) = value_part.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut consumed = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => {
                            consumed = i + 1;
                            break;
                        }
                        _ => value.push(c),
                    }
                }
                (value, &quoted[consumed.min(quoted.len())..])
            } else {
                let end = value_part
                    .find([',', ' ', '\t'])
                    .unwrap_or(value_part.len());
                (value_part[..end].to_owned(), &value_part[end..])
            };
            params.push((token.to_ascii_lowercase(), value));
            rest = remaining;
        } else {
            flush(&mut scheme, &mut params, &mut out);
            scheme = Some(token.to_owned());
            rest = &rest[end..];
            if token.is_empty() {
                break; // Malformed ("=x" with no scheme): stop rather than loop.
            }
        }
    }
    flush(&mut scheme, &mut params, &mut out);
    out
}

/// The pull scope for a repository: `repository:<name>:pull`.
pub fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

/// The URL to ask a realm for a token: the realm with `service` and `scope` added (the challenge's
/// scope, or `default_scope` when it names none).
///
/// # Errors
/// [`AuthError::BadRealm`] when the realm is not an http(s) URL.
pub fn token_url(challenge: &BearerChallenge, default_scope: &str) -> Result<Url, AuthError> {
    let bad = || AuthError::BadRealm {
        realm: challenge.realm.clone(),
    };
    let mut url = Url::parse(&challenge.realm).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad());
    }
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = &challenge.service {
            query.append_pair("service", service);
        }
        query.append_pair("scope", challenge.scope.as_deref().unwrap_or(default_scope));
    }
    Ok(url)
}

/// Decides whether a token realm may be contacted, and whether credentials may be sent to it.
///
/// # Errors
/// [`AuthError::ForeignRealm`] when the realm is not on the upstream's registrable domain nor in
/// `token_realms`; [`AuthError::InsecureRealm`] when credentials would go over plain HTTP to a host
/// other than the upstream's.
pub fn check_realm(
    upstream_name: &str,
    upstream: &Url,
    realm: &Url,
    token_realms: &[String],
    sends_credentials: bool,
) -> Result<(), AuthError> {
    let realm_host = realm.host_str().unwrap_or_default().to_ascii_lowercase();
    let upstream_host = upstream.host_str().unwrap_or_default().to_ascii_lowercase();
    let same_host = realm_host == upstream_host;
    let listed = token_realms
        .iter()
        .any(|r| r.eq_ignore_ascii_case(&realm_host));
    if !same_host && !listed && !same_registrable_domain(&realm_host, &upstream_host) {
        return Err(AuthError::ForeignRealm {
            upstream: upstream_name.to_owned(),
            realm_host,
        });
    }
    if sends_credentials && realm.scheme() != "https" && !same_host {
        return Err(AuthError::InsecureRealm {
            upstream: upstream_name.to_owned(),
            realm_host,
        });
    }
    Ok(())
}

fn same_registrable_domain(a: &str, b: &str) -> bool {
    let is_ip = |h: &str| h.parse::<std::net::IpAddr>().is_ok() || h.starts_with('[');
    if is_ip(a) || is_ip(b) {
        return false;
    }
    match (psl::domain_str(a), psl::domain_str(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Parses a realm's answer: `token` (or `access_token`) and `expires_in` (at least 60 s, per the spec,
/// when absent or smaller).
///
/// # Errors
/// [`AuthError::BadTokenResponse`] when there is no token.
pub fn parse_token_response(body: &[u8]) -> Result<Token, AuthError> {
    #[derive(Deserialize)]
    struct Wire {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let wire: Wire = serde_json::from_slice(body).map_err(|_| AuthError::BadTokenResponse)?;
    let value = wire
        .token
        .filter(|t| !t.is_empty())
        .or(wire.access_token.filter(|t| !t.is_empty()))
        .ok_or(AuthError::BadTokenResponse)?;
    Ok(Token {
        value: Secret::new(value),
        expires_in: Duration::from_secs(wire.expires_in.unwrap_or(60).max(60)),
    })
}

/// `Authorization: Basic ...` for the credentials, marked sensitive.
pub fn basic_header(creds: &Credentials) -> HeaderValue {
    let raw = format!("{}:{}", creds.username, creds.password.expose());
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

/// `Authorization: Bearer ...` for a token, marked sensitive.
///
/// # Errors
/// [`AuthError::BadTokenResponse`] when the token has characters a header cannot carry.
pub fn bearer_header(token: &Token) -> Result<HeaderValue, AuthError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.value.expose()))
        .map_err(|_| AuthError::BadTokenResponse)?;
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

    #[test]
    fn challenge_table() {
        let cases: Vec<(&str, Vec<Challenge>)> = vec![
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
                vec![bearer(
                    "https://auth.docker.io/token",
                    Some("registry.docker.io"),
                    Some("repository:library/nginx:pull"),
                )],
            ),
            (
                r#"bearer Realm="https://ghcr.io/token", SERVICE="ghcr.io" , scope="repository:a/b:pull,push""#,
                vec![bearer(
                    "https://ghcr.io/token",
                    Some("ghcr.io"),
                    Some("repository:a/b:pull,push"),
                )],
            ),
            (
                r#"Bearer realm="https://r/token",service="s",scope="repository:x:pull",error="insufficient_scope""#,
                vec![bearer(
                    "https://r/token",
                    Some("s"),
                    Some("repository:x:pull"),
                )],
            ),
            (
                r#"Bearer realm=https://r/t,service=s"#,
                vec![bearer("https://r/t", Some("s"), None)],
            ),
            (r#"Bearer realm="a\"b""#, vec![bearer("a\"b", None, None)]),
            (
                r#"Basic realm="x", Bearer realm="y""#,
                vec![
                    Challenge::Basic {
                        realm: Some("x".into()),
                    },
                    bearer("y", None, None),
                ],
            ),
            (
                r#"Basic realm="Registry Realm""#,
                vec![Challenge::Basic {
                    realm: Some("Registry Realm".into()),
                }],
            ),
            ("Basic", vec![Challenge::Basic { realm: None }]),
            (
                r#"Negotiate abc, Bearer realm="y""#,
                vec![bearer("y", None, None)],
            ),
            (r#"Bearer service="no-realm""#, vec![]),
            ("", vec![]),
            ("=x", vec![]),
        ];
        for (header, want) in cases {
            assert_eq!(parse_challenges(header), want, "{header}");
        }
    }

    #[test]
    fn token_url_adds_service_and_scope() {
        let c = BearerChallenge {
            realm: "https://auth.docker.io/token?x=1".into(),
            service: Some("registry.docker.io".into()),
            scope: None,
        };
        assert_eq!(
            token_url(&c, "repository:library/nginx:pull").unwrap().as_str(),
            "https://auth.docker.io/token?x=1&service=registry.docker.io&scope=repository%3Alibrary%2Fnginx%3Apull"
        );
        let bad = BearerChallenge {
            realm: "ftp://x/token".into(),
            service: None,
            scope: None,
        };
        assert!(matches!(
            token_url(&bad, "s"),
            Err(AuthError::BadRealm { .. })
        ));
    }

    #[test]
    fn realm_policy_table() {
        let hub = Url::parse("https://registry-1.docker.io").unwrap();
        let lab = Url::parse("http://127.0.0.1:5000").unwrap();
        let uk = Url::parse("https://reg.foo.co.uk").unwrap();
        let listed = vec!["auth.example.com".to_owned()];
        // (upstream, realm, creds, want ok, want error kind)
        let cases: Vec<(&Url, &str, bool, Result<(), &str>)> = vec![
            (&hub, "https://auth.docker.io/token", true, Ok(())),
            (&hub, "http://auth.docker.io/token", false, Ok(())),
            (&hub, "http://auth.docker.io/token", true, Err("insecure")),
            (&hub, "https://evil.com/token", false, Err("foreign")),
            (&hub, "https://auth.example.com/token", true, Ok(())),
            (&lab, "http://127.0.0.1:9999/token", true, Ok(())),
            (&lab, "http://127.0.0.2/token", false, Err("foreign")),
            (&lab, "http://localhost/token", false, Err("foreign")),
            (&uk, "https://auth.foo.co.uk/token", true, Ok(())),
            (&uk, "https://bar.co.uk/token", true, Err("foreign")),
        ];
        for (upstream, realm, creds, want) in cases {
            let got = check_realm("up", upstream, &Url::parse(realm).unwrap(), &listed, creds);
            let kind = got.as_ref().map(|_| ()).map_err(|e| match e {
                AuthError::ForeignRealm { .. } => "foreign",
                AuthError::InsecureRealm { .. } => "insecure",
                _ => "other",
            });
            assert_eq!(kind, want, "{upstream} {realm} creds={creds}");
        }
        let msg = check_realm(
            "docker.io",
            &hub,
            &Url::parse("https://evil.com/t").unwrap(),
            &[],
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("evil.com") && msg.contains("token_realms for upstream docker.io"),
            "{msg}"
        );
    }

    #[test]
    fn token_response_table() {
        let cases: &[(&str, Option<(&str, u64)>)] = &[
            (r#"{"token":"t1","expires_in":300}"#, Some(("t1", 300))),
            (r#"{"access_token":"t2"}"#, Some(("t2", 60))),
            (
                r#"{"token":"t3","access_token":"other","expires_in":10}"#,
                Some(("t3", 60)),
            ),
            (r#"{"token":"","access_token":"t4"}"#, Some(("t4", 60))),
            (r#"{"expires_in":300}"#, None),
            ("not json", None),
        ];
        for (body, want) in cases {
            let got = parse_token_response(body.as_bytes()).ok();
            let got = got
                .as_ref()
                .map(|t| (t.value.expose(), t.expires_in.as_secs()));
            assert_eq!(got, *want, "{body}");
        }
    }

    #[test]
    fn headers_are_sensitive_and_correct() {
        let creds = Credentials {
            username: "u".into(),
            password: Secret::new("p"),
        };
        let basic = basic_header(&creds);
        assert_eq!(basic.to_str().unwrap(), "Basic dTpw");
        assert!(basic.is_sensitive());
        let token = Token {
            value: Secret::new("abc"),
            expires_in: Duration::from_secs(60),
        };
        let bearer = bearer_header(&token).unwrap();
        assert_eq!(bearer.to_str().unwrap(), "Bearer abc");
        assert!(bearer.is_sensitive());
        let bad = Token {
            value: Secret::new("a\nb"),
            expires_in: Duration::from_secs(60),
        };
        assert_eq!(bearer_header(&bad), Err(AuthError::BadTokenResponse));
        assert!(!format!("{token:?}").contains("abc"));
    }
}
