//! Text from outside, made safe to keep: fields of records, logs and errors are capped.

/// Longest audited text field: a longer one (a path no valid request has, an error quoting
/// one) is cut, so what an unauthenticated request can make every member store is bounded
/// whatever it sends. Valid logical paths (at most `MAX_PATH_BYTES` plus a mount prefix) fit.
pub const MAX_AUDIT_FIELD_BYTES: usize = 640;
/// What is kept of a field over the limit.
const CUT_FIELD_BYTES: usize = 128;

/// `text` if it is at most [`MAX_AUDIT_FIELD_BYTES`] long, otherwise its first bytes and how
/// long it was.
pub fn cap(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_AUDIT_FIELD_BYTES {
        return text.into();
    }
    let mut end = CUT_FIELD_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[cut: {} bytes]", &text[..end], text.len()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_fields_are_cut_on_a_char_boundary() {
        assert_eq!(cap("secret/data/app/db"), "secret/data/app/db");
        let valid = format!("secret/metadata/{}", "a".repeat(crate::MAX_PATH_BYTES));
        assert_eq!(cap(&valid), valid.as_str(), "a valid logical path is kept whole");
        let long = format!("secret/data/{}", "é".repeat(20_000));
        let cut = cap(&long);
        assert!(cut.len() < 200 && cut.ends_with(&format!("[cut: {} bytes]", long.len())), "{cut}");
    }
}
