//! The `random` rotator: a new password or API key from a character policy, drawn from the OS
//! CSPRNG. For secrets only applications read (nothing to update elsewhere).
//!
//! Parameters: `length` (default 32, 8–1024), `classes` (comma-separated from `lower`,
//! `upper`, `digits`, `symbols`; default `lower,upper,digits`), `exclude` (characters never
//! used), `field` (the key that receives the value, default `password`). Every other field of
//! the current value is carried over (a username stays the username).

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::{Error, Result, SecretData};

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &str = "0123456789";
const SYMBOLS: &str = "!#$%&()*+,-./:;<=>?@[]^_{|}~";

/// A checked password policy.
pub(crate) struct Policy {
    length: usize,
    /// Each class's allowed characters (after exclusions); one of each is always included.
    classes: Vec<Vec<char>>,
    pub field: String,
}

impl Policy {
    pub fn from_params(params: &BTreeMap<String, String>) -> Result<Policy> {
        let bad = |m: String| Error::InvalidArgument(m);
        let length = match params.get("length") {
            None => 32,
            Some(v) => v.parse::<usize>().map_err(|_| bad(format!("length {v:?} is not a number")))?,
        };
        if !(8..=1024).contains(&length) {
            return Err(bad(format!("length {length} is outside 8..=1024")));
        }
        let exclude: Vec<char> = params.get("exclude").map(|e| e.chars().collect()).unwrap_or_default();
        let names = params.get("classes").map(String::as_str).unwrap_or("lower,upper,digits");
        let mut classes = Vec::new();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let set = match name {
                "lower" => LOWER,
                "upper" => UPPER,
                "digits" => DIGITS,
                "symbols" => SYMBOLS,
                other => {
                    return Err(bad(format!("unknown character class {other:?}: use lower, upper, digits, symbols")))
                }
            };
            let allowed: Vec<char> = set.chars().filter(|c| !exclude.contains(c)).collect();
            if allowed.is_empty() {
                return Err(bad(format!("'exclude' removes every character of class {name}")));
            }
            classes.push(allowed);
        }
        if classes.is_empty() || classes.len() > length {
            return Err(bad("name between one class and 'length' classes".into()));
        }
        let field = params.get("field").cloned().unwrap_or_else(|| "password".into());
        Ok(Policy { length, classes, field })
    }

    /// A fresh value: one character of every class, the rest from all classes, shuffled.
    pub fn generate(&self) -> Result<Zeroizing<String>> {
        let all: Vec<char> = self.classes.concat();
        let mut chars: Zeroizing<Vec<char>> = Zeroizing::new(Vec::with_capacity(self.length));
        for class in &self.classes {
            chars.push(class[uniform(class.len())?]);
        }
        while chars.len() < self.length {
            chars.push(all[uniform(all.len())?]);
        }
        // Fisher–Yates, so the guaranteed characters are not always first.
        for i in (1..chars.len()).rev() {
            chars.swap(i, uniform(i + 1)?);
        }
        Ok(Zeroizing::new(chars.iter().collect()))
    }
}

/// A uniform index below `n` from the OS CSPRNG (rejection sampling: no modulo bias).
fn uniform(n: usize) -> Result<usize> {
    let n = n as u32;
    let zone = u32::MAX - (u32::MAX % n);
    loop {
        let mut b = [0u8; 4];
        arca_crypto::random_bytes(&mut b).map_err(|e| Error::Internal(e.to_string()))?;
        let v = u32::from_be_bytes(b);
        if v < zone {
            return Ok((v % n) as usize);
        }
    }
}

/// The current value with `field` replaced by a fresh one.
pub(crate) fn create(params: &BTreeMap<String, String>, current: Option<&SecretData>) -> Result<SecretData> {
    let policy = Policy::from_params(params)?;
    let mut next = current.cloned().unwrap_or_default();
    next.0.insert(policy.field.clone(), policy.generate()?.to_string());
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn values_follow_the_policy() {
        let p =
            Policy::from_params(&params(&[("length", "12"), ("classes", "lower,digits,symbols"), ("exclude", "0o!")]))
                .unwrap();
        for _ in 0..200 {
            let v = p.generate().unwrap();
            assert_eq!(v.chars().count(), 12);
            assert!(v.chars().any(|c| c.is_ascii_lowercase()) && v.chars().any(|c| c.is_ascii_digit()));
            assert!(v.chars().any(|c| SYMBOLS.contains(c)));
            assert!(!v.contains(['0', 'o', '!']) && !v.chars().any(|c| c.is_ascii_uppercase()));
        }
        assert_ne!(*p.generate().unwrap(), *p.generate().unwrap());
    }

    #[test]
    fn bad_policies_are_refused_by_name() {
        for (ps, expect) in [
            (vec![("length", "4")], "outside"),
            (vec![("length", "x")], "not a number"),
            (vec![("classes", "emoji")], "unknown character class"),
            (vec![("classes", "digits"), ("exclude", "0123456789")], "removes every character"),
        ] {
            let e = Policy::from_params(&params(&ps)).err().unwrap().to_string();
            assert!(e.contains(expect), "{e}");
        }
    }

    #[test]
    fn other_fields_are_carried_over() {
        let current = SecretData([("username".to_string(), "app".to_string())].into());
        let next = create(&params(&[]), Some(&current)).unwrap();
        assert_eq!(next.0["username"], "app");
        assert_eq!(next.0["password"].len(), 32);
    }
}
