//! Key-value buckets, through the standard `wasi:keyvalue/store` interface.
//!
//! [`Bucket::open`] opens one of the buckets the role's manifest lists; any
//! other name fails (with [`Error::AccessDenied`] or [`Error::NoSuchStore`]).
//! Values are bytes; keys are strings. A bucket reads its own writes.
//!
//! A bucket holds at most 64 MiB (keys and values). A write to a full
//! bucket fails with [`Error::BucketFull`]: unlike a passing failure,
//! retrying soon does not help until entries are deleted, expire (the
//! manifest's `[buckets.NAME] ttl-seconds`), or an operator purges them. An
//! entry of a bucket with a time to live reads as missing once it expires.

use std::fmt;

use crate::bindings::wasi::keyvalue::store as wit;

/// Why a key-value call failed, mirroring `wasi:keyvalue/store.error`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The host knows no bucket by that name.
    NoSuchStore,
    /// The role may not open that bucket (which may or may not exist).
    AccessDenied,
    /// The bucket is full: a write that would grow it is refused until
    /// entries are deleted or expire. With the host's reason. (The host
    /// sends it as `error::other("bucket-full: ...")`, as the standard WIT
    /// has no variant for it.)
    BucketFull(String),
    /// Anything else (a backend failure, a rate limit...), with the host's reason.
    Other(String),
}

/// How the host's `error::other` for a full bucket begins.
const BUCKET_FULL: &str = "bucket-full";

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoSuchStore => f.write_str("no such key-value bucket"),
            Error::AccessDenied => f.write_str("access to the key-value bucket denied"),
            Error::BucketFull(why) => write!(f, "key-value bucket full: {why}"),
            Error::Other(why) => write!(f, "key-value error: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<wit::Error> for Error {
    fn from(error: wit::Error) -> Self {
        match error {
            wit::Error::NoSuchStore => Error::NoSuchStore,
            wit::Error::AccessDenied => Error::AccessDenied,
            wit::Error::Other(why) => from_other(why),
        }
    }
}

/// Reads the host's `error::other` text: a full bucket is its own variant.
fn from_other(why: String) -> Error {
    match why.strip_prefix(BUCKET_FULL) {
        Some(rest) => Error::BucketFull(rest.trim_start_matches(':').trim_start().to_owned()),
        None => Error::Other(why),
    }
}

/// A `Result` whose error is a key-value [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An open key-value bucket.
#[derive(Debug)]
pub struct Bucket {
    name: String,
    inner: wit::Bucket,
}

impl Bucket {
    /// Opens the bucket `name`, which the role's manifest must list.
    pub fn open(name: &str) -> Result<Bucket> {
        let inner = wit::open(name)?;
        Ok(Bucket {
            name: name.to_owned(),
            inner,
        })
    }

    /// The name this bucket was opened with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value stored under `key`, or `None`.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.get(key)?)
    }

    /// Stores `value` under `key`, replacing any value there.
    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<()> {
        Ok(self.inner.set(key, value.as_ref())?)
    }

    /// Deletes `key`; deleting a missing key is not an error.
    pub fn delete(&self, key: &str) -> Result<()> {
        Ok(self.inner.delete(key)?)
    }

    /// Whether a value is stored under `key`.
    pub fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.inner.exists(key)?)
    }

    /// Every key in the bucket, in no particular order, following the host's
    /// pages to the end. This may be expensive on a large bucket.
    pub fn keys(&self) -> Result<Vec<String>> {
        collect_pages(|cursor| {
            let page = self.inner.list_keys(cursor)?;
            Ok((page.keys, page.cursor))
        })
    }
}

/// Calls `fetch` with each page's cursor (starting with none) until a page
/// comes back without a next cursor, or with the cursor it was asked for
/// (which would otherwise loop forever), and concatenates the keys.
fn collect_pages<F>(mut fetch: F) -> Result<Vec<String>>
where
    F: FnMut(Option<u64>) -> Result<(Vec<String>, Option<u64>)>,
{
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = fetch(cursor)?;
        keys.extend(page);
        match next {
            Some(next) if Some(next) != cursor => cursor = Some(next),
            _ => return Ok(keys),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_walks_every_page() {
        let pages = |cursor: Option<u64>| -> Result<(Vec<String>, Option<u64>)> {
            Ok(match cursor {
                None => (vec!["a".into(), "b".into()], Some(7)),
                Some(7) => (vec!["c".into()], Some(9)),
                Some(_) => (vec![], None),
            })
        };
        assert_eq!(collect_pages(pages).unwrap(), ["a", "b", "c"]);
    }

    #[test]
    fn keys_stops_on_a_repeated_cursor() {
        let stuck = |_: Option<u64>| -> Result<(Vec<String>, Option<u64>)> {
            Ok((vec!["x".into()], Some(1)))
        };
        assert_eq!(collect_pages(stuck).unwrap(), ["x", "x"]);
    }

    #[test]
    fn keys_passes_errors_on() {
        let failing = |_: Option<u64>| -> Result<(Vec<String>, Option<u64>)> {
            Err(Error::Other("backend down".into()))
        };
        assert_eq!(
            collect_pages(failing).unwrap_err().to_string(),
            "key-value error: backend down"
        );
    }

    #[test]
    fn a_full_bucket_is_its_own_error() {
        let why = "bucket-full: the bucket holds 67108000 bytes; the limit is 67108864";
        let error = Error::from(wit::Error::Other(why.into()));
        assert_eq!(
            error,
            Error::BucketFull("the bucket holds 67108000 bytes; the limit is 67108864".into())
        );
        assert_eq!(
            error.to_string(),
            "key-value bucket full: the bucket holds 67108000 bytes; the limit is 67108864"
        );
        assert_eq!(
            Error::from(wit::Error::Other("bucket-full".into())),
            Error::BucketFull(String::new())
        );
        // Other reasons, even ones naming a full bucket, stay `Other`.
        for other in [
            "unavailable: down",
            "rate-limited; retry later",
            "not bucket-full",
        ] {
            assert_eq!(
                Error::from(wit::Error::Other(other.into())),
                Error::Other(other.into())
            );
        }
    }

    #[test]
    fn display() {
        assert_eq!(Error::NoSuchStore.to_string(), "no such key-value bucket");
        assert_eq!(
            Error::AccessDenied.to_string(),
            "access to the key-value bucket denied"
        );
    }
}
