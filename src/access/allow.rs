//! Per-upstream allow lists: which repositories clients may pull through the mirror.
//!
//! A pattern is matched against the whole repository name at the upstream, segment by segment
//! (segments are separated by `/`):
//! - a plain segment matches itself exactly: `org/app` matches only `org/app`;
//! - `*` inside a segment matches any run of characters within that segment, never a `/`:
//!   `library/*` matches `library/nginx` but not `library/a/b`; `org/app-*` matches `org/app-web`;
//! - `**` as a whole segment matches any number of segments: `org/**/app` matches `org/app` and
//!   `org/x/y/app`; a trailing `/**` needs at least one, so `org/**` is everything under `org/`
//!   but not a repository named `org` itself; `**` alone matches every name.
//!
//! Patterns are normalised like the names clients send: on Docker Hub a one-segment pattern gets
//! `library/`, so `nginx` means `library/nginx` and `*` means every official image.

/// The patterns of one upstream; a name is allowed when any of them matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `**`: any number of segments.
    Any,
    /// A segment, possibly with `*` wildcards.
    Glob(String),
}

// === impl AllowList ===

impl AllowList {
    /// Parses an upstream's `allow` patterns; `docker_hub` adds `library/` to one-segment ones.
    ///
    /// # Errors
    /// The first pattern that is not valid, as a message with the fix.
    pub fn parse(patterns: &[String], docker_hub: bool) -> Result<Self, String> {
        if patterns.is_empty() {
            return Err("lists no pattern, which would refuse every repository; list patterns such as allow = [\"library/*\", \"org/**\"], or remove the key to allow all".into());
        }
        let patterns = patterns
            .iter()
            .map(|p| Pattern::parse(p, docker_hub))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// Whether `name` (the repository name at the upstream) is allowed.
    pub fn allows(&self, name: &str) -> bool {
        let segments: Vec<&str> = name.split('/').collect();
        self.patterns.iter().any(|p| p.matches(&segments))
    }
}

// === impl Pattern ===

impl Pattern {
    fn parse(text: &str, docker_hub: bool) -> Result<Self, String> {
        let fix = "use lower-case repository names with * (within a segment) and ** (any segments), e.g. \"library/*\" or \"org/**\"";
        if text.is_empty() {
            return Err(format!("{text:?} is empty; {fix}"));
        }
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-*/".contains(c);
        if let Some(bad) = text.chars().find(|c| !ok_char(*c)) {
            return Err(format!(
                "{text:?} has {bad:?}, which no repository name has; {fix}"
            ));
        }
        let mut segments = Vec::new();
        for seg in text.split('/') {
            segments.push(match seg {
                "" => {
                    return Err(format!(
                        "{text:?} has an empty segment (a leading, trailing or double /); {fix}"
                    ))
                }
                "**" => Segment::Any,
                s if s.contains("**") => {
                    return Err(format!(
                        "{text:?}: ** must be a whole segment (as in org/**); {fix}"
                    ))
                }
                s => Segment::Glob(s.to_owned()),
            });
        }
        if docker_hub && segments.len() == 1 && segments[0] != Segment::Any {
            segments.insert(0, Segment::Glob("library".into()));
        }
        Ok(Self { segments })
    }

    fn matches(&self, name: &[&str]) -> bool {
        match_segments(&self.segments, name)
    }
}

fn match_segments(pattern: &[Segment], name: &[&str]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((Segment::Any, [])) => !name.is_empty(),
        Some((Segment::Any, rest)) => {
            (0..=name.len()).any(|skip| match_segments(rest, &name[skip..]))
        }
        Some((Segment::Glob(glob), rest)) => name
            .split_first()
            .is_some_and(|(first, tail)| match_glob(glob, first) && match_segments(rest, tail)),
    }
}

/// `*` matches any run of characters; everything else matches itself. Greedy with one backtrack
/// point, so linear in practice.
fn match_glob(glob: &str, text: &str) -> bool {
    let (g, t) = (glob.as_bytes(), text.as_bytes());
    let (mut gi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && g[gi] == b'*' {
            star = Some((gi, ti));
            gi += 1;
        } else if gi < g.len() && g[gi] == t[ti] {
            gi += 1;
            ti += 1;
        } else if let Some((sg, st)) = star {
            gi = sg + 1;
            ti = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str], hub: bool) -> AllowList {
        AllowList::parse(
            &patterns.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>(),
            hub,
        )
        .unwrap()
    }

    #[test]
    fn glob_semantics() {
        let cases: &[(&str, &str, bool)] = &[
            ("org/app", "org/app", true),
            ("org/app", "org/app2", false),
            ("org/app", "org/app/x", false),
            ("org/app", "org", false),
            ("library/*", "library/nginx", true),
            ("library/*", "library/a/b", false),
            ("library/*", "library", false),
            ("library/*", "other/nginx", false),
            ("org/app-*", "org/app-web", true),
            ("org/app-*", "org/app-", true),
            ("org/app-*", "org/app", false),
            ("org/*-web", "org/app-web", true),
            ("org/*-web", "org/app-web2", false),
            ("org/a*b*c", "org/aXbYc", true),
            ("org/a*b*c", "org/abbbc", true),
            ("org/a*b*c", "org/acb", false),
            ("*/*", "a/b", true),
            ("*/*", "a", false),
            ("org/**", "org/a", true),
            ("org/**", "org/a/b/c", true),
            ("org/**", "org", false),
            ("org/**", "orgs/a", false),
            ("org/**/app", "org/app", true),
            ("org/**/app", "org/x/y/app", true),
            ("org/**/app", "org/x/y/app2", false),
            ("**/app", "app", true),
            ("**/app", "a/b/app", true),
            ("**", "anything/at/all", true),
            ("**", "x", true),
            ("a/**/b/**", "a/b/c", true),
            ("a/**/b/**", "a/b", false),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(
                list(&[pattern], false).allows(name),
                *want,
                "{pattern} vs {name}"
            );
        }
    }

    #[test]
    fn docker_hub_one_segment_patterns_get_library() {
        let l = list(&["nginx", "org/*"], true);
        assert!(l.allows("library/nginx"));
        assert!(!l.allows("nginx"));
        assert!(l.allows("org/app"));
        let star = list(&["*"], true);
        assert!(star.allows("library/redis") && !star.allows("org/app"));
        assert!(list(&["**"], true).allows("org/app"));
        // Elsewhere one segment is one segment.
        assert!(list(&["nginx"], false).allows("nginx"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for (patterns, want) in [
            (vec![], "lists no pattern"),
            (vec![""], "is empty"),
            (vec!["Org/app"], "has 'O'"),
            (vec!["org/app?"], "has '?'"),
            (vec!["org//app"], "empty segment"),
            (vec!["/org"], "empty segment"),
            (vec!["org/"], "empty segment"),
            (vec!["org/a**"], "** must be a whole segment"),
            (vec!["ok/*", "***"], "** must be a whole segment"),
        ] {
            let patterns: Vec<String> = patterns.into_iter().map(str::to_owned).collect();
            let got = AllowList::parse(&patterns, false).unwrap_err();
            assert!(got.contains(want), "{patterns:?}: {got}");
            assert!(got.contains("; "), "{got} has no fix");
        }
    }
}
