//! The key-value half of the store: entries, their deadlines, sweeps and
//! purges, as the writer thread applies them and readers read them.
//!
//! Tables: `kv` ((bucket, key) → the entry: its deadline in epoch
//! milliseconds, [`NEVER`] if it does not expire, then its value) and
//! `kv_expiring` ((deadline, bucket, key) → nothing: the entries that
//! expire, in deadline order, so a sweep reads only what has expired). An
//! expired entry reads as missing at once; its rows go at the next sweep
//! (see [`crate::expiry`]).
//!
//! The deadline rides in the entry's own row because every row a commit
//! changes costs a page write scattered across the file (redb writes
//! copy-on-write), and on a disk that pays per write the pages are what
//! bound a key-value workload: a third table keyed like `kv`, as format 1
//! of the file had (`kv_deadlines`), cost a write of its own pages with
//! every entry written. [`migrate_from_format_1`] moves such a file's
//! deadlines into its rows.

use super::shared::{BucketBytes, KV};
use crate::api::KeyPage;
use crate::error::BrokerError;
use crate::expiry::{MAX_SWEEP, expired};
use crate::limits::{KEY_PAGE, MAX_BUCKET_BYTES};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

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

/// The deadline of an entry that never expires.
const NEVER: u64 = u64::MAX;
/// The bytes of an entry's row before its value: its deadline.
const DEADLINE_BYTES: usize = 8;

/// An entry's row: `deadline` (`None`: never), then `value`.
fn entry_row(value: &[u8], deadline: Option<u64>) -> Vec<u8> {
    let mut row = Vec::with_capacity(DEADLINE_BYTES + value.len());
    row.extend_from_slice(&deadline.unwrap_or(NEVER).to_le_bytes());
    row.extend_from_slice(value);
    row
}

/// An entry's deadline (`None`: never) and value, from its row.
pub(super) fn entry(row: &[u8]) -> Result<(Option<u64>, &[u8]), redb::Error> {
    let (deadline, value) = row
        .split_first_chunk::<DEADLINE_BYTES>()
        .ok_or_else(|| redb::Error::Corrupted("a key-value entry's row is too short".into()))?;
    let deadline = u64::from_le_bytes(*deadline);
    Ok(((deadline != NEVER).then_some(deadline), value))
}

/// Makes the tables a new file needs.
pub(super) fn prepare(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(KV)?;
    txn.open_table(KV_EXPIRING)?;
    Ok(())
}

/// Moves a format-1 file's deadlines (the table `kv_deadlines`) into its
/// entries' rows and drops that table, in the caller's transaction: the
/// file is either wholly format 1 or wholly format 2. `kv_expiring` is
/// the same in both.
pub(super) fn migrate_from_format_1(txn: &WriteTransaction) -> Result<(), redb::Error> {
    const KV_DEADLINES: TableDefinition<(&str, &str), u64> = TableDefinition::new("kv_deadlines");
    let mut deadlines = std::collections::HashMap::new();
    for row in txn.open_table(KV_DEADLINES)?.iter()? {
        let (key, deadline) = row?;
        let (bucket, key) = key.value();
        deadlines.insert((bucket.to_owned(), key.to_owned()), deadline.value());
    }
    let mut entries = Vec::new();
    for row in txn.open_table(KV)?.iter()? {
        let (key, value) = row?;
        let (bucket, key) = key.value();
        let deadline = deadlines.get(&(bucket.to_owned(), key.to_owned())).copied();
        entries.push((
            bucket.to_owned(),
            key.to_owned(),
            entry_row(value.value(), deadline),
        ));
    }
    let mut kv = txn.open_table(KV)?;
    for (bucket, key, row) in &entries {
        kv.insert((bucket.as_str(), key.as_str()), row.as_slice())?;
    }
    drop(kv);
    txn.delete_table(KV_DEADLINES)?;
    Ok(())
}

/// The bytes an entry holds against its bucket's limit: its key and value.
fn held_by(key: &str, row: &[u8]) -> Result<usize, redb::Error> {
    Ok(held_and_deadline(key, row)?.0)
}

/// The bytes an entry holds (as [`held_by`]) and its deadline, from one
/// decoding of its row.
fn held_and_deadline(key: &str, row: &[u8]) -> Result<(usize, Option<u64>), redb::Error> {
    let (deadline, value) = entry(row)?;
    Ok((key.len() + value.len(), deadline))
}

/// Removes `key`'s rows; returns the bytes it held (0 if it was not there).
fn remove(txn: &WriteTransaction, bucket: &str, key: &str) -> Result<usize, redb::Error> {
    let old = match txn.open_table(KV)?.remove((bucket, key))? {
        Some(row) => Some(held_and_deadline(key, row.value())?),
        None => None,
    };
    let Some((held, deadline)) = old else {
        return Ok(0);
    };
    if let Some(at) = deadline {
        txn.open_table(KV_EXPIRING)?.remove((at, bucket, key))?;
    }
    Ok(held)
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
        let old = match txn.open_table(KV)?.get((bucket, key))? {
            Some(row) => held_by(key, row.value())?,
            None => 0,
        };
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
    // One walk of `kv` writes the entry and hands back the one it replaced.
    let replaced = match txn
        .open_table(KV)?
        .insert((bucket, key), entry_row(value, deadline).as_slice())?
    {
        Some(row) => Some(held_and_deadline(key, row.value())?),
        None => None,
    };
    let (old, old_deadline) = replaced.unwrap_or((0, None));
    if old_deadline != deadline {
        let mut expiring = txn.open_table(KV_EXPIRING)?;
        if let Some(at) = old_deadline {
            expiring.remove((at, bucket, key))?;
        }
        if let Some(at) = deadline {
            expiring.insert((at, bucket, key), ())?;
        }
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
    let mut live = 0u64;
    for row in txn.open_table(KV)?.range((bucket, "")..)? {
        let (k, v) = row?;
        let (b, key) = k.value();
        if b != bucket {
            break;
        }
        if !expired(entry(v.value())?.0, now_ms) {
            live += 1;
        }
        keys.push(key.to_owned());
    }
    for key in keys {
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
    let Some(row) = txn.open_table(KV)?.get((bucket, key))? else {
        return Ok(None);
    };
    let (deadline, value) = entry(row.value())?;
    Ok((!expired(deadline, now_ms)).then(|| value.to_vec()))
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
    let mut keys = Vec::new();
    let mut more = false;
    let mut index = 0usize;
    for row in table.range((bucket, "")..)? {
        let (k, v) = row?;
        let (b, key) = k.value();
        if b != bucket {
            break;
        }
        if expired(entry(v.value())?.0, now_ms) {
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
    fn an_entry_row_holds_its_deadline_and_a_short_row_is_refused() {
        assert_eq!(
            entry(&entry_row(b"v", Some(7))).unwrap(),
            (Some(7), &b"v"[..])
        );
        assert_eq!(entry(&entry_row(b"", None)).unwrap(), (None, &b""[..]));
        assert!(entry(b"short").is_err());
    }

    #[test]
    fn format_1_deadlines_move_into_their_entries() {
        const KV_DEADLINES: TableDefinition<(&str, &str), u64> =
            TableDefinition::new("kv_deadlines");
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap();
        // Format 1: raw values, deadlines in a table of their own.
        let txn = db.begin_write().unwrap();
        {
            let mut kv = txn.open_table(KV).unwrap();
            kv.insert(("b", "gone"), &b"old"[..]).unwrap();
            kv.insert(("b", "later"), &b"soon"[..]).unwrap();
            kv.insert(("c", "kept"), &b"forever"[..]).unwrap();
            let mut deadlines = txn.open_table(KV_DEADLINES).unwrap();
            deadlines.insert(("b", "gone"), 1_000).unwrap();
            deadlines.insert(("b", "later"), 90_000).unwrap();
            let mut expiring = txn.open_table(KV_EXPIRING).unwrap();
            expiring.insert((1_000, "b", "gone"), ()).unwrap();
            expiring.insert((90_000, "b", "later"), ()).unwrap();
        }
        txn.commit().unwrap();

        let txn = db.begin_write().unwrap();
        migrate_from_format_1(&txn).unwrap();
        txn.commit().unwrap();

        let now = 50_000;
        assert_eq!(get(&db, "b", "gone", now).unwrap(), None);
        assert_eq!(get(&db, "b", "later", now).unwrap(), Some(b"soon".to_vec()));
        assert_eq!(get(&db, "b", "later", 90_000).unwrap(), None);
        assert_eq!(
            get(&db, "c", "kept", u64::MAX - 1).unwrap(),
            Some(b"forever".to_vec())
        );
        assert_eq!(keys(&db, "b", 0, now).unwrap().keys, ["later"]);
        let read = db.begin_read().unwrap();
        assert!(
            read.open_table(KV_DEADLINES).is_err(),
            "the old table is gone"
        );
        drop(read);
        // The sweep finds the migrated deadlines and frees the bytes.
        let mut sizes =
            BucketBytes::from([("b".to_owned(), 4 + 3 + 5 + 4), ("c".to_owned(), 4 + 7)]);
        let txn = db.begin_write().unwrap();
        assert_eq!(sweep(&txn, now, &mut sizes, None, MAX_SWEEP).unwrap(), 1);
        txn.commit().unwrap();
        assert_eq!(sizes.get("b"), Some(&(5 + 4)));
    }

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
