//! The counts of spans dropped and exported, which `/metrics` shows: a
//! leaf module, so that the batching task (`batch.rs`) counts into them
//! without importing its parent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

/// Spans dropped and exported, counted since the process started.
#[derive(Debug, Default)]
pub struct SpanStats {
    dropped: AtomicU64,
    exported: AtomicU64,
}

static PROCESS: LazyLock<Arc<SpanStats>> = LazyLock::new(Arc::default);

impl SpanStats {
    /// The process's counts, which `/metrics` shows.
    pub fn process() -> Arc<SpanStats> {
        PROCESS.clone()
    }

    /// Spans dropped: the queue was full, or their batch failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Spans the collector accepted.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    pub(crate) fn add_dropped(&self, spans: usize) {
        let spans = u64::try_from(spans).unwrap_or(u64::MAX);
        self.dropped.fetch_add(spans, Ordering::Relaxed);
    }

    pub(crate) fn add_exported(&self, spans: usize) {
        let spans = u64::try_from(spans).unwrap_or(u64::MAX);
        self.exported.fetch_add(spans, Ordering::Relaxed);
    }
}
