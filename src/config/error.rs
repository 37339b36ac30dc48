//! The one-line refusal: [`ConfigError`], what each section's check returns ([`KeyError`]), and
//! toml's own errors turned into the same shape ([`TomlError`]).
//!
//! Every refusal prints as one line, `<file>: <key>: <problem>; <fix>` (or `<file>: line N: ...`
//! when the key cannot be told), because the operator reads it in `journalctl` at 3 a.m. The
//! parts are kept apart so callers and tests can ask which key and which fix without parsing the
//! line; no part ever holds a password or a value toml quoted from the file.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration the operator must fix. Its `Display` is one line:
/// `<file>: <key>: <problem>; <fix>` (or `<file>: line N: ...` when the key cannot be told).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file itself cannot be read.
    #[error("{}: cannot read the file ({reason}); {fix}", file.display())]
    Unreadable {
        /// The file.
        file: PathBuf,
        /// Why, in a few words (`no such file`, `permission denied`).
        reason: String,
        /// What to do, which depends on the command that read it.
        fix: &'static str,
    },
    /// The text is not TOML, or not the shape of a configuration (unknown key, wrong type).
    #[error("{}: {error}", file.display())]
    Toml {
        /// The file.
        file: PathBuf,
        /// Where and what.
        error: TomlError,
    },
    /// A section refused a key's value.
    #[error("{}: {error}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The key, the problem and the fix.
        error: KeyError,
    },
}

/// A key whose value its section refuses: `<key>: <problem>; <fix>`. Section checks return it;
/// [`ConfigError::Invalid`] adds the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The dotted key, with array indexes (`server.listen`, `upstream[1].url`, `sync[0]`).
    pub key: String,
    /// What is wrong with the value (never the value itself when it may be a secret).
    pub problem: String,
    /// What to write instead; `None` only when the problem says it all.
    pub fix: Option<String>,
}

/// toml's error as one line: the dotted key or the line number, the problem, the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlError {
    /// Where the problem is, when it can be told.
    pub at: Option<TomlLocation>,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

/// Where in the file a [`TomlError`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TomlLocation {
    /// A dotted key (`server.listen`, `upstream[1].colour`).
    Key(String),
    /// A line number, from 1, when the key cannot be told.
    Line(usize),
}

// === impl ConfigError ===

impl ConfigError {
    /// The file cannot be read: `reason` from the I/O error, `fix` from the command.
    pub(super) fn unreadable(file: &Path, e: &std::io::Error, fix: &'static str) -> Self {
        Self::Unreadable {
            file: file.to_owned(),
            reason: io_reason(e),
            fix,
        }
    }

    /// The file the problem is in.
    pub fn file(&self) -> &Path {
        match self {
            Self::Unreadable { file, .. }
            | Self::Toml { file, .. }
            | Self::Invalid { file, .. } => file,
        }
    }

    /// The dotted key the problem is at, when it can be told.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Unreadable { .. } => None,
            Self::Toml { error, .. } => match &error.at {
                Some(TomlLocation::Key(key)) => Some(key),
                _ => None,
            },
            Self::Invalid { error, .. } => Some(&error.key),
        }
    }

    /// What the operator should do.
    pub fn fix(&self) -> Option<&str> {
        match self {
            Self::Unreadable { fix, .. } => Some(fix),
            Self::Toml { error, .. } => Some(&error.fix),
            Self::Invalid { error, .. } => error.fix.as_deref(),
        }
    }
}

// === impl KeyError ===

impl KeyError {
    /// A refusal of `key` from a message written as `<problem>; <fix>` (the fix starts at the
    /// first `"; "`, as every message in this module and in the parsers it calls writes it).
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        let (problem, fix) = match message.split_once("; ") {
            Some((problem, fix)) => (problem.to_owned(), Some(fix.to_owned())),
            None => (message, None),
        };
        Self {
            key: key.into(),
            problem,
            fix,
        }
    }

    /// The same refusal in `file`.
    pub fn in_file(self, file: &Path) -> ConfigError {
        ConfigError::Invalid {
            file: file.to_owned(),
            error: self,
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)?;
        if let Some(fix) = &self.fix {
            write!(f, "; {fix}")?;
        }
        Ok(())
    }
}

impl std::error::Error for KeyError {}

// === impl TomlError ===

impl TomlError {
    /// toml's error in the operator's words, located in `text`.
    ///
    /// toml's own `Display` spans several lines and quotes the source, and its messages quote
    /// values; only the message's shape and the span are used here, so no value from the file is
    /// repeated.
    pub fn new(text: &str, e: &toml::de::Error) -> Self {
        let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
        let at = e.span().map(|span| char_floor(text, span.start));
        let (named, problem, fix) = describe(&message);
        let key = at.and_then(|at| key_path(text, at, named.as_deref()));
        let fix = fix.unwrap_or_else(|| {
            // Checked here because it needs the key: `[upstream]` written with one pair of brackets.
            if key.as_deref() == Some("upstream") {
                "write each upstream as [[upstream]], with two pairs of brackets".into()
            } else {
                type_fix(&message, key.as_deref())
            }
        });
        let at = match (key, at) {
            (Some(key), _) => Some(TomlLocation::Key(key)),
            (None, Some(at)) => Some(TomlLocation::Line(text[..at].matches('\n').count() + 1)),
            (None, None) => None,
        };
        Self { at, problem, fix }
    }
}

impl fmt::Display for TomlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(TomlLocation::Key(key)) => write!(f, "{key}: ")?,
            Some(TomlLocation::Line(n)) => write!(f, "line {n}: ")?,
            None => {}
        }
        write!(f, "{}; {}", self.problem, self.fix)
    }
}

impl std::error::Error for TomlError {}

/// An I/O error in a few words, for messages.
pub(super) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "it is a directory".into(),
        _ => e.to_string(),
    }
}

// === TOML errors ===

/// From toml's message: the key the span points at (when the message names it), the problem, and
/// the fix when it does not depend on the key.
fn describe(message: &str) -> (Option<String>, String, Option<String>) {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let fix = if valid.is_empty() {
            "remove it".to_owned()
        } else {
            format!("valid keys here are {}", valid.join(", "))
        };
        return (Some(field.to_owned()), "unknown key".into(), Some(fix));
    }
    if let Some(rest) = message.strip_prefix("duplicate key `") {
        let field = rest.split_once('`').map_or(rest, |(f, _)| f);
        return (
            Some(field.to_owned()),
            "is set twice".into(),
            Some("keep one".into()),
        );
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // "integer `5000`, expected a string": name the kinds, never the value.
            let (found, expected) = rest.rsplit_once(", expected ").unwrap_or((rest, "?"));
            let found = found.split(['`', '"']).next().unwrap_or(found).trim();
            let problem = if prefix.starts_with("invalid type") {
                format!("is {}, expected {}", plain(found), plain(expected))
            } else {
                format!("is out of range for {}", plain(expected))
            };
            return (None, problem, None);
        }
    }
    (
        None,
        message.to_owned(),
        Some("fix the TOML syntax (see https://toml.io)".into()),
    )
}

/// A serde type description in the operator's words.
fn plain(kind: &str) -> String {
    let kind = kind.trim();
    let bare = kind.trim_start_matches("a ").trim_start_matches("an ");
    match bare {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        "string" => "a string".into(),
        "boolean" => "a boolean".into(),
        "integer" | "usize" | "u16" | "u32" | "u64" | "i64" => "a whole number".into(),
        "floating point" => "a number with a fraction".into(),
        _ if bare.starts_with("struct ") => "a table".into(),
        _ => kind.into(),
    }
}

/// The fix for a type mismatch, which depends on what was expected and, for durations, on the key.
fn type_fix(message: &str, key: Option<&str>) -> String {
    let expected = message.rsplit_once(", expected ").map_or("", |(_, e)| e);
    let last = key.and_then(|k| k.rsplit('.').next()).unwrap_or("");
    match plain(expected).as_str() {
        "a string"
            if matches!(
                last,
                "tag_ttl"
                    | "negative_ttl"
                    | "connect_timeout"
                    | "timeout"
                    | "fill_wait"
                    | "shutdown_grace"
                    | "header_read_timeout"
                    | "idle_timeout"
                    | "min_rate_window"
                    | "write_error_pause"
                    | "manifest_retention"
                    | "interval"
            ) =>
        {
            format!("durations are quoted strings with a unit, e.g. {last} = \"30s\"")
        }
        "a string" if matches!(last, "max_size" | "min_free" | "min_rate") => {
            format!("sizes are quoted strings with a unit, e.g. {last} = \"50GiB\"")
        }
        "a string" => "put the value in double quotes".into(),
        "a list" => "use a list, e.g. [\"auth.example.com\"]".into(),
        "a whole number" => "write a whole number without quotes, e.g. 16".into(),
        "a boolean" => "write true or false, without quotes".into(),
        _ => "see the commented config.toml in the repository for every key".into(),
    }
}

/// The dotted key path (`server.listen`, `upstream[1].colour`) at byte offset `at`: the `[table]`
/// or `[[array]]` header above it plus the key on its line. `named` is the key the span starts at,
/// when toml's message names it. Best effort: `None` sends the caller to a line number.
fn key_path(text: &str, at: usize, named: Option<&str>) -> Option<String> {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let prefix = &text[line_start..at];
    let mut path;
    if line.trim_start().starts_with('[') {
        // The span is in a table header: the header alone says where.
        let header = prefix.trim_start().trim_start_matches('[');
        path = match named {
            Some(field) => {
                let mut p = segments(header);
                p.push(field.to_owned());
                p
            }
            None => segments(header_name(line)?.0),
        };
    } else {
        path = table_at(&text[..line_start]);
        path.extend(inline_path(prefix, named)?);
    }
    (!path.is_empty()).then(|| path.join("."))
}

/// The table the line after `before` is in, as path segments; `[[name]]` becomes `name[index]`.
fn table_at(before: &str) -> Vec<String> {
    let mut table = Vec::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for line in before.lines() {
        let Some((name, array)) = header_name(line) else {
            continue;
        };
        table = segments(name);
        if array {
            let n = counts
                .entry(table.join("."))
                .and_modify(|c| *c += 1)
                .or_insert(0);
            if let Some(last) = table.last_mut() {
                *last = format!("{last}[{n}]");
            }
        }
    }
    table
}

/// The name inside a `[table]` or `[[array]]` header line, and whether it is an array.
fn header_name(line: &str) -> Option<(&str, bool)> {
    let line = line.trim_start();
    if let Some(rest) = line.strip_prefix("[[") {
        return rest.split_once("]]").map(|(name, _)| (name, true));
    }
    let rest = line.strip_prefix('[')?;
    rest.split_once(']').map(|(name, _)| (name, false))
}

/// The key path within one line up to the span: dotted keys and inline tables
/// (`server = { listen = ` gives `server.listen`).
fn inline_path(prefix: &str, named: Option<&str>) -> Option<Vec<String>> {
    let parts: Vec<&str> = prefix.split('{').collect();
    let last = parts.len() - 1;
    let mut path = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let item = part.rsplit(',').next().unwrap_or(part);
        match named {
            Some(field) if i == last => {
                path.extend(segments(item));
                path.push(field.to_owned());
            }
            _ => path.extend(segments(item.split_once('=')?.0)),
        }
    }
    Some(path)
}

/// `a . "b"` → `["a", "b"]`.
fn segments(key: &str) -> Vec<String> {
    key.split('.')
        .map(|s| s.trim().trim_matches(['"', '\'']))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The largest char boundary at or below `at`, within `text`.
fn char_floor(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_refusals, UP};

    #[test]
    fn toml_refusals_name_the_key() {
        let up = |rest: &str| format!("[[upstream]]\nname = \"a.io\"\n{rest}\n");
        let cases: Vec<(String, &str)> = vec![
            // Unknown keys at every level, however the TOML is written.
            (
                format!("[server]\nlisen = \"x\"\n{UP}"),
                "server.lisen: unknown key; valid keys here are listen",
            ),
            (
                format!("server.lisen = \"x\"\n{UP}"),
                "server.lisen: unknown key; valid keys here are listen",
            ),
            (
                format!("server = {{ lisen = \"x\" }}\n{UP}"),
                "server.lisen: unknown key; valid keys here are listen",
            ),
            (
                format!("[storage]\npth = \"x\"\n{UP}"),
                "storage.pth: unknown key; valid keys here are path",
            ),
            (
                format!("[cache]\nttl = \"5m\"\n{UP}"),
                "cache.ttl: unknown key; valid keys here are tag_ttl",
            ),
            (
                format!("[servr]\nlisten = \"x\"\n{UP}"),
                "servr: unknown key; valid keys here are server, storage, cache, upstream",
            ),
            (
                format!("[server.tls]\ncert = \"x\"\n{UP}"),
                "server.tls: unknown key; valid keys here are listen",
            ),
            (
                format!("{UP}colour = \"blue\"\n"),
                "upstream[0].colour: unknown key; valid keys here are name, url, default,",
            ),
            (
                format!("{UP}[[upstream]]\nname = \"b.io\"\npassword = \"hunter2\"\n"),
                "upstream[1].password: unknown key;",
            ),
            // Wrong types and TOML syntax.
            (
                format!("[server]\nlisten = 5000\n{UP}"),
                "server.listen: is a whole number, expected a string; put the value in double quotes",
            ),
            (
                format!("[cache]\ntag_ttl = 300\n{UP}"),
                "cache.tag_ttl: is a whole number, expected a string; durations are quoted strings",
            ),
            (
                format!("[server]\nlisten = \"a:1\"\nlisten = \"b:1\"\n{UP}"),
                "server.listen: is set twice; keep one",
            ),
            (
                "[upstream]\nname = \"a.io\"\n".into(),
                "upstream: is a table, expected a list; write each upstream as [[upstream]]",
            ),
            (up("url = \"https://a.io\"\ndefault = \"yes\""), "upstream[0].default: is a string, expected a boolean"),
            (format!("{UP}max_fills = -1\n"), "upstream[0].max_fills: is out of range"),
            (
                format!("{UP}token_realms = \"hunter2\"\n"),
                "upstream[0].token_realms: is a string, expected a list",
            ),
            ("[server\n".into(), "line 1: invalid table header"),
        ];
        assert_refusals(&cases);
    }
}
