//! The key-value half of the store: entries, their deadlines, sweeps and
//! purges, as the writer thread applies them and readers read them.
//!
//! Tables, besides `kv` ((bucket, key) → value): `kv_deadlines` ((bucket,
//! key) → the entry's deadline in epoch milliseconds, for entries that
//! expire) and `kv_expiring` ((deadline, bucket, key) → nothing: the same,
//! in deadline order, so a sweep reads only what has expired). Both are made
//! at open, so a file written before buckets had a time to live opens as it
//! is, its entries never expiring. An expired entry reads as missing at
//! once; its rows go at the next sweep (see [`crate::expiry`]).

use super::shared::{BucketBytes, KV};
use crate::api::KeyPage;
use crate::error::BrokerError;
use crate::expiry::{MAX_SWEEP, expired};
use crate::limits::{KEY_PAGE, MAX_BUCKET_BYTES};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

pub(super) const KV_DEADLINES: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("kv_deadlines");
pub(super) const KV_EXPIRING: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("kv_expiring");

/// A key-value operation for the writer thread.
pub(super) enum KvOp {
    /// Stores `value` under `key` (`None`: deletes it), expiring at
    /// `deadline` (`None`: never).
    Write {
        bucket: String,
        key: String,
        value: Option<Vec<u8>>,
        deadline: Option<u64>,
    },
    /// Deletes every entry of `bucket`; answers how many had not expired.
    Purge { bucket: String },
    /// Frees expired entries, at most [`MAX_SWEEP`]; answers how many.
    Sweep,
}

impl KvOp {
    /// Applies the operation at `now_ms`: `Ok(Err(..))` when it is refused
    /// on its own (a full bucket), `Err` when the transaction failed.
    pub(super) fn apply(
        &self,
        txn: &WriteTransaction,
        now_ms: u64,
        bucket_bytes: &mut BucketBytes,
    ) -> Result<Result<u64, BrokerError>, redb::Error> {
        match self {
            Self::Write {
                bucket,
                key,
                value,
                deadline,
            } => write(
                txn,
                bucket,
                key,
                value.as_deref(),
                *deadline,
                now_ms,
                bucket_bytes,
            ),
            Self::Purge { bucket } => purge(txn, bucket, now_ms, bucket_bytes).map(Ok),
            Self::Sweep => sweep(txn, now_ms, bucket_bytes, None, MAX_SWEEP)
                .map(|swept| Ok(u64::try_from(swept).unwrap_or(u64::MAX))),
        }
    }
}

/// Makes the tables a file from before time-to-live lacks.
pub(super) fn prepare(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(KV_DEADLINES)?;
    txn.open_table(KV_EXPIRING)?;
    Ok(())
}

/// Removes `key`'s rows; returns the bytes it held (0 if it was not there).
fn remove(txn: &WriteTransaction, bucket: &str, key: &str) -> Result<usize, redb::Error> {
    let old = txn
        .open_table(KV)?
        .remove((bucket, key))?
        .map_or(0, |v| key.len() + v.value().len());
    let deadline = txn
        .open_table(KV_DEADLINES)?
        .remove((bucket, key))?
        .map(|v| v.value());
    if let Some(at) = deadline {
        txn.open_table(KV_EXPIRING)?.remove((at, bucket, key))?;
    }
    Ok(old)
}

fn held(bucket_bytes: &BucketBytes, bucket: &str) -> usize {
    bucket_bytes.get(bucket).copied().unwrap_or(0)
}

fn set_held(bucket_bytes: &mut BucketBytes, bucket: &str, bytes: usize) {
    if bytes == 0 {
        bucket_bytes.remove(bucket);
    } else {
        bucket_bytes.insert(bucket.to_owned(), bytes);
    }
}

fn write(
    txn: &WriteTransaction,
    bucket: &str,
    key: &str,
    value: Option<&[u8]>,
    deadline: Option<u64>,
    now_ms: u64,
    bucket_bytes: &mut BucketBytes,
) -> Result<Result<u64, BrokerError>, redb::Error> {
    let Some(value) = value else {
        let old = remove(txn, bucket, key)?;
        let bytes = held(bucket_bytes, bucket) - old;
        set_held(bucket_bytes, bucket, bytes);
        return Ok(Ok(0));
    };
    let after = |bucket_bytes: &BucketBytes| -> Result<usize, redb::Error> {
        let old = txn
            .open_table(KV)?
            .get((bucket, key))?
            .map_or(0, |v| key.len() + v.value().len());
        Ok(held(bucket_bytes, bucket) - old + key.len() + value.len())
    };
    if after(bucket_bytes)? > MAX_BUCKET_BYTES {
        // Expired entries never make a bucket refuse a write: all of this
        // bucket's go (as many as its bytes limit lets it hold).
        sweep(txn, now_ms, bucket_bytes, Some(bucket), usize::MAX)?;
        if after(bucket_bytes)? > MAX_BUCKET_BYTES {
            return Ok(Err(BrokerError::BucketFull(format!(
                "the bucket holds {} bytes; the limit is {MAX_BUCKET_BYTES}",
                held(bucket_bytes, bucket)
            ))));
        }
    }
    let old = remove(txn, bucket, key)?;
    txn.open_table(KV)?.insert((bucket, key), value)?;
    if let Some(at) = deadline {
        txn.open_table(KV_DEADLINES)?.insert((bucket, key), at)?;
        txn.open_table(KV_EXPIRING)?.insert((at, bucket, key), ())?;
    }
    let bytes = held(bucket_bytes, bucket) - old + key.len() + value.len();
    set_held(bucket_bytes, bucket, bytes);
    Ok(Ok(0))
}

/// Frees up to `max` entries expired at `now_ms`, earliest deadline first,
/// of `only` that bucket (`None`: of any); returns how many it freed.
fn sweep(
    txn: &WriteTransaction,
    now_ms: u64,
    bucket_bytes: &mut BucketBytes,
    only: Option<&str>,
    max: usize,
) -> Result<usize, redb::Error> {
    let mut due = Vec::new();
    let table = txn.open_table(KV_EXPIRING)?;
    for entry in table.range(..(now_ms.saturating_add(1), "", ""))? {
        if due.len() == max {
            break;
        }
        let (k, _) = entry?;
        let (at, bucket, key) = k.value();
        if at <= now_ms && only.is_none_or(|b| b == bucket) {
            due.push((bucket.to_owned(), key.to_owned()));
        }
    }
    drop(table);
    let swept = due.len();
    for (bucket, key) in due {
        let old = remove(txn, &bucket, &key)?;
        let bytes = held(bucket_bytes, &bucket) - old;
        set_held(bucket_bytes, &bucket, bytes);
    }
    if swept > 0 {
        tracing::debug!(entries = swept, "queue store: expired bucket entries swept");
    }
    Ok(swept)
}

/// Deletes every entry of `bucket`; returns how many had not expired.
fn purge(
    txn: &WriteTransaction,
    bucket: &str,
    now_ms: u64,
    bucket_bytes: &mut BucketBytes,
) -> Result<u64, redb::Error> {
    let mut keys = Vec::new();
    for entry in txn.open_table(KV)?.range((bucket, "")..)? {
        let (k, _) = entry?;
        let (b, key) = k.value();
        if b != bucket {
            break;
        }
        keys.push(key.to_owned());
    }
    let mut live = 0u64;
    for key in keys {
        let deadline = txn
            .open_table(KV_DEADLINES)?
            .get((bucket, key.as_str()))?
            .map(|v| v.value());
        if !expired(deadline, now_ms) {
            live += 1;
        }
        remove(txn, bucket, &key)?;
    }
    bucket_bytes.remove(bucket);
    Ok(live)
}

/// The value under `key` in `bucket`, unless it has expired at `now_ms`.
pub(super) fn get(
    db: &Database,
    bucket: &str,
    key: &str,
    now_ms: u64,
) -> Result<Option<Vec<u8>>, redb::Error> {
    let txn = db.begin_read()?;
    let Some(value) = txn.open_table(KV)?.get((bucket, key))? else {
        return Ok(None);
    };
    let deadline = txn
        .open_table(KV_DEADLINES)?
        .get((bucket, key))?
        .map(|v| v.value());
    Ok((!expired(deadline, now_ms)).then(|| value.value().to_vec()))
}

/// One page of `bucket`'s unexpired keys, in order, from the `start`th on.
pub(super) fn keys(
    db: &Database,
    bucket: &str,
    start: usize,
    now_ms: u64,
) -> Result<KeyPage, redb::Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(KV)?;
    let deadlines = txn.open_table(KV_DEADLINES)?;
    let mut keys = Vec::new();
    let mut more = false;
    let mut index = 0usize;
    for entry in table.range((bucket, "")..)? {
        let (k, _) = entry?;
        let (b, key) = k.value();
        if b != bucket {
            break;
        }
        let deadline = deadlines.get((bucket, key))?.map(|v| v.value());
        if expired(deadline, now_ms) {
            continue;
        }
        index += 1;
        if index <= start {
            continue;
        }
        if keys.len() == KEY_PAGE {
            more = true;
            break;
        }
        keys.push(key.to_owned());
    }
    let end = start + keys.len();
    Ok(KeyPage {
        keys,
        cursor: more.then(|| u64::try_from(end).ok()).flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::backends::InMemoryBackend;

    #[test]
    fn a_sweep_frees_at_most_its_cap_and_the_next_frees_the_rest() {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap();
        let mut sizes = BucketBytes::default();
        let txn = db.begin_write().unwrap();
        prepare(&txn).unwrap();
        for i in 0..MAX_SWEEP + 10 {
            let key = format!("k{i:05}");
            let deadline = Some(1_000 + u64::try_from(i).unwrap());
            write(&txn, "b", &key, Some(b"v"), deadline, 0, &mut sizes)
                .unwrap()
                .unwrap();
        }
        // A neighbour that never expires, and one not yet expired.
        write(&txn, "c", "kept", Some(b"v"), None, 0, &mut sizes)
            .unwrap()
            .unwrap();
        write(&txn, "c", "later", Some(b"v"), Some(99_999), 0, &mut sizes)
            .unwrap()
            .unwrap();
        txn.commit().unwrap();
        let now = 50_000;
        let txn = db.begin_write().unwrap();
        assert_eq!(
            sweep(&txn, now, &mut sizes, None, MAX_SWEEP).unwrap(),
            MAX_SWEEP
        );
        txn.commit().unwrap();
        // The earliest deadlines went first: the last ten are left.
        assert_eq!(get(&db, "b", "k00000", 0).unwrap(), None);
        let last = format!("k{:05}", MAX_SWEEP + 9);
        assert_eq!(get(&db, "b", &last, 0).unwrap(), Some(b"v".to_vec()));
        assert_eq!(sizes.get("b"), Some(&(10 * (6 + 1))));
        let txn = db.begin_write().unwrap();
        assert_eq!(sweep(&txn, now, &mut sizes, None, MAX_SWEEP).unwrap(), 10);
        assert_eq!(sweep(&txn, now, &mut sizes, None, MAX_SWEEP).unwrap(), 0);
        txn.commit().unwrap();
        assert_eq!(sizes.get("b"), None);
        assert_eq!(get(&db, "c", "kept", now).unwrap(), Some(b"v".to_vec()));
        assert_eq!(get(&db, "c", "later", now).unwrap(), Some(b"v".to_vec()));
    }
}
