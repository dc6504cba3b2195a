//! The quota on a role's scratch folder: a guest cannot fill the host's
//! disk through `/scratch`.
//!
//! wasmtime-wasi has no quotas, so the functions of `wasi:filesystem/types`
//! that can make a folder hold more are shadowed in the [`Linker`], each
//! charging the role's [`ScratchQuota`] before it calls wasmtime-wasi's own
//! implementation:
//!
//! - `descriptor.write`: the bytes written;
//! - `descriptor.set-size`: the growth past the file's current size;
//! - `descriptor.write-via-stream` and `append-via-stream`: the stream they
//!   return is wrapped, and every byte written through it (`write`,
//!   `blocking-write-and-flush`, `write-zeroes`, and `splice`, which writes
//!   through the same trait) is charged before it reaches the file;
//! - `descriptor.open-at` with `create`, `create-directory-at`,
//!   `symlink-at` and `link-at`: [`ENTRY_BYTES`] per new name, so a guest
//!   cannot exhaust inodes with empty files either.
//!
//! Those are every way `wasi:filesystem` (0.2) grows a folder; the role's
//! only folder is its scratch folder, so every write is charged. A charge
//! past the quota answers `insufficient-space` (a stream's write fails with
//! `ENOSPC`), never a trap. Charges are an estimate that over-counts
//! (an overwrite, a failed write, a deletion are not credited back), so
//! when one would pass the quota the folder is measured (file sizes plus
//! [`ENTRY_BYTES`] per entry) and the estimate reset; measuring stops once
//! past the quota, so it reads at most `quota / ENTRY_BYTES` entries, and
//! runs at most once per [`MEASURE_EVERY`] while the role stays full.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{DynOutputStream, FsError, FsResult, OutputStream, Pollable, StreamError};

/// The interface shadowed: the version wasmtime-wasi links (guests asking
/// for any 0.2.x are served by it). A test writes past the quota through
/// each path, so a wasmtime-wasi that moved on would be caught.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";
/// What one file, folder or link costs besides its bytes: about a block
/// and an inode.
pub(crate) const ENTRY_BYTES: u64 = 4096;
/// While a role is at its quota, how often a refused write may measure the
/// folder again (to notice files the guest removed).
const MEASURE_EVERY: Duration = Duration::from_millis(250);
/// `ENOSPC`, which wasmtime-wasi maps to `insufficient-space` (the same
/// number on Linux and macOS).
const ENOSPC: i32 = 28;

/// How much one role's scratch folder may hold, and an estimate of what it
/// holds, shared by all the role's sandboxes, and by every version of the
/// role that runs at once (an upgrade's old and new: see [`Self::of`]).
#[derive(Debug)]
pub(crate) struct ScratchQuota {
    dir: PathBuf,
    account: Mutex<Account>,
}

#[derive(Debug)]
struct Account {
    /// The quota, in bytes (the newest version's).
    limit: u64,
    /// The last measure, plus every charge since.
    used: u64,
    measured_at: Instant,
}

/// A charge past the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverQuota;

impl ScratchQuota {
    /// The quota of `limit` bytes on `dir`: the one every live role version
    /// with this folder shares (so two versions side by side cannot each
    /// fill it), now with `limit`; or a new one, measuring what the folder
    /// holds (a scratch folder outlives the host's restarts).
    pub(crate) fn of(dir: &Path, limit: u64) -> Arc<Self> {
        static LIVE: Mutex<BTreeMap<PathBuf, Weak<ScratchQuota>>> = Mutex::new(BTreeMap::new());
        let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, quota| quota.strong_count() > 0);
        if let Some(quota) = live.get(dir).and_then(Weak::upgrade) {
            quota
                .account
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .limit = limit;
            return quota;
        }
        let quota = Arc::new(Self::new(dir.to_path_buf(), limit));
        live.insert(dir.to_path_buf(), Arc::downgrade(&quota));
        quota
    }

    fn new(dir: PathBuf, limit: u64) -> Self {
        let used = measure(&dir, limit);
        Self {
            dir,
            account: Mutex::new(Account {
                limit,
                used,
                measured_at: Instant::now(),
            }),
        }
    }

    /// Charges `bytes` of growth; refused if it would pass the quota.
    pub(crate) fn charge(&self, bytes: u64) -> Result<(), OverQuota> {
        let mut account = self.account.lock().unwrap_or_else(|p| p.into_inner());
        let limit = account.limit;
        let fits = |used: u64| used.checked_add(bytes).filter(|&n| n <= limit);
        if let Some(used) = fits(account.used) {
            account.used = used;
            return Ok(());
        }
        if account.measured_at.elapsed() >= MEASURE_EVERY {
            account.used = measure(&self.dir, limit);
            account.measured_at = Instant::now();
            if let Some(used) = fits(account.used) {
                account.used = used;
                return Ok(());
            }
        }
        Err(OverQuota)
    }

    /// The estimate of what the folder holds, in bytes.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.account.lock().unwrap_or_else(|p| p.into_inner()).used
    }
}

/// What `dir` holds: every file's size plus [`ENTRY_BYTES`] per entry,
/// symbolic links not followed. Stops once past `limit` (the answer is then
/// some number above it).
fn measure(dir: &Path, limit: u64) -> u64 {
    let mut total = 0u64;
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            total = total.saturating_add(ENTRY_BYTES);
            if meta.is_dir() {
                folders.push(entry.path());
            } else {
                total = total.saturating_add(meta.len());
            }
            if total > limit {
                return total;
            }
        }
    }
    total
}

/// What the shadowed functions need of a store's data: its WASI view, and
/// its role's quota. The sandbox's store data implements it; this module
/// needs nothing else of the sandbox.
pub(crate) trait ScratchView: WasiView + Send + 'static {
    /// The role's quota, if it has a scratch folder.
    fn scratch_quota(&self) -> Option<Arc<ScratchQuota>>;
}

/// The role's quota, if it has a scratch folder.
fn quota_of<T: ScratchView>(store: &StoreContextMut<'_, T>) -> Option<Arc<ScratchQuota>> {
    store.data().scratch_quota()
}

/// Charges `bytes`, or the error a guest sees past its quota.
fn charge(quota: Option<&ScratchQuota>, bytes: u64) -> Result<(), ErrorCode> {
    match quota {
        Some(quota) => quota
            .charge(bytes)
            .map_err(|OverQuota| ErrorCode::InsufficientSpace),
        None => Ok(()),
    }
}

fn len(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Lowers wasmtime-wasi's result to the function's: an error code for the
/// guest, or a trap.
fn lower<T>(result: FsResult<T>) -> wasmtime::Result<(Result<T, ErrorCode>,)> {
    match result {
        Ok(value) => Ok((Ok(value),)),
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}

type Reply<T> = wasmtime::Result<(Result<T, ErrorCode>,)>;

/// Shadows the write paths of `wasi:filesystem/types` in `linker` (after
/// wasmtime-wasi is linked into it) with ones that charge the quota.
pub(crate) fn add_to_linker<T: ScratchView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store: StoreContextMut<'_, T>,
         (fd, buf, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let quota = quota_of(&store);
                if let Err(code) = charge(quota.as_deref(), len(buf.len())) {
                    return Ok((Err(code),));
                }
                let mut fs = store.data_mut().filesystem();
                lower(HostDescriptor::write(&mut fs, fd, buf, offset).await)
            }) as Box<dyn Future<Output = Reply<u64>> + Send + '_>
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.set-size",
        |mut store: StoreContextMut<'_, T>, (fd, size): (Resource<Descriptor>, u64)| {
            Box::new(async move {
                let quota = quota_of(&store);
                let mut fs = store.data_mut().filesystem();
                if quota.is_some() {
                    let now =
                        match HostDescriptor::stat(&mut fs, Resource::new_borrow(fd.rep())).await {
                            Ok(stat) => stat.size,
                            Err(e) => return lower(Err(e)),
                        };
                    if let Err(code) = charge(quota.as_deref(), size.saturating_sub(now)) {
                        return Ok((Err(code),));
                    }
                }
                lower(HostDescriptor::set_size(&mut fs, fd, size).await)
            }) as Box<dyn Future<Output = Reply<()>> + Send + '_>
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.write-via-stream",
        |mut store: StoreContextMut<'_, T>, (fd, offset): (Resource<Descriptor>, u64)| {
            Box::new(async move {
                let quota = quota_of(&store);
                let mut fs = store.data_mut().filesystem();
                let stream = HostDescriptor::write_via_stream(&mut fs, fd, offset);
                lower(
                    stream.and_then(|s| metered(store.data_mut(), s, quota).map_err(FsError::trap)),
                )
            }) as Box<dyn Future<Output = Reply<Resource<DynOutputStream>>> + Send + '_>
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.append-via-stream",
        |mut store: StoreContextMut<'_, T>, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let quota = quota_of(&store);
                let mut fs = store.data_mut().filesystem();
                let stream = HostDescriptor::append_via_stream(&mut fs, fd);
                lower(
                    stream.and_then(|s| metered(store.data_mut(), s, quota).map_err(FsError::trap)),
                )
            }) as Box<dyn Future<Output = Reply<Resource<DynOutputStream>>> + Send + '_>
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: StoreContextMut<'_, T>,
         (fd, path_flags, path, oflags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                if oflags.contains(OpenFlags::CREATE)
                    && let Err(code) = charge(quota_of(&store).as_deref(), ENTRY_BYTES)
                {
                    return Ok((Err(code),));
                }
                let mut fs = store.data_mut().filesystem();
                lower(HostDescriptor::open_at(&mut fs, fd, path_flags, path, oflags, flags).await)
            }) as Box<dyn Future<Output = Reply<Resource<Descriptor>>> + Send + '_>
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store: StoreContextMut<'_, T>, (fd, path): (Resource<Descriptor>, String)| {
            Box::new(async move {
                if let Err(code) = charge(quota_of(&store).as_deref(), ENTRY_BYTES) {
                    return Ok((Err(code),));
                }
                let mut fs = store.data_mut().filesystem();
                lower(HostDescriptor::create_directory_at(&mut fs, fd, path).await)
            }) as Box<dyn Future<Output = Reply<()>> + Send + '_>
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store: StoreContextMut<'_, T>,
         (fd, old, new): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                let cost = ENTRY_BYTES.saturating_add(len(old.len()));
                if let Err(code) = charge(quota_of(&store).as_deref(), cost) {
                    return Ok((Err(code),));
                }
                let mut fs = store.data_mut().filesystem();
                lower(HostDescriptor::symlink_at(&mut fs, fd, old, new).await)
            }) as Box<dyn Future<Output = Reply<()>> + Send + '_>
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.link-at",
        |mut store: StoreContextMut<'_, T>,
         (fd, flags, old, to, new): (
            Resource<Descriptor>,
            PathFlags,
            String,
            Resource<Descriptor>,
            String,
        )| {
            Box::new(async move {
                if let Err(code) = charge(quota_of(&store).as_deref(), ENTRY_BYTES) {
                    return Ok((Err(code),));
                }
                let mut fs = store.data_mut().filesystem();
                lower(HostDescriptor::link_at(&mut fs, fd, flags, old, to, new).await)
            }) as Box<dyn Future<Output = Reply<()>> + Send + '_>
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Puts `stream` (a file's) back in the table wrapped so that its writes
/// are charged, under the same kind of handle.
fn metered<T: ScratchView>(
    state: &mut T,
    stream: Resource<DynOutputStream>,
    quota: Option<Arc<ScratchQuota>>,
) -> wasmtime::Result<Resource<DynOutputStream>> {
    let Some(quota) = quota else {
        return Ok(stream);
    };
    let table = state.ctx().table;
    let inner = table.delete(stream)?;
    let wrapped: DynOutputStream = Box::new(QuotaStream { inner, quota });
    Ok(table.push(wrapped)?)
}

/// A file's output stream whose every write is charged first.
struct QuotaStream {
    inner: DynOutputStream,
    quota: Arc<ScratchQuota>,
}

impl QuotaStream {
    fn charge(&self, bytes: usize) -> Result<(), StreamError> {
        self.quota.charge(len(bytes)).map_err(|OverQuota| {
            StreamError::LastOperationFailed(std::io::Error::from_raw_os_error(ENOSPC).into())
        })
    }
}

#[async_trait::async_trait]
impl Pollable for QuotaStream {
    async fn ready(&mut self) {
        self.inner.ready().await;
    }
}

#[async_trait::async_trait]
impl OutputStream for QuotaStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.charge(bytes.len())?;
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        self.inner.check_write()
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.charge(bytes.len())?;
        self.inner.blocking_write_and_flush(bytes).await
    }

    fn write_zeroes(&mut self, nelem: usize) -> Result<(), StreamError> {
        self.charge(nelem)?;
        self.inner.write_zeroes(nelem)
    }

    async fn write_ready(&mut self) -> Result<usize, StreamError> {
        self.inner.write_ready().await
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_is_a_manifest_limit_with_a_safe_default() {
        use crate::engine_config::EngineConfig;
        use crate::limits::SandboxLimits;
        let engine = EngineConfig::default();
        let default = SandboxLimits::default();
        assert_eq!(default.scratch_bytes(), 64 * 1024 * 1024);
        let two: SandboxLimits = toml::from_str("scratch-mib = 2").unwrap();
        assert_eq!(two.scratch_bytes(), 2 * 1024 * 1024);
        assert!(two.validate(&engine).is_ok());
        for bad in [0, SandboxLimits::MAX_SCRATCH_MIB + 1, u64::MAX] {
            let limits = SandboxLimits {
                scratch_mib: bad,
                ..default
            };
            let error = limits.validate(&engine).unwrap_err().to_string();
            assert!(error.contains("scratch-mib"), "{error}");
        }
    }

    #[test]
    fn charges_past_the_quota_are_refused_until_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old"), vec![0; 10_000]).unwrap();
        let quota = ScratchQuota::new(dir.path().to_path_buf(), 64 * 1024);
        // What the folder held at start counts.
        let start = 10_000 + ENTRY_BYTES;
        assert_eq!(quota.used(), start);
        assert_eq!(quota.charge(40_000), Ok(()));
        // Past the estimate: measured (those 40,000 bytes never reached
        // the folder), then allowed.
        std::thread::sleep(MEASURE_EVERY);
        assert_eq!(quota.charge(30_000), Ok(()));
        assert_eq!(quota.used(), start + 30_000);
        // Bytes really written: refused once the folder holds them.
        std::fs::write(dir.path().join("big"), vec![0; 40_000]).unwrap();
        std::thread::sleep(MEASURE_EVERY);
        assert_eq!(quota.charge(30_000), Err(OverQuota));
        assert_eq!(quota.used(), 2 * start + 40_000 - 10_000);
        // While full, not measured again at once: a removed file counts
        // only after the next measure.
        std::fs::remove_file(dir.path().join("big")).unwrap();
        assert_eq!(quota.charge(30_000), Err(OverQuota));
        std::thread::sleep(MEASURE_EVERY);
        assert_eq!(quota.charge(30_000), Ok(()));
        assert_eq!(quota.charge(u64::MAX), Err(OverQuota));
    }

    #[test]
    fn versions_of_a_role_side_by_side_share_one_quota() {
        let dir = tempfile::tempdir().unwrap();
        let old = ScratchQuota::of(dir.path(), 64 * 1024);
        let new = ScratchQuota::of(dir.path(), 64 * 1024);
        assert!(Arc::ptr_eq(&old, &new));
        assert_eq!(old.charge(40_000), Ok(()));
        assert_eq!(new.charge(40_000), Err(OverQuota));
        // The newest version's limit holds for both.
        let newest = ScratchQuota::of(dir.path(), 128 * 1024);
        assert_eq!(old.charge(40_000), Ok(()));
        drop((old, new, newest));
        // Once no version runs, the next starts afresh.
        let other = tempfile::tempdir().unwrap();
        assert!(!Arc::ptr_eq(
            &ScratchQuota::of(dir.path(), 1),
            &ScratchQuota::of(other.path(), 1)
        ));
    }
}
