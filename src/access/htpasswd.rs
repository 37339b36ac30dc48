//! The htpasswd file: `user:hash` lines, as Apache's `htpasswd -B` writes them.
//!
//! Only bcrypt hashes (`$2y$`, `$2b$`, `$2a$`) are accepted. The other kinds htpasswd can write
//! (MD5 `$apr1$`, `{SHA}`, crypt, plain text) are fast to brute-force, so a file holding one is
//! refused with its line number rather than half-used. Blank lines and lines starting with `#` are
//! skipped, as Apache does.

use std::collections::HashMap;
use std::fmt;

/// The users and their bcrypt hashes.
#[derive(Clone, Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// A hash checked for unknown users, so that answering them costs as much as answering a
    /// known user (the costliest entry's hash: a password never matches it, as the user differs).
    decoy: Option<String>,
}

/// A line of the file that is not a usable entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct HtpasswdError {
    /// 1-based.
    pub line: usize,
    /// What is wrong, and the fix. Never quotes the hash.
    pub problem: String,
}

/// The bcrypt costs htpasswd can write (`-C 4` to `-C 17`).
const COSTS: std::ops::RangeInclusive<u32> = 4..=17;

/// Parses the file's text.
///
/// # Errors
/// The first line that is not a `user:bcrypt-hash` entry.
pub fn parse(text: &str) -> Result<Htpasswd, HtpasswdError> {
    let mut users = HashMap::new();
    let mut decoy: Option<(u32, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let fail = |problem: String| HtpasswdError { line: n, problem };
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err(fail(
                "is not user:hash; add users with htpasswd -B FILE USER".into(),
            ));
        };
        if user.is_empty() {
            return Err(fail(
                "has an empty user name; add users with htpasswd -B FILE USER".into(),
            ));
        }
        let cost = bcrypt_cost(hash).map_err(|kind| {
            fail(format!(
                "user {user:?} has {kind}; only bcrypt is accepted: set the password again with htpasswd -B FILE {user}"
            ))
        })?;
        if !COSTS.contains(&cost) {
            return Err(fail(format!(
                "user {user:?} has a bcrypt cost of {cost}, outside htpasswd's 4 to 17; set the password again with htpasswd -B -C 10 FILE {user}"
            )));
        }
        if users.insert(user.to_owned(), hash.to_owned()).is_some() {
            return Err(fail(format!(
                "user {user:?} is listed twice; keep one line per user"
            )));
        }
        if decoy.as_ref().is_none_or(|(c, _)| cost > *c) {
            decoy = Some((cost, hash.to_owned()));
        }
    }
    Ok(Htpasswd {
        users,
        decoy: decoy.map(|(_, h)| h),
    })
}

/// The cost of a well-formed bcrypt hash, or what kind of hash it is instead.
fn bcrypt_cost(hash: &str) -> Result<u32, &'static str> {
    let Some(rest) = ["$2y$", "$2b$", "$2a$"]
        .iter()
        .find_map(|p| hash.strip_prefix(p))
    else {
        return Err(match hash {
            h if h.starts_with("$apr1$") => "an MD5 ($apr1$) hash",
            h if h.starts_with("{SHA}") => "a SHA-1 ({SHA}) hash",
            h if h.starts_with("$1$") => "an MD5-crypt ($1$) hash",
            h if h.starts_with("$5$") || h.starts_with("$6$") => "a SHA-crypt ($5$/$6$) hash",
            h if h.starts_with("$2") => "an unsupported bcrypt variant",
            h if h.len() == 13 => "a DES crypt hash",
            "" => "no hash",
            _ => "a plain-text password or an unknown hash",
        });
    };
    let malformed = "a malformed bcrypt hash";
    let (cost, tail) = rest.split_once('$').ok_or(malformed)?;
    let salt_and_hash_ok = tail.len() == 53
        && tail
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    if cost.len() != 2 || !salt_and_hash_ok {
        return Err(malformed);
    }
    cost.parse().map_err(|_| malformed)
}

// === impl Htpasswd ===

impl Htpasswd {
    /// How many users there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there is no user (nobody can log in).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `password` is `user`'s. Costs one bcrypt computation whether or not the user exists,
    /// so the time taken does not tell which users do; bcrypt compares its output in constant
    /// time. CPU-heavy (milliseconds to a second, by the entry's cost): run it off the async workers.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                if let Some(decoy) = &self.decoy {
                    let _ = bcrypt::verify(password, decoy);
                }
                false
            }
        }
    }
}

impl fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hashes stay out of logs: they can be attacked offline.
        f.debug_struct("Htpasswd")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `htpasswd -nbB alice secret` (cost 5, Apache's `$2y$`).
    const ALICE: &str = "alice:$2y$05$EZG4xhUA92UnLFhvFGPVr.x8YeYSraDvJIyr7tE7BTMQaf4LP0.gu";

    #[test]
    fn bcrypt_entries_verify() {
        let bob = bcrypt::hash("hunter2", 4).unwrap();
        let text = format!("# users\n\n{ALICE}\r\nbob:{bob}\n");
        let h = parse(&text).unwrap();
        assert_eq!(h.len(), 2);
        assert!(h.verify("bob", b"hunter2"));
        assert!(!h.verify("bob", b"hunter3"));
        assert!(!h.verify("bob", b""));
        assert!(!h.verify("carol", b"hunter2"));
        assert!(!h.verify("Bob", b"hunter2"));
        assert!(!format!("{h:?}").contains("$2"), "{h:?}");
    }

    #[test]
    fn apache_hash_verifies() {
        let h = parse(ALICE).unwrap();
        assert!(h.verify("alice", b"secret"), "htpasswd -B output");
        assert!(!h.verify("alice", b"Secret"));
    }

    #[test]
    fn other_kinds_are_refused_with_the_line() {
        let good = bcrypt::hash("x", 4).unwrap();
        let cases: &[(String, &str)] = &[
            (format!("a:{good}\nb:$apr1$abc$def\n"), "line 2: user \"b\" has an MD5 ($apr1$) hash; only bcrypt is accepted: set the password again with htpasswd -B FILE b"),
            ("b:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=".into(), "line 1: user \"b\" has a SHA-1 ({SHA}) hash"),
            ("b:abcdefghijklm".into(), "line 1: user \"b\" has a DES crypt hash"),
            ("b:$6$salt$hash".into(), "line 1: user \"b\" has a SHA-crypt"),
            ("b:hunter2".into(), "line 1: user \"b\" has a plain-text password"),
            ("b:".into(), "line 1: user \"b\" has no hash"),
            ("b:$2y$05$short".into(), "line 1: user \"b\" has a malformed bcrypt hash"),
            (format!("b:{}", good.replacen("$04$", "$4$", 1)), "malformed bcrypt hash"),
            (format!("b:{}", good.replacen("$04$", "$31$", 1)), "bcrypt cost of 31"),
            (format!("b:{}", good.replacen("$04$", "$03$", 1)), "bcrypt cost of 3"),
            (format!("\n\nb:{good}\nb:{good}\n"), "line 4: user \"b\" is listed twice"),
            ("just-a-name".into(), "line 1: is not user:hash"),
            (format!(":{good}"), "line 1: has an empty user name"),
        ];
        for (text, want) in cases {
            let got = parse(text).unwrap_err().to_string();
            assert!(got.starts_with("line "), "{got}");
            assert!(got.contains(want), "{text:?}: want {want:?} in {got:?}");
            assert!(!got.contains("hunter2") && !got.contains("W6ph5"), "{got}");
        }
    }

    #[test]
    fn an_empty_file_has_no_users() {
        let h = parse("\n# nobody yet\n").unwrap();
        assert!(h.is_empty());
        assert!(!h.verify("anyone", b"x"));
    }
}
