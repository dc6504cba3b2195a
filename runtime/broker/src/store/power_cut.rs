//! A disk that can lose power, to test what the store promises: a send (or
//! a key-value write) that returned OK is on disk.
//!
//! Killing the process cannot test that: after a `kill -9` the kernel still
//! holds the page cache and writes it out, so a store that never fsynced
//! would pass. This disk keeps every write since the last `sync_data` in a
//! volatile layer. A power cut loses that layer, whole or page by page at
//! random (a kernel writes dirty pages back in any order, so any subset of
//! them may have reached the platter). Handles made before a cut fail every
//! later call, so the database left in the "dead" process can neither read,
//! write nor acknowledge anything; the next life opens a fresh handle.

use redb::StorageBackend;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

/// The unit a cut keeps or loses: what a kernel writes back at once.
const PAGE: usize = 4096;

/// One handle on a simulated disk; clones share it.
#[derive(Clone)]
pub(crate) struct Disk {
    platter: Arc<Mutex<Platter>>,
    /// The life this handle belongs to; calls from an earlier one fail.
    life: u64,
}

struct Platter {
    /// What survives a power cut.
    durable: Vec<u8>,
    /// Changes since the last sync, in order, writes split into pages.
    volatile: Vec<Op>,
    /// What reads see: `durable` with `volatile` applied.
    seen: Vec<u8>,
    life: u64,
    /// False for a disk whose sync does nothing (the control: a store
    /// without its fsync).
    sync_works: bool,
    /// True for a disk that refuses every write, as a full one does.
    full: bool,
    /// A cut armed to happen at a page write: how many pages to go, and
    /// which unsynced changes it keeps.
    armed: Option<(usize, Keep)>,
    /// What the last cut did.
    last_cut: Option<Cut>,
}

/// Says, change by change, whether an unsynced change survives a cut.
type Keep = Box<dyn FnMut() -> bool + Send>;

enum Op {
    Write { offset: usize, data: Vec<u8> },
    SetLen(usize),
}

impl Op {
    /// Applies the change. A write past the end is clipped: at a cut, the
    /// growth it relied on may have been lost.
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            Op::SetLen(len) => bytes.resize(*len, 0),
            Op::Write { offset, data } => {
                let end = (offset + data.len()).min(bytes.len());
                if *offset < end {
                    bytes[*offset..end].copy_from_slice(&data[..end - offset]);
                }
            }
        }
    }
}

/// What a power cut did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cut {
    /// Changes (pages written, lengths set) not yet synced and lost.
    pub(crate) lost: usize,
    /// Changes not yet synced that reached the platter anyway.
    pub(crate) kept: usize,
}

impl Disk {
    /// An empty disk, powered on.
    pub(crate) fn new() -> Self {
        Self {
            platter: Arc::new(Mutex::new(Platter {
                durable: Vec::new(),
                volatile: Vec::new(),
                seen: Vec::new(),
                life: 0,
                sync_works: true,
                full: false,
                armed: None,
                last_cut: None,
            })),
            life: 0,
        }
    }

    fn platter(&self) -> MutexGuard<'_, Platter> {
        self.platter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle for the current life, to open the store with.
    pub(crate) fn handle(&self) -> Self {
        Self {
            platter: self.platter.clone(),
            life: self.platter().life,
        }
    }

    /// Makes `sync_data` do nothing from now on (or work again).
    pub(crate) fn set_sync_works(&self, works: bool) {
        self.platter().sync_works = works;
    }

    /// Makes every write and resize fail, as on a full disk (or work again).
    pub(crate) fn set_full(&self, full: bool) {
        self.platter().full = full;
    }

    /// Cuts the power as the `pages`-th page from now on is written (at
    /// once if 0), so the cut lands inside a commit: each change not yet
    /// synced reaches the platter only if `keep` says so, every handle made
    /// so far goes dead, and the disk comes back with what the platter
    /// holds.
    pub(crate) fn cut_at_write(&self, pages: usize, keep: impl FnMut() -> bool + Send + 'static) {
        let mut platter = self.platter();
        if pages == 0 {
            platter.cut(Box::new(keep));
        } else {
            platter.armed = Some((pages, Box::new(keep)));
        }
    }

    /// The number of cuts so far, and what the last one did.
    pub(crate) fn cuts(&self) -> (u64, Option<Cut>) {
        let platter = self.platter();
        (platter.life, platter.last_cut)
    }

    /// The platter to change, if this handle's life is the current one
    /// and the disk is not full.
    fn writable(&self) -> io::Result<MutexGuard<'_, Platter>> {
        let platter = self.live()?;
        if platter.full {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "the disk is full",
            ));
        }
        Ok(platter)
    }

    /// The platter, if this handle's life is the current one.
    fn live(&self) -> io::Result<MutexGuard<'_, Platter>> {
        let platter = self.platter();
        if platter.life == self.life {
            Ok(platter)
        } else {
            Err(io::Error::other("the power went off"))
        }
    }
}

impl Platter {
    fn cut(&mut self, mut keep: Keep) {
        let mut cut = Cut { lost: 0, kept: 0 };
        for op in std::mem::take(&mut self.volatile) {
            if keep() {
                op.apply(&mut self.durable);
                cut.kept += 1;
            } else {
                cut.lost += 1;
            }
        }
        self.seen.clone_from(&self.durable);
        self.life += 1;
        self.armed = None;
        self.last_cut = Some(cut);
    }
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let platter = self.platter();
        f.debug_struct("Disk")
            .field("life", &self.life)
            .field("durable_bytes", &platter.durable.len())
            .field("volatile_changes", &platter.volatile.len())
            .finish()
    }
}

fn range(offset: u64, len: usize, size: usize) -> io::Result<usize> {
    usize::try_from(offset)
        .ok()
        .filter(|o| o.checked_add(len).is_some_and(|end| end <= size))
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "past the end of the disk"))
}

impl StorageBackend for Disk {
    fn len(&self) -> io::Result<u64> {
        u64::try_from(self.live()?.seen.len()).map_err(io::Error::other)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let platter = self.live()?;
        let start = range(offset, out.len(), platter.seen.len())?;
        out.copy_from_slice(&platter.seen[start..start + out.len()]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut platter = self.writable()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        platter.seen.resize(len, 0);
        platter.volatile.push(Op::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut platter = self.live()?;
        let platter = &mut *platter;
        if platter.sync_works {
            for op in std::mem::take(&mut platter.volatile) {
                op.apply(&mut platter.durable);
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut platter = self.writable()?;
        let platter = &mut *platter;
        let start = range(offset, data.len(), platter.seen.len())?;
        platter.seen[start..start + data.len()].copy_from_slice(data);
        // Page by page, on page boundaries, as a kernel would write it back.
        let mut at = start;
        for piece in data.chunks(PAGE) {
            let first = (PAGE - at % PAGE).min(piece.len());
            for part in [&piece[..first], &piece[first..]] {
                if !part.is_empty() {
                    platter.volatile.push(Op::Write {
                        offset: at,
                        data: part.to_vec(),
                    });
                    at += part.len();
                    if let Some((pages, _)) = &mut platter.armed {
                        *pages -= 1;
                        if *pages == 0
                            && let Some((_, keep)) = platter.armed.take()
                        {
                            platter.cut(keep);
                            return Err(io::Error::other("the power went off"));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedBroker;
    use crate::{KvStore, QueueBroker, QueueSettings, ReceiveRequest, SendOptions};
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    const SETTINGS: QueueSettings = QueueSettings {
        max_deliveries: 5,
        max_messages: 100_000,
        max_bytes: 256 * 1024 * 1024,
    };

    /// What the callers of every life were told, and what they sent.
    #[derive(Default, Clone)]
    struct Told {
        /// Bodies of every send tried, answered or not.
        tried: HashSet<Vec<u8>>,
        /// Ids of sends answered OK.
        sent: HashSet<String>,
        /// Ids of messages whose completion was answered OK (it may come
        /// back after a cut: settles ride with the next commit).
        completed: HashSet<String>,
        /// Key-value writes answered OK (each key written once).
        stored: HashSet<String>,
        /// Deliveries of a message whose body was never sent.
        unexpected: usize,
    }

    /// What one life did before its power cut.
    struct Life {
        sent: usize,
        completed: usize,
        stored: usize,
        cut: Cut,
    }

    /// Runs senders, a receiver that completes most of what it gets (the
    /// rest lapse and come back), and a key-value writer against `broker`
    /// for `run`, then cuts the power at the `pages`-th page written after
    /// that, keeping the unsynced changes `keep` picks.
    async fn live_until_the_power_fails(
        broker: EmbeddedBroker,
        disk: &Disk,
        told: &Arc<Mutex<Told>>,
        life: u64,
        run: Duration,
        pages: usize,
        keep: impl FnMut() -> bool + Send + 'static,
    ) -> Life {
        let broker = Arc::new(broker);
        let stop = Arc::new(AtomicBool::new(false));
        let before = {
            let t = told.lock().unwrap();
            (t.sent.len(), t.completed.len(), t.stored.len())
        };
        let mut tasks = Vec::new();
        for sender in 0..4 {
            let (broker, told, stop) = (broker.clone(), told.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0.. {
                    let body = format!("{life}/{sender}/{n}").into_bytes();
                    told.lock().unwrap().tried.insert(body.clone());
                    match broker.send("q", body, SendOptions::now()).await {
                        Ok(id) => told.lock().unwrap().sent.insert(id),
                        Err(_) => break,
                    };
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }));
        }
        {
            let (broker, told, stop) = (broker.clone(), told.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let request = ReceiveRequest {
                    max_messages: 16,
                    visibility_timeout: Duration::from_millis(30),
                    wait: Duration::from_millis(5),
                };
                while !stop.load(Ordering::Relaxed) {
                    let Ok(got) = broker.receive("q", request).await else {
                        break;
                    };
                    for d in got {
                        if !told.lock().unwrap().tried.contains(&d.body) {
                            told.lock().unwrap().unexpected += 1;
                        }
                        // One in four is left to lapse and be delivered again.
                        if rand::random_range(0..4) > 0
                            && broker.complete("q", &d.receipt).await.is_ok()
                        {
                            told.lock().unwrap().completed.insert(d.id);
                        }
                    }
                }
            }));
        }
        {
            let (broker, told, stop) = (broker.clone(), told.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0.. {
                    let key = format!("{life}/{n}");
                    if stop.load(Ordering::Relaxed)
                        || broker
                            .set("b", &key, key.clone().into_bytes())
                            .await
                            .is_err()
                    {
                        break;
                    }
                    told.lock().unwrap().stored.insert(key);
                }
            }));
        }
        tokio::time::sleep(run).await;
        let (cuts, _) = disk.cuts();
        disk.cut_at_write(pages, keep);
        let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
        let cut = loop {
            match disk.cuts() {
                (now, Some(cut)) if now > cuts => break cut,
                _ => {}
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "the store stopped writing"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        let t = told.lock().unwrap();
        Life {
            sent: t.sent.len() - before.0,
            completed: t.completed.len() - before.1,
            stored: t.stored.len() - before.2,
            cut,
        }
    }

    /// The acknowledged sends not completed that the reopened store lacks,
    /// and the acknowledged key-value writes it lacks.
    async fn lost(broker: &EmbeddedBroker, told: &Told) -> (usize, usize) {
        let held: HashSet<String> = ["q", "q-poison"]
            .into_iter()
            .flat_map(|q| broker.contents(q))
            .map(|(id, _)| id)
            .collect();
        let messages = told
            .sent
            .iter()
            .filter(|id| !told.completed.contains(*id) && !held.contains(*id))
            .count();
        let mut entries = 0;
        for key in &told.stored {
            if broker.get("b", key).await.unwrap() != Some(key.clone().into_bytes()) {
                entries += 1;
            }
        }
        (messages, entries)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn nothing_acknowledged_is_lost_at_a_power_cut() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new();
        let told = Arc::new(Mutex::new(Told::default()));
        let mut unsynced_lost = 0;
        for life in 0..12 {
            let broker = EmbeddedBroker::open_on(dir.path(), SETTINGS, disk.handle())
                .unwrap_or_else(|e| panic!("life {life}: the store does not reopen: {e}"));
            if life > 0 {
                let snapshot = told.lock().unwrap().clone();
                let (messages, entries) = lost(&broker, &snapshot).await;
                assert_eq!(
                    (messages, entries),
                    (0, 0),
                    "acknowledged messages and key-value entries lost by the cut before life {life}"
                );
            }
            // Each cut comes a few pages into a commit. Every other one loses
            // all that was not synced; the rest keep a random half of its
            // pages, as a kernel part-way through writing them back would.
            let torn = life % 2 == 1;
            let run = Duration::from_millis(rand::random_range(40..160));
            let pages = rand::random_range(1..12);
            let this =
                live_until_the_power_fails(broker, &disk, &told, life, run, pages, move || {
                    torn && rand::random_bool(0.5)
                })
                .await;
            eprintln!(
                "life {life}: {} sent, {} completed, {} stored; the cut lost {} unsynced changes, kept {}",
                this.sent, this.completed, this.stored, this.cut.lost, this.cut.kept
            );
            if !torn {
                assert!(
                    this.cut.lost > 0,
                    "life {life}: the cut came between commits"
                );
            }
            // Each life got work done, so each cut came mid-stream.
            assert!(
                this.sent > 0 && this.completed > 0 && this.stored > 0,
                "life {life} made no progress: {} sent, {} completed, {} stored",
                this.sent,
                this.completed,
                this.stored
            );
            unsynced_lost += this.cut.lost;
        }
        let broker = EmbeddedBroker::open_on(dir.path(), SETTINGS, disk.handle()).unwrap();
        let told = told.lock().unwrap().clone();
        assert_eq!(lost(&broker, &told).await, (0, 0));
        assert_eq!(told.unexpected, 0, "delivered a message never sent");
        // The cuts did drop writes: what survived was the synced part.
        assert!(unsynced_lost > 0, "no cut caught a write in flight");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn without_its_fsync_the_store_loses_acknowledged_writes_at_a_power_cut() {
        // The control for the test above: the same load on a disk whose sync
        // does nothing (as if the store never fsynced) loses what it
        // acknowledged, so that test can fail.
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new();
        let told = Arc::new(Mutex::new(Told::default()));
        let broker = EmbeddedBroker::open_on(dir.path(), SETTINGS, disk.handle()).unwrap();
        disk.set_sync_works(false);
        let life = live_until_the_power_fails(
            broker,
            &disk,
            &told,
            0,
            Duration::from_millis(100),
            0,
            || false,
        )
        .await;
        assert!(life.sent > 0 && life.stored > 0);
        let broker = EmbeddedBroker::open_on(dir.path(), SETTINGS, disk.handle()).unwrap();
        let told = told.lock().unwrap().clone();
        let (messages, entries) = lost(&broker, &told).await;
        assert_eq!(
            messages,
            told.sent.difference(&told.completed).count(),
            "every acknowledged message not completed is lost"
        );
        assert!(messages > 0);
        assert_eq!(entries, told.stored.len());
    }

    #[tokio::test]
    async fn a_purge_whose_commit_fails_reaches_the_disk_with_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new();
        let broker = EmbeddedBroker::open_on(dir.path(), SETTINGS, disk.handle()).unwrap();
        for body in [b"a", b"b", b"c"] {
            let options = SendOptions::default();
            broker.send("jobs", body.to_vec(), options).await.unwrap();
        }
        disk.set_full(true);
        let refused = broker.purge("jobs").await;
        assert!(
            matches!(refused, Err(crate::BrokerError::Unavailable(_))),
            "a purge on a full disk answered {refused:?}"
        );
        // Made in memory all the same: the queue answers empty.
        assert_eq!(broker.len("jobs").await.unwrap(), 0);
        disk.set_full(false);
        // The store retries by itself; a flush returns once a commit (the
        // carried purge first) gets through.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while broker.flush().await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "no commit got through"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Lose whatever was not synced, then open the store again: the
        // purge is on the platter, so the messages stay gone.
        disk.cut_at_write(0, || false);
        drop(broker);
        let broker = EmbeddedBroker::open_on(dir.path(), SETTINGS, disk.handle()).unwrap();
        assert_eq!(
            broker.len("jobs").await.unwrap(),
            0,
            "purged messages came back"
        );
        assert_eq!(broker.len("jobs-poison").await.unwrap(), 0);
        broker
            .send("jobs", b"d".to_vec(), SendOptions::default())
            .await
            .unwrap();
        assert_eq!(broker.len("jobs").await.unwrap(), 1);
    }
}
