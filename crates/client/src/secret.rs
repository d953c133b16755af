//! [`Secret`]: one version of a secret, as handed to application code.

use std::collections::BTreeMap;
use std::sync::Arc;

use zeroize::Zeroize;

/// Which version of a secret to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Which {
    /// The version reads return by default.
    Current,
    /// A numbered version.
    Version(u64),
    /// The version a rotation in progress wrote and has not yet promoted.
    Pending,
    /// The version `current` replaced (still valid for alternating-user rotation).
    Previous,
}

/// One version of a secret: its key/value pairs and version number. Cheap to clone (shared);
/// the values are zeroized when the last clone is dropped. `Debug` shows no value.
#[derive(Clone)]
pub struct Secret {
    inner: Arc<Inner>,
}

struct Inner {
    path: String,
    version: u64,
    data: BTreeMap<String, String>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for v in self.data.values_mut() {
            v.zeroize();
        }
    }
}

impl Secret {
    pub fn new(path: impl Into<String>, version: u64, data: BTreeMap<String, String>) -> Secret {
        Secret { inner: Arc::new(Inner { path: path.into(), version, data }) }
    }

    pub(crate) fn from_reply(path: &str, reply: arca_proto::GetResponse) -> Secret {
        let version = reply.metadata.map_or(0, |m| m.version);
        Secret::new(path, version, reply.data.into_iter().collect())
    }

    pub fn path(&self) -> &str {
        &self.inner.path
    }

    pub fn version(&self) -> u64 {
        self.inner.version
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.inner.data.get(key).map(String::as_str)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.inner.data.keys().map(String::as_str)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Secret({} v{}, {} keys, values redacted)",
            self.inner.path,
            self.inner.version,
            self.inner.data.len()
        )
    }
}
