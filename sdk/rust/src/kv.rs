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
//!
//! [`Bucket::get_many`], [`Bucket::set_many`] and [`Bucket::delete_many`]
//! work on many keys at once, through the standard `wasi:keyvalue/batch`:
//! the host takes at most [`MAX_BATCH_KEYS`] keys per call, charges each
//! call as one operation of the role's key-value rate limit, and hands all
//! of a call's keys to its store together (the durable store writes a
//! `set_many` in one commit, not one per key). These methods split a
//! longer list into calls of at most that many keys, in order. A batch is
//! not atomic: when it fails, some of its keys may have been written or
//! deleted (and none of the later calls' keys); a key, or a value, over
//! the host's limits refuses its whole call before anything of it is
//! written.

use std::fmt;

use crate::bindings::wasi::keyvalue::batch;
use crate::bindings::wasi::keyvalue::store as wit;

/// The most keys the host takes in one batch call (as many as one queue
/// receive hands out). [`Bucket::get_many`], [`Bucket::set_many`] and
/// [`Bucket::delete_many`] take any number, split into calls of at most
/// this many.
pub const MAX_BATCH_KEYS: usize = 32;

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

    /// The values stored under `keys`, in the keys' order, `None` for a key
    /// that holds none. Asks the host [`MAX_BATCH_KEYS`] keys at a time;
    /// no keys, no call.
    pub fn get_many<K: AsRef<str>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let keys = keys.into_iter().map(|key| key.as_ref().to_owned());
        let mut values = Vec::new();
        in_batches(keys, |keys| {
            let entries = batch::get_many(&self.inner, &keys)?;
            values.extend(values_in_order(&keys, entries)?);
            Ok(())
        })?;
        Ok(values)
    }

    /// Stores each `(key, value)` of `entries`, replacing any value there,
    /// [`MAX_BATCH_KEYS`] entries per host call; no entries, no call. Which
    /// value wins for a key given twice in one call is not promised.
    pub fn set_many<K: AsRef<str>, V: AsRef<[u8]>>(
        &self,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        let entries = entries
            .into_iter()
            .map(|(key, value)| (key.as_ref().to_owned(), value.as_ref().to_vec()));
        in_batches(entries, |entries| {
            Ok(batch::set_many(&self.inner, &entries)?)
        })
    }

    /// Deletes each of `keys`, [`MAX_BATCH_KEYS`] per host call; a missing
    /// key is skipped, not an error; no keys, no call.
    pub fn delete_many<K: AsRef<str>>(&self, keys: impl IntoIterator<Item = K>) -> Result<()> {
        let keys = keys.into_iter().map(|key| key.as_ref().to_owned());
        in_batches(keys, |keys| Ok(batch::delete_many(&self.inner, &keys)?))
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

/// Hands `items` to `call` in order, at most [`MAX_BATCH_KEYS`] at a time
/// (no call for no items), stopping at the first error: the host refuses
/// a longer batch, and a failed one leaves the later ones unsent.
fn in_batches<T>(
    items: impl IntoIterator<Item = T>,
    mut call: impl FnMut(Vec<T>) -> Result<()>,
) -> Result<()> {
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        call(items.by_ref().take(MAX_BATCH_KEYS).collect())?;
    }
    Ok(())
}

/// The values of a `get-many` answer for `keys`, in their order. An answer
/// of another length would pair values with the wrong keys, so it is an
/// error rather than a guess.
fn values_in_order(
    keys: &[String],
    entries: Vec<Option<(String, Vec<u8>)>>,
) -> Result<Vec<Option<Vec<u8>>>> {
    if entries.len() != keys.len() {
        return Err(Error::Other(format!(
            "the host answered {} entries for {} keys",
            entries.len(),
            keys.len()
        )));
    }
    Ok(entries
        .into_iter()
        .map(|entry| entry.map(|(_, value)| value))
        .collect())
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

    /// The batches `in_batches` makes of `count` items, by size.
    fn batch_sizes(count: usize) -> Vec<usize> {
        let mut sizes = Vec::new();
        in_batches(0..count, |batch| {
            sizes.push(batch.len());
            Ok(())
        })
        .unwrap();
        sizes
    }

    #[test]
    fn batches_hold_at_most_the_hosts_limit_in_order() {
        assert_eq!(batch_sizes(0), Vec::<usize>::new());
        assert_eq!(batch_sizes(1), [1]);
        assert_eq!(batch_sizes(32), [32]);
        assert_eq!(batch_sizes(33), [32, 1]);
        assert_eq!(batch_sizes(70), [32, 32, 6]);
        let mut seen = Vec::new();
        in_batches(0..70, |batch| {
            seen.extend(batch);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, (0..70).collect::<Vec<_>>());
    }

    #[test]
    fn a_failed_batch_leaves_the_later_ones_unsent() {
        let mut calls = 0;
        let failed = in_batches(0..100, |batch| {
            calls += 1;
            if batch.contains(&40) {
                return Err(Error::BucketFull("full".into()));
            }
            Ok(())
        });
        assert_eq!(failed, Err(Error::BucketFull("full".into())));
        assert_eq!(calls, 2);
    }

    #[test]
    fn get_many_answers_pair_with_their_keys() {
        let keys = ["a", "b", "c"].map(String::from);
        let entries = vec![
            Some(("a".to_owned(), b"1".to_vec())),
            None,
            Some(("c".to_owned(), b"3".to_vec())),
        ];
        assert_eq!(
            values_in_order(&keys, entries.clone()).unwrap(),
            [Some(b"1".to_vec()), None, Some(b"3".to_vec())]
        );
        let short = values_in_order(&keys[..2], entries).unwrap_err();
        assert_eq!(
            short,
            Error::Other("the host answered 3 entries for 2 keys".into())
        );
    }

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
