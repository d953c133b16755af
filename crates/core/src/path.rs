//! Secret path rules.

use crate::{Error, Result};

/// Longest accepted secret path, in bytes.
pub const MAX_PATH_BYTES: usize = 512;

/// Checks a secret path such as `app/db`: segments of `[A-Za-z0-9._-]`, separated by `/`, none
/// empty, `.` or `..`, at most [`MAX_PATH_BYTES`] bytes. The error names the rule broken.
pub fn validate_path(path: &str) -> Result<()> {
    // A path over the limit is quoted cut: errors are returned, logged and audited.
    let bad =
        |rule: &str| Err(Error::InvalidArgument(format!("invalid secret path {:?}: {rule}", crate::text::cap(path))));
    if path.is_empty() {
        return bad("the path is empty");
    }
    if path.len() > MAX_PATH_BYTES {
        return bad(&format!("longer than {MAX_PATH_BYTES} bytes"));
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return bad("empty segment (leading, trailing or double '/')");
        }
        if segment == "." || segment == ".." {
            return bad("'.' and '..' segments are not allowed");
        }
        if let Some(c) = segment.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
            return bad(&format!("character {c:?} is not allowed (use A-Z, a-z, 0-9, '.', '_', '-')"));
        }
    }
    Ok(())
}

/// Checks a list prefix: empty (everything), or a valid path optionally ending in `/`.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    match prefix.strip_suffix('/').unwrap_or(prefix) {
        "" => Ok(()),
        p => validate_path(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        for ok in ["app/db", "a", "A-b_c.d/e", "x/y/z.json"] {
            validate_path(ok).unwrap();
        }
        for (bad, rule) in [
            ("", "empty"),
            ("/app", "empty segment"),
            ("app/", "empty segment"),
            ("a//b", "empty segment"),
            ("a/./b", "'.' and '..'"),
            ("../etc", "'.' and '..'"),
            ("a b", "character ' '"),
            ("ünï", "character 'ü'"),
        ] {
            let err = validate_path(bad).unwrap_err().to_string();
            assert!(err.contains(rule), "{bad:?}: {err}");
        }
        assert!(validate_path(&"a".repeat(513)).unwrap_err().to_string().contains("longer than 512"));
        validate_prefix("").unwrap();
        validate_prefix("app/").unwrap();
        assert!(validate_prefix("app//").is_err());
    }
}
