//! Docker's client configuration file (`~/.docker/config.json`) and Podman's `auth.json`, which
//! share one format: the entry for one registry host, resolved as the Docker CLI resolves it.
//!
//! The CLI (`cli/config/configfile/file.go`, `GetCredentialsStore` and `GetAuthConfig`) asks, in
//! order: a helper named for the host in `credHelpers`, then the default store `credsStore`, then
//! the file's own `auths`. An `auths` entry holds `auth` (base64 of `user:password`), or
//! `username` and `password`, or an `identitytoken` (an OAuth refresh token, sent as Docker does
//! with the user name `<token>`). Keys of `auths` and `credHelpers` are matched by host: the CLI
//! writes `https://host`, `host` or `https://host/v1/` (`ConvertToHostname`), and Docker Hub's is
//! `https://index.docker.io/v1/`, which also names `docker.io` and `registry-1.docker.io`.
//!
//! Pure: the file's text comes in, and nothing here reads a file or runs a helper. Errors name the
//! entry, never a password.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

use crate::secret::{Credentials, Secret};

/// The user name Docker sends with an identity token, which is a refresh token, not a password.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// What the file says to use for one registry host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerAuth {
    /// Run `docker-credential-<name>` (from `credHelpers` for the host, or `credsStore`).
    Helper(String),
    /// The credentials of the host's `auths` entry.
    Credentials(Credentials),
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    auths: BTreeMap<String, WireEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct WireEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// Finds what the file `text` says for `host` (`host[:port]`, or Docker Hub's name), as the Docker
/// CLI would. `Ok(None)` when the file has nothing for it.
///
/// # Errors
/// One line when the file is not such JSON, or the host's entry cannot be used (an `auth` that is
/// not base64 of `user:password`, an entry without credentials); never a password.
pub fn resolve(text: &str, host: &str) -> Result<Option<DockerAuth>, String> {
    // serde_json's errors may quote a value, which may be a password: keep only the position.
    let wire: Wire = serde_json::from_str(text).map_err(|e| {
        format!(
            "is not a Docker config file (JSON with \"auths\", \"credHelpers\", \"credsStore\"): line {} column {}",
            e.line(),
            e.column()
        )
    })?;
    let wanted = host_key(host);
    if let Some((_, helper)) = wire
        .cred_helpers
        .iter()
        .find(|(k, _)| host_key(k) == wanted)
    {
        return helper_name(helper).map(|h| Some(DockerAuth::Helper(h)));
    }
    if let Some(store) = wire.creds_store.as_deref().filter(|s| !s.is_empty()) {
        return helper_name(store).map(|h| Some(DockerAuth::Helper(h)));
    }
    let Some((key, entry)) = wire.auths.iter().find(|(k, _)| host_key(k) == wanted) else {
        return Ok(None);
    };
    entry
        .credentials(key)
        .map(|c| Some(DockerAuth::Credentials(c)))
}

/// The host a key names, compared case-insensitively: the scheme and any path dropped, and every
/// Docker Hub name folded into one.
fn host_key(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "index.docker.io".to_owned()
        }
        _ => host,
    }
}

fn helper_name(name: &str) -> Result<String, String> {
    if super::upstream::valid_helper_name(name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "names the credential helper {name:?}, which is not a helper name (letters, digits, '-', '_' and '.')"
        ))
    }
}

// === impl WireEntry ===

impl WireEntry {
    fn credentials(&self, key: &str) -> Result<Credentials, String> {
        if let Some(token) = self.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Credentials {
                username: IDENTITY_TOKEN_USER.to_owned(),
                password: Secret::new(token),
            });
        }
        if let Some(auth) = self.auth.as_deref().filter(|a| !a.is_empty()) {
            let bad = || format!("auths[{key:?}].auth is not base64 of user:password");
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad())?;
            let text = String::from_utf8(decoded).map_err(|_| bad())?;
            let (user, password) = text.split_once(':').ok_or_else(bad)?;
            if user.is_empty() || password.is_empty() {
                return Err(bad());
            }
            return Ok(Credentials {
                username: user.to_owned(),
                password: Secret::new(password),
            });
        }
        match (self.username.as_deref(), self.password.as_deref()) {
            (Some(user), Some(password)) if !user.is_empty() && !password.is_empty() => {
                Ok(Credentials {
                    username: user.to_owned(),
                    password: Secret::new(password),
                })
            }
            _ => Err(format!(
                "auths[{key:?}] holds no credentials (no auth, username and password, or identitytoken)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, password: &str) -> Option<DockerAuth> {
        Some(DockerAuth::Credentials(Credentials {
            username: user.into(),
            password: Secret::new(password),
        }))
    }

    #[test]
    fn resolution_table() {
        // base64("alice:pw:with:colons")
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:pw:with:colons");
        let hub = format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{b64}"}}}}}}"#);
        let cases: Vec<(String, &str, Option<DockerAuth>)> = vec![
            (hub.clone(), "docker.io", creds("alice", "pw:with:colons")),
            (hub.clone(), "registry-1.docker.io", creds("alice", "pw:with:colons")),
            (hub.clone(), "ghcr.io", None),
            (
                r#"{"auths":{"ghcr.io":{"username":"bob","password":"p"}}}"#.into(),
                "ghcr.io",
                creds("bob", "p"),
            ),
            (
                r#"{"auths":{"https://GHCR.io/v1/":{"username":"bob","password":"p"}}}"#.into(),
                "ghcr.io",
                creds("bob", "p"),
            ),
            (
                r#"{"auths":{"localhost:5001":{"identitytoken":"rt","username":"x","password":"y"}}}"#
                    .into(),
                "localhost:5001",
                creds("<token>", "rt"),
            ),
            (
                r#"{"auths":{"localhost:5001":{"username":"x","password":"y"}}}"#.into(),
                "localhost:5002",
                None,
            ),
            // credHelpers for the host beats credsStore, which beats auths.
            (
                r#"{"auths":{"a.io":{"username":"x","password":"y"}},"credsStore":"pass","credHelpers":{"a.io":"ecr-login"}}"#
                    .into(),
                "a.io",
                Some(DockerAuth::Helper("ecr-login".into())),
            ),
            (
                r#"{"auths":{"a.io":{"username":"x","password":"y"}},"credsStore":"pass","credHelpers":{"b.io":"ecr-login"}}"#
                    .into(),
                "a.io",
                Some(DockerAuth::Helper("pass".into())),
            ),
            (
                r#"{"auths":{"a.io":{"username":"x","password":"y"}},"credsStore":""}"#.into(),
                "a.io",
                creds("x", "y"),
            ),
            ("{}".into(), "a.io", None),
        ];
        for (text, host, want) in cases {
            assert_eq!(resolve(&text, host), Ok(want), "{text} {host}");
        }
    }

    #[test]
    fn refusals_never_show_the_password() {
        let cases = [
            (r#"{"auths":{"a.io":{"auth":"!!!"}}}"#, "is not base64"),
            (
                r#"{"auths":{"a.io":{"auth":"aHVudGVyMg=="}}}"#,
                "is not base64 of user:password",
            ),
            (r#"{"auths":{"a.io":{}}}"#, "holds no credentials"),
            (
                r#"{"auths":{"a.io":{"username":"hunter2"}}}"#,
                "holds no credentials",
            ),
            (r#"{"auths": "hunter2"}"#, "is not a Docker config file"),
            ("not json", "is not a Docker config file"),
            (r#"{"credsStore":"../bin/x"}"#, "not a helper name"),
        ];
        for (text, want) in cases {
            let got = resolve(text, "a.io").unwrap_err();
            assert!(got.contains(want), "{text}: {got}");
            assert!(!got.contains("hunter2"), "{got}");
        }
    }
}
