//! Values that must never be printed: upstream passwords and tokens.
//!
//! `Secret` has no `Display`, and its `Debug` prints `<redacted>`, so a secret cannot reach a log line,
//! an error message or a response by accident; reading it takes an explicit [`Secret::expose`].

use std::fmt;

/// A string that is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// A username and password for an upstream registry or its token realm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The username, which is not secret and may be logged.
    pub username: String,
    /// The password or access token.
    pub password: Secret,
}

// === impl Secret ===

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret a file holds: its text without one trailing line ending (as `echo` and editors
    /// write it; anything else is the secret); `None` when nothing is left.
    pub fn from_file_text(text: &str) -> Option<Self> {
        let text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        (!text.is_empty()).then(|| Self::new(text))
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let creds = Credentials {
            username: "alice".into(),
            password: Secret::new("hunter2"),
        };
        let printed = format!("{creds:?} {:?}", creds.password);
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("alice"));
        assert_eq!(creds.password.expose(), "hunter2");
    }
}
