//! `[auth]`: who may use the mirror. The htpasswd file is read and checked when the configuration
//! is loaded, so a bad file stops wharf at start rather than refusing every client.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::{io_reason, KeyError};
use super::{err, Sources};

/// `[auth]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthConfig {
    /// An htpasswd file of bcrypt entries (`htpasswd`): when set, every `/v2/` request needs HTTP
    /// Basic credentials from it. The file was read and checked.
    pub htpasswd: Option<PathBuf>,
}

/// `[auth]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) htpasswd: Option<PathBuf>,
}

// === impl RawAuth ===

impl RawAuth {
    /// Checks `[auth]`: the htpasswd file (when set) is readable through `sources` and parses.
    ///
    /// # Errors
    /// The key refused.
    pub(super) fn validate(self, sources: &dyn Sources) -> Result<AuthConfig, KeyError> {
        let htpasswd = match self.htpasswd {
            Some(path) => {
                let text = sources.read(&path).map_err(|e| {
                    err(
                        "auth.htpasswd",
                        format!(
                            "cannot read {} ({}); create it with htpasswd -B -c {} USER",
                            path.display(),
                            io_reason(&e),
                            path.display()
                        ),
                    )
                })?;
                crate::access::htpasswd::parse(&text)
                    .map_err(|e| err("auth.htpasswd", format!("{}: {e}", path.display())))?;
                Some(path)
            }
            None => None,
        };
        Ok(AuthConfig { htpasswd })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_refusals, UP};

    #[test]
    fn auth_refusals_name_the_key() {
        let cases: Vec<(String, &str)> = vec![
            // Access, metrics, logs.
            (format!("[auth]\nhtpasswd = \"/missing\"\n{UP}"), "auth.htpasswd: cannot read /missing (no such file); create it with htpasswd -B -c /missing USER"),
            (
                format!("[auth]\nhtpasswd = \"/htpasswd-md5\"\n{UP}"),
                "auth.htpasswd: /htpasswd-md5: line 2: user \"bob\" has an MD5 ($apr1$) hash; only bcrypt is accepted",
            ),
            (format!("[auth]\nusers = \"x\"\n{UP}"), "auth.users: unknown key; valid keys here are htpasswd"),
        ];
        assert_refusals(&cases);
    }
}
