//! Path policies in Vault's HCL syntax, and the matcher that decides every request.
//!
//! Why one file of about 550 lines: the parser and the matcher share the pattern type and the
//! decision rules (480 lines of code); the rest is tests.
//!
//! A policy is a list of rules `path "<pattern>" { capabilities = [...] }`. Patterns are exact
//! paths, may end in `*` (prefix glob) and may contain `+` segments (exactly one segment).
//!
//! Decision for a path, over all of a token's policies:
//! 1. no rule matches: denied (default deny);
//! 2. any matching rule holds `deny`: denied. This is stricter than Vault, where a more specific
//!    grant can override a broader deny: here a deny can never be undone by another rule, so a
//!    reviewer can read one `deny` line and know it holds;
//! 3. otherwise the highest-priority matching pattern decides (Vault's priority rules, see
//!    [`priority`]); rules with the same pattern in several policies add up.
//!
//! Policies are compiled when they are applied (see `Core`), so a check is pure computation.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use hcl::expr::Expression;
use hcl::structure::BlockLabel;

use crate::{Error, Result};

/// The policy that allows everything; only root tokens hold it.
pub const ROOT_POLICY: &str = "root";
/// The policy every token gets unless created without it: self-service on its own token.
pub const DEFAULT_POLICY: &str = "default";
/// Longest accepted policy name.
pub const MAX_POLICY_NAME: usize = 128;
/// Largest accepted policy document.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// The text of the built-in `default` policy (Vault's token self-service paths).
pub const DEFAULT_POLICY_HCL: &str = r#"# Every token holds this policy unless it was created with --no-default-policy.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/revoke-self" {
  capabilities = ["update"]
}
path "sys/capabilities-self" {
  capabilities = ["update"]
}
path "sys/internal/ui/mounts/*" {
  capabilities = ["read"]
}
"#;

/// One capability. The discriminant is its bit in [`Caps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Capability {
    Create = 1,
    Read = 2,
    Update = 4,
    Delete = 8,
    List = 16,
    Sudo = 32,
    Deny = 64,
}

impl Capability {
    pub const ALL: [Capability; 7] = [
        Capability::Create,
        Capability::Read,
        Capability::Update,
        Capability::Delete,
        Capability::List,
        Capability::Sudo,
        Capability::Deny,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Capability::Create => "create",
            Capability::Read => "read",
            Capability::Update => "update",
            Capability::Delete => "delete",
            Capability::List => "list",
            Capability::Sudo => "sudo",
            Capability::Deny => "deny",
        }
    }

    pub fn parse(s: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == s)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of capabilities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Caps(pub u8);

impl Caps {
    pub const NONE: Caps = Caps(0);
    /// Everything but deny: what the root policy grants.
    pub const ROOT: Caps = Caps(1 | 2 | 4 | 8 | 16 | 32);

    pub fn of(caps: &[Capability]) -> Caps {
        Caps(caps.iter().fold(0, |acc, c| acc | *c as u8))
    }

    pub fn has(self, c: Capability) -> bool {
        self.0 & c as u8 != 0
    }

    pub fn union(self, other: Caps) -> Caps {
        Caps(self.0 | other.0)
    }

    pub fn list(self) -> Vec<Capability> {
        Capability::ALL.into_iter().filter(|c| self.has(*c)).collect()
    }

    /// Capability names, or `["deny"]` for the empty set (as Vault's capabilities endpoint does).
    pub fn names(self) -> Vec<String> {
        match self.list() {
            l if l.is_empty() => vec!["deny".into()],
            l => l.into_iter().map(|c| c.name().to_string()).collect(),
        }
    }
}

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    /// Segments of the pattern without its trailing `*`.
    segments: Vec<String>,
    glob: bool,
    /// Byte offset of the first `+` segment or the trailing `*`, for priority.
    first_wildcard: Option<usize>,
    plus_segments: usize,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern> {
        let bad = |why: &str| Err(Error::InvalidArgument(format!("invalid policy path {text:?}: {why}")));
        if text.is_empty() {
            return bad("empty");
        }
        if text.starts_with('/') {
            return bad("paths are relative, without a leading '/' (e.g. \"secret/data/app/*\")");
        }
        let (body, glob) = match text.strip_suffix('*') {
            Some(b) => (b, true),
            None => (text, false),
        };
        if body.contains('*') {
            return bad("'*' is only allowed at the end");
        }
        if glob && (body == "+" || body.ends_with("/+")) {
            return bad("'+*' is ambiguous; write '+/*' for everything under one segment");
        }
        let segments: Vec<String> = body.split('/').map(str::to_string).collect();
        let mut first_wildcard = glob.then_some(body.len());
        let mut offset = 0;
        let mut plus_segments = 0;
        for (i, seg) in segments.iter().enumerate() {
            if seg.contains('+') && seg != "+" {
                return bad("'+' must be a whole segment");
            }
            if seg == "+" {
                plus_segments += 1;
                first_wildcard = Some(first_wildcard.map_or(offset, |w| w.min(offset)));
            }
            if seg.is_empty() && i + 1 < segments.len() {
                return bad("empty segment");
            }
            offset += seg.len() + 1;
        }
        Ok(Pattern { text: text.to_string(), segments, glob, first_wildcard, plus_segments })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `path` matches. `+` matches exactly one segment; a trailing `*` matches any
    /// remainder, including further segments. No allocation: this runs for every rule a token's
    /// policies hold, on every request.
    pub fn matches(&self, path: &str) -> bool {
        // Everything before the first wildcard is literal: most rules fail right here.
        let literal = &self.text[..self.first_wildcard.unwrap_or(self.text.len())];
        if !path.starts_with(literal) {
            return false;
        }
        if self.first_wildcard.is_none() {
            return path.len() == literal.len();
        }
        // `Some(rest)`: segments remain (possibly one empty one); `None`: the path is used up.
        let mut rest = Some(path);
        let last = self.segments.len() - 1;
        for (i, seg) in self.segments.iter().enumerate() {
            let Some(r) = rest else { return false };
            if i == last && self.glob {
                return r.starts_with(seg.as_str());
            }
            let (part, after) = match r.split_once('/') {
                Some((part, after)) => (part, Some(after)),
                None => (r, None),
            };
            if seg != "+" && part != seg {
                return false;
            }
            rest = after;
        }
        rest.is_none()
    }
}

/// Vault's priority between two patterns that both match a path: `Greater` means `a` wins.
///
/// `a` is lower priority when (in order): its first wildcard (`+` or `*`) comes earlier; it ends
/// in `*` and `b` does not; it has more `+` segments; it is shorter; it is lexicographically
/// smaller.
pub fn priority(a: &Pattern, b: &Pattern) -> Ordering {
    let wildcard = |p: &Pattern| p.first_wildcard.unwrap_or(usize::MAX);
    wildcard(a)
        .cmp(&wildcard(b))
        .then_with(|| b.glob.cmp(&a.glob))
        .then_with(|| b.plus_segments.cmp(&a.plus_segments))
        .then_with(|| a.text.len().cmp(&b.text.len()))
        .then_with(|| a.text.cmp(&b.text))
}

/// One `path` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub pattern: Pattern,
    pub caps: Caps,
}

/// A parsed, compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub text: String,
    pub rules: Vec<Rule>,
}

/// Checks a policy name: 1 to 128 characters of `[a-z0-9._-]`.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_POLICY_NAME {
        return Err(Error::InvalidArgument(format!("policy name must be 1 to {MAX_POLICY_NAME} characters")));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(*c))) {
        return Err(Error::InvalidArgument(format!(
            "policy name {name:?}: character {c:?} is not allowed (use a-z, 0-9, '.', '_', '-')"
        )));
    }
    Ok(())
}

fn string_list(expr: &Expression, what: &str) -> Result<Vec<String>> {
    let bad = || Error::InvalidArgument(format!("{what} must be a list of strings"));
    match expr {
        Expression::Array(items) => items
            .iter()
            .map(|e| match e {
                Expression::String(s) => Ok(s.clone()),
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
    }
}

/// The parser's multi-line report (location, source excerpt, reason) as one line.
fn one_line(report: &str) -> String {
    let location =
        report.lines().find_map(|l| l.trim().strip_prefix("--> ")).map(|l| l.replace("HCL parse error in ", ""));
    let reason = report.lines().find_map(|l| l.trim().strip_prefix("= "));
    match (location, reason) {
        (Some(l), Some(r)) => format!("{l}: {r}"),
        _ => report.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Vault's pre-0.9 shorthand `policy = "read"`, still found in old policies.
fn legacy_caps(word: &str) -> Option<Caps> {
    use Capability::*;
    Some(match word {
        "deny" => Caps::of(&[Deny]),
        "read" => Caps::of(&[Read, List]),
        "write" => Caps::of(&[Create, Read, Update, Delete, List]),
        "sudo" => Caps::of(&[Create, Read, Update, Delete, List, Sudo]),
        _ => return None,
    })
}

/// Deepest bracket nesting a policy may use. A policy needs three levels (a path block, a
/// parameter map, a value list); the HCL parser backtracks exponentially in the depth of some
/// unclosed brackets (found by fuzzing: 333 bytes with 49 open `[` kept a core busy for over
/// ten minutes), so depth is checked before parsing.
const MAX_NESTING: usize = 8;

/// Refuses text whose `[`, `{` or `(` nest deeper than [`MAX_NESTING`], outside strings.
fn check_nesting(text: &str) -> std::result::Result<(), String> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for c in text.chars() {
        match (in_string, c) {
            (true, _) if escaped => escaped = false,
            (true, '\\') => escaped = true,
            (true, '"') => in_string = false,
            (true, _) => {}
            (false, '"') => in_string = true,
            (false, '[' | '{' | '(') => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(format!(
                        "brackets nested more than {MAX_NESTING} deep; a policy needs three levels at most"
                    ));
                }
            }
            (false, ']' | '}' | ')') => depth = depth.saturating_sub(1),
            (false, _) => {}
        }
    }
    Ok(())
}

impl Policy {
    /// Parses a policy document. Fields Vault knows but Arca cannot enforce (parameter
    /// constraints, wrapping TTLs) are refused rather than ignored: silently dropping a
    /// restriction would grant more than the author wrote.
    pub fn parse(name: &str, text: &str) -> Result<Policy> {
        validate_name(name)?;
        if text.len() > MAX_POLICY_BYTES {
            return Err(Error::InvalidArgument(format!("policy is over the {MAX_POLICY_BYTES}-byte limit")));
        }
        let invalid = |why: String| Error::InvalidArgument(format!("policy {name:?}: {why}"));
        check_nesting(text).map_err(invalid)?;
        let body = hcl::parse(text).map_err(|e| invalid(format!("not valid HCL: {}", one_line(&e.to_string()))))?;
        let mut rules: Vec<Rule> = Vec::new();
        if let Some(attr) = body.attributes().next() {
            return Err(invalid(format!("unexpected top-level attribute {:?}; expected path blocks", attr.key())));
        }
        for block in body.blocks() {
            if block.identifier() != "path" {
                return Err(invalid(format!(
                    "unknown block {:?}; expected 'path \"...\" {{ ... }}'",
                    block.identifier()
                )));
            }
            let [label] = block.labels() else {
                return Err(invalid("a path block takes exactly one quoted path".into()));
            };
            let raw = match label {
                BlockLabel::String(s) => s.as_str(),
                BlockLabel::Identifier(i) => i.as_str(),
            };
            let pattern = Pattern::parse(raw).map_err(|e| invalid(e.to_string()))?;
            let mut caps: Option<Caps> = None;
            for attr in block.body().attributes() {
                let added = match attr.key() {
                    "capabilities" => {
                        let names = string_list(attr.expr(), "capabilities").map_err(|e| invalid(e.to_string()))?;
                        let parsed: Result<Vec<Capability>> = names
                            .iter()
                            .map(|n| {
                                Capability::parse(n).ok_or_else(|| {
                                    invalid(format!(
                                        "path {raw:?}: unknown capability {n:?} (use create, read, update, delete, \
                                         list, sudo, deny)"
                                    ))
                                })
                            })
                            .collect();
                        Caps::of(&parsed?)
                    }
                    "policy" => match attr.expr() {
                        Expression::String(w) => legacy_caps(w)
                            .ok_or_else(|| invalid(format!("path {raw:?}: unknown policy shorthand {w:?}")))?,
                        _ => return Err(invalid(format!("path {raw:?}: policy must be a string"))),
                    },
                    other @ ("allowed_parameters"
                    | "denied_parameters"
                    | "required_parameters"
                    | "min_wrapping_ttl"
                    | "max_wrapping_ttl"
                    | "control_group"
                    | "mfa_methods") => {
                        return Err(invalid(format!(
                            "path {raw:?}: {other} is not supported by Arca; the policy is refused rather than \
                             enforced partially"
                        )))
                    }
                    other => return Err(invalid(format!("path {raw:?}: unknown field {other:?}"))),
                };
                caps = Some(caps.unwrap_or_default().union(added));
            }
            if block.body().blocks().next().is_some() {
                return Err(invalid(format!("path {raw:?}: nested blocks are not supported")));
            }
            let caps = caps.ok_or_else(|| invalid(format!("path {raw:?}: no capabilities")))?;
            // A path named twice in one policy adds up, as in Vault.
            match rules.iter_mut().find(|r| r.pattern == pattern) {
                Some(r) => r.caps = r.caps.union(caps),
                None => rules.push(Rule { pattern, caps }),
            }
        }
        if rules.is_empty() {
            return Err(invalid("no path rules; write at least one 'path \"...\" { capabilities = [...] }'".into()));
        }
        Ok(Policy { name: name.to_string(), text: text.to_string(), rules })
    }
}

/// The compiled policies of this node, by name.
#[derive(Debug, Default, Clone)]
pub struct PolicySet {
    policies: BTreeMap<String, std::sync::Arc<Policy>>,
}

impl PolicySet {
    pub fn insert(&mut self, policy: Policy) {
        self.policies.insert(policy.name.clone(), std::sync::Arc::new(policy));
    }

    pub fn remove(&mut self, name: &str) {
        self.policies.remove(name);
    }

    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.policies.get(name).map(|p| &**p)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(String::as_str)
    }

    /// What holders of `names` may do on `path`. Unknown policy names grant nothing.
    pub fn capabilities<'a>(&self, names: impl IntoIterator<Item = &'a str>, path: &str) -> Caps {
        let names: Vec<&str> = names.into_iter().collect();
        if names.contains(&ROOT_POLICY) {
            return Caps::ROOT;
        }
        let policies: Vec<&Policy> = names.into_iter().filter_map(|n| self.get(n)).collect();
        decide(policies.iter().flat_map(|p| p.rules.iter()), path)
    }
}

/// The decision over a set of rules (see the module documentation).
pub fn decide<'a>(rules: impl Iterator<Item = &'a Rule>, path: &str) -> Caps {
    let mut best: Option<(&Pattern, Caps)> = None;
    for rule in rules.filter(|r| r.pattern.matches(path)) {
        if rule.caps.has(Capability::Deny) {
            return Caps::NONE;
        }
        best = match best {
            None => Some((&rule.pattern, rule.caps)),
            Some((p, c)) => match priority(&rule.pattern, p) {
                Ordering::Greater => Some((&rule.pattern, rule.caps)),
                Ordering::Equal => Some((p, c.union(rule.caps))),
                Ordering::Less => Some((p, c)),
            },
        };
    }
    best.map_or(Caps::NONE, |(_, c)| c)
}

/// The built-in `default` policy, compiled.
pub(crate) fn builtin_default() -> Policy {
    Policy::parse(DEFAULT_POLICY, DEFAULT_POLICY_HCL).expect("the built-in default policy parses")
}

/// What a sealed node holds: the built-in default policy only.
pub(crate) fn sealed_set() -> PolicySet {
    let mut set = PolicySet::default();
    set.insert(builtin_default());
    set
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    /// Found by fuzzing: nested unclosed brackets made the HCL parser backtrack for minutes.
    /// Refused at once, by depth, whatever the parser would do.
    #[test]
    fn deeply_nested_brackets_are_refused_before_parsing() {
        let text = format!("z={}zz0&0", "[h .z".repeat(40));
        let started = Instant::now();
        let err = Policy::parse("deep", &text).unwrap_err().to_string();
        assert!(err.contains("nested more than 8 deep"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
        // Brackets inside strings do not count, and a real policy's depth is allowed.
        let ok = format!("path \"secret/data/{}\" {{ capabilities = [\"read\"] }}", "[".repeat(20));
        Policy::parse("fine", &ok).unwrap();
    }

    use super::*;

    fn caps(policy: &str, path: &str) -> Vec<Capability> {
        let p = Policy::parse("t", policy).unwrap();
        decide(p.rules.iter(), path).list()
    }

    #[test]
    fn parses_vault_policies() {
        let p = Policy::parse(
            "app",
            r#"
            # comment
            path "secret/data/app/*" { capabilities = ["read", "list"] }
            path "secret/metadata/+/config" {
              capabilities = ["read"]
            }
            path "sys/legacy" { policy = "write" }
            "#,
        )
        .unwrap();
        assert_eq!(p.rules.len(), 3);
        Policy::parse("default", DEFAULT_POLICY_HCL).unwrap();
        for (text, expected) in [
            ("path \"a\" { capabilities = [\"reed\"] }", "unknown capability \"reed\""),
            ("path \"a\" { }", "no capabilities"),
            ("path \"a\" { capabilities = \"read\" }", "must be a list of strings"),
            ("path \"a*b\" { capabilities = [\"read\"] }", "only allowed at the end"),
            ("path \"a/b+/c\" { capabilities = [\"read\"] }", "whole segment"),
            ("path \"a\" {\n capabilities = [\"read\"]\n denied_parameters = {}\n}", "not supported"),
            ("pat \"a\" { capabilities = [\"read\"] }", "unknown block"),
            ("path \"a\" { capabilities = [\"read\"]", "not valid HCL"),
            ("x = 1", "top-level attribute"),
        ] {
            let err = Policy::parse("p", text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        assert!(Policy::parse("Bad Name", "").unwrap_err().to_string().contains("not allowed"));
    }

    #[test]
    fn matching_and_priority() {
        use Capability::*;
        let p = r#"
            path "secret/data/app/*" { capabilities = ["read"] }
            path "secret/data/app/db" { capabilities = ["update"] }
            path "secret/data/+/shared" { capabilities = ["list"] }
            path "secret/data/app/hidden*" { capabilities = ["deny"] }
        "#;
        assert_eq!(caps(p, "secret/data/app/x"), vec![Read]);
        assert_eq!(caps(p, "secret/data/app/a/b"), vec![Read]);
        assert_eq!(caps(p, "secret/data/app/db"), vec![Update], "exact beats glob");
        assert_eq!(caps(p, "secret/data/other/shared"), vec![List]);
        assert_eq!(caps(p, "secret/data/app/shared"), vec![Read], "later wildcard wins");
        assert_eq!(caps(p, "secret/data/app/hidden/x"), vec![], "deny wins");
        assert_eq!(caps(p, "secret/data/app"), vec![], "glob needs the slash");
        assert_eq!(caps(p, "secret/data/other/x"), vec![], "default deny");
        assert_eq!(caps(r#"path "secret/data/app*" { capabilities = ["read"] }"#, "secret/data/apples"), vec![Read]);
    }
}
