//! The one glob matcher of procwatch: `*` (any run) and `?` (any one character) over a whole
//! name. Alarm rules, the query API's `host`/`process` filters, the governor's pinned names
//! and the control channel's host and process globs all match through [`Glob`].

use serde::Deserialize;

/// Why a pattern from untrusted input was refused (the message says which cap).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GlobError(pub String);

/// Longest glob pattern accepted by [`Glob::parse`], in bytes.
pub const MAX_GLOB_LEN: usize = 128;
/// Most wildcards (`*` and `?`, after runs of `*` are merged) in one pattern.
pub const MAX_GLOB_WILDCARDS: usize = 16;

/// A `*`/`?` glob over a whole name (`*` any run, `?` any one character): the one glob
/// matcher of procwatch (alarm rules and the query API's `host`/`process` filters).
/// Matching is iterative with backtracking to the last `*` only, so it costs at most
/// O(len(name) × len(pattern)) steps and no recursion; [`Glob::parse`] caps the pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// A glob without the caps (patterns written by the operator); runs of `*` are merged.
    pub fn new(pattern: impl Into<String>) -> Self {
        let p: String = pattern.into();
        if !p.contains("**") {
            return Self(p);
        }
        let mut out = String::with_capacity(p.len());
        for c in p.chars() {
            if !(c == '*' && out.ends_with('*')) {
                out.push(c);
            }
        }
        Self(out)
    }

    /// A glob from untrusted input: at most [`MAX_GLOB_LEN`] bytes and
    /// [`MAX_GLOB_WILDCARDS`] wildcards (after runs of `*` are merged).
    pub fn parse(pattern: &str) -> Result<Self, GlobError> {
        if pattern.len() > MAX_GLOB_LEN {
            return Err(GlobError(format!(
                "pattern of {} bytes, at most {MAX_GLOB_LEN}",
                pattern.len()
            )));
        }
        let g = Self::new(pattern);
        let wild = g.0.chars().filter(|c| matches!(c, '*' | '?')).count();
        if wild > MAX_GLOB_WILDCARDS {
            return Err(GlobError(format!(
                "pattern with {wild} wildcards, at most {MAX_GLOB_WILDCARDS}"
            )));
        }
        Ok(g)
    }

    /// Whether `s` holds a wildcard (and is therefore matched as a glob, not exactly).
    pub fn is_pattern(s: &str) -> bool {
        s.contains(['*', '?'])
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        let p: Vec<char> = self.0.chars().collect();
        let s: Vec<char> = name.chars().collect();
        // Iterative wildcard match with backtracking to the last `*`.
        let (mut pi, mut si) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
                pi += 1;
                si += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some((pi, si));
                pi += 1;
            } else if let Some((sp, ss)) = star {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
}

impl Default for Glob {
    fn default() -> Self {
        Self::new("*")
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Glob::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        let cases = [
            ("*", "anything", true),
            ("*", "", true),
            ("web-*", "web-1", true),
            ("web-*", "db-1", false),
            ("web-?", "web-12", false),
            ("*java*", "/usr/bin/java", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("postgres", "postgres", true),
            ("postgres", "postgres2", false),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(Glob::new(pattern).matches(name), want, "{pattern} vs {name}");
        }
    }

    #[test]
    fn glob_caps_and_merged_stars() {
        assert_eq!(Glob::new("a***b**").as_str(), "a*b*");
        assert!(Glob::parse(&"*".repeat(60_000)).is_err(), "too long");
        assert!(Glob::parse(&"*a".repeat(17)).is_err(), "too many wildcards");
        let g = Glob::parse(&"*".repeat(100)).unwrap();
        assert!(g.matches("anything"));
        assert!(Glob::parse(&"*a".repeat(16)).is_ok());
        // The worst case of backtracking stays O(n·m): a long near-miss name.
        let g = Glob::parse(&format!("{}b", "*a".repeat(15))).unwrap();
        assert!(!g.matches(&"a".repeat(255)));
    }
}
