//! `application/x-www-form-urlencoded` bodies and query strings.

use std::collections::HashMap;

use zeroize::Zeroize;

/// A parsed form or query string. Values are zeroized when it is dropped (a form may carry a
/// token, a share or a secret's fields).
#[derive(Default)]
pub(crate) struct Form {
    fields: HashMap<String, String>,
}

impl Drop for Form {
    fn drop(&mut self) {
        for v in self.fields.values_mut() {
            v.zeroize();
        }
    }
}

impl Form {
    pub fn parse(text: &str) -> Form {
        let fields = text
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (decode(k), decode(v)),
                None => (decode(kv), String::new()),
            })
            .collect();
        Form { fields }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// A field, trimmed; empty when absent.
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or("").trim().to_string()
    }
}

/// Percent-decoding with `+` for a space; invalid escapes are kept as written.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    // Valid UTF-8 moves into the String (zeroized with the Form); otherwise the copy is made
    // and the bytes cleared.
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => {
            let mut bytes = e.into_bytes();
            let s = String::from_utf8_lossy(&bytes).into_owned();
            bytes.zeroize();
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_decoded() {
        let f = Form::parse("path=app%2Fdb&data=a%3D1%0D%0Ab%3Dx+y&empty=&flag&bad=%zz%4");
        assert_eq!(f.get("path"), Some("app/db"));
        assert_eq!(f.get("data"), Some("a=1\r\nb=x y"));
        assert_eq!(f.get("empty"), Some(""));
        assert_eq!(f.get("flag"), Some(""));
        assert_eq!(f.get("bad"), Some("%zz%4"));
        assert_eq!(f.get("missing"), None);
    }
}
