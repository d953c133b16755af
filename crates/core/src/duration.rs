//! Durations as people and Vault clients write them: `90`, `30s`, `15m`, `1h30m`, `7d`.

/// Seconds in `text`: a bare number of seconds, or number-unit pairs (`s`, `m`, `h`, `d`)
/// as in `1h30m`. The error says what was wrong, for the caller to prefix with the field.
pub fn parse_duration_secs(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration: expected e.g. 30s, 15m, 1h, 7d".into());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: expected e.g. 30s, 15m, 1h30m, 7d"))?;
        let unit_len = rest[digits..].find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len() - digits);
        let mult = match &rest[digits..digits + unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            unit => return Err(format!("invalid duration unit {unit:?} in {text:?}: use s, m, h or d")),
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration {text:?} is too long"))?;
        rest = &rest[digits + unit_len..];
    }
    Ok(total)
}

/// The longest duration any request may carry (100 years): beyond it, times overflow.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(100 * 366 * 86_400);

/// `d` in milliseconds, refused when it is longer than [`MAX_DURATION`] (`what` names the
/// field in the error).
pub fn millis(d: std::time::Duration, what: &str) -> crate::Result<i64> {
    if d > MAX_DURATION {
        return Err(crate::Error::InvalidArgument(format!("{what} must be at most 100 years")));
    }
    Ok(d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_people_and_vault_clients_use() {
        for (text, secs) in [("90", 90), ("30s", 30), ("15m", 900), ("2d", 172_800), ("1h30m", 5400), ("0", 0)] {
            assert_eq!(parse_duration_secs(text), Ok(secs), "{text}");
        }
        for bad in ["", "h", "1w", "1.5h", "-3s", "99999999999999999999d"] {
            assert!(parse_duration_secs(bad).is_err(), "{bad}");
        }
    }
}
