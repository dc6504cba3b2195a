//! Folders and files only the user running the host can reach, whatever
//! the umask: every folder Weft makes (state roots, service and scratch
//! folders, the blob folder, the component cache) and every file it writes
//! (the admin token, records, blobs, cache entries and key).
//!
//! - [`create_private_dir`] makes each missing folder of a path `0700`
//!   (set explicitly, so a umask of `002` cannot widen it), then checks the
//!   folder as [`check_trusted_dir`] does.
//! - [`check_trusted_dir`] refuses, in one line naming the folder, one owned
//!   by another user or writable by its group or by others: whoever could
//!   write there could plant a component, a record or a token.
//! - [`write_private_file`] and [`create_private_file`] write a `0600` file
//!   whole: to a temporary name in the same folder, fsynced, then renamed
//!   (or linked, never replacing an existing file) and the folder fsynced,
//!   so a crash leaves the old file or the new one, never part of one.
//! - [`remove_stale_temporaries`] deletes what such a write left behind when
//!   the process was killed between its steps.

use std::io::Write as _;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The name prefix of the temporary files [`write_private_file`] makes.
pub const TEMP_PREFIX: &str = ".weft-tmp-";

/// Why a private folder or file could not be made, or is not trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateFsError {
    /// The OS refused an operation.
    #[error("{}: {source}", path.display())]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The folder belongs to another user.
    #[error(
        "{}: owned by user {owner}, not by this user ({me}); use a folder of your own",
        path.display()
    )]
    NotOwned {
        /// The folder.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// The folder's group or other users may write to it.
    #[error(
        "{}: writable by other users (mode {mode:03o}); make it private: chmod 700 {}",
        path.display(),
        path.display()
    )]
    Writable {
        /// The folder.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Something other than a folder is where a folder should be.
    #[error("{}: not a folder", path.display())]
    NotAFolder {
        /// The path.
        path: PathBuf,
    },
}

impl PrivateFsError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// This process's effective uid: the owner of its `/proc/self` entry.
fn my_uid() -> Result<u32, PrivateFsError> {
    static UID: OnceLock<u32> = OnceLock::new();
    if let Some(uid) = UID.get() {
        return Ok(*uid);
    }
    let uid = std::fs::metadata("/proc/self")
        .map_err(|e| PrivateFsError::io(Path::new("/proc/self"), e))?
        .uid();
    Ok(*UID.get_or_init(|| uid))
}

/// Creates `path` and any missing parent `0700` (whatever the umask), then
/// checks it as [`check_trusted_dir`] does. Folders that already exist are
/// checked, never changed.
pub fn create_private_dir(path: &Path) -> Result<(), PrivateFsError> {
    // The missing folders, deepest first.
    let mut missing = Vec::new();
    let mut cursor = Some(path);
    while let Some(folder) = cursor {
        if folder.as_os_str().is_empty() || std::fs::symlink_metadata(folder).is_ok() {
            break;
        }
        missing.push(folder);
        cursor = folder.parent();
    }
    for folder in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(folder) {
            Ok(()) => {
                // chmod is not masked by the umask, as mkdir's mode is.
                std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| PrivateFsError::io(folder, e))?;
            }
            // Made meanwhile by another process: checked below like any other.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(PrivateFsError::io(folder, e)),
        }
    }
    check_trusted_dir(path)
}

/// Refuses a folder that is missing, owned by another user, or writable
/// by its group or by others.
pub fn check_trusted_dir(path: &Path) -> Result<(), PrivateFsError> {
    let meta = std::fs::metadata(path).map_err(|e| PrivateFsError::io(path, e))?;
    if !meta.is_dir() {
        return Err(PrivateFsError::NotAFolder {
            path: path.to_path_buf(),
        });
    }
    let me = my_uid()?;
    if meta.uid() != me {
        return Err(PrivateFsError::NotOwned {
            path: path.to_path_buf(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(PrivateFsError::Writable {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Writes `bytes` to a new `0600` temporary file beside `path`, fsynced;
/// returns its path.
fn write_temporary(path: &Path, bytes: &[u8]) -> Result<PathBuf, PrivateFsError> {
    let folder = folder_of(path);
    let temporary = folder.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        // fchmod is not masked by the umask, as open's mode is.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    match written {
        Ok(()) => Ok(temporary),
        Err(e) => {
            let _ = std::fs::remove_file(&temporary);
            Err(PrivateFsError::io(path, e))
        }
    }
}

fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    }
}

/// Makes a rename or link in `folder` durable.
fn sync_folder(folder: &Path) {
    if let Ok(dir) = std::fs::File::open(folder) {
        let _ = dir.sync_all();
    }
}

/// Writes `bytes` to `path` (mode `0600`), replacing any file there, whole
/// or not at all. The folder must exist.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), PrivateFsError> {
    let temporary = write_temporary(path, bytes)?;
    if let Err(e) = std::fs::rename(&temporary, path) {
        let _ = std::fs::remove_file(&temporary);
        return Err(PrivateFsError::io(path, e));
    }
    sync_folder(folder_of(path));
    Ok(())
}

/// Writes `bytes` to `path` (mode `0600`) only if no file is there: whole
/// or not at all, and never over a file another process made meanwhile
/// (an error of kind `AlreadyExists` then).
pub fn create_private_file(path: &Path, bytes: &[u8]) -> Result<(), PrivateFsError> {
    let temporary = write_temporary(path, bytes)?;
    // link(2) fails if the name is taken, unlike rename(2).
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    linked.map_err(|e| PrivateFsError::io(path, e))?;
    sync_folder(folder_of(path));
    Ok(())
}

/// Whether `name` is a temporary file a write of Weft's left behind: one
/// of [`TEMP_PREFIX`], or of earlier releases (`.tmpXXXXXX` from the
/// `tempfile` crate for blobs, records and tokens; `NAME.HEX.tmp` for cache
/// entries). No file Weft keeps is named either way.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) || name.starts_with(".tmp") || name.ends_with(".tmp")
}

/// Deletes the temporary files in `folder` (see [`is_temporary`]) not
/// modified for `older_than`: a write makes, fills, syncs and renames its
/// temporary file in a moment, so an old one belongs to a writer that was
/// killed, while a young one may belong to another process writing now.
/// Returns how many it deleted.
pub fn remove_stale_temporaries(folder: &Path, older_than: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(is_temporary) {
            continue;
        }
        let stale = entry.metadata().ok().is_some_and(|meta| {
            meta.is_file()
                && meta
                    .modified()
                    .ok()
                    .and_then(|modified| now.duration_since(modified).ok())
                    .is_some_and(|age| age >= older_than)
        });
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(folder = %folder.display(), removed, "removed temporary files left by an interrupted write");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn folders_are_made_private_and_open_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_private_dir(&deep).unwrap();
        for folder in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&dir.path().join(folder)), 0o700, "{folder}");
        }
        // Again: an existing private folder is fine, and left alone.
        create_private_dir(&deep).unwrap();
        chmod(&deep, 0o750);
        create_private_dir(&deep).unwrap();
        assert_eq!(mode(&deep), 0o750);
        for open in [0o770, 0o702, 0o777] {
            chmod(&deep, open);
            let error = create_private_dir(&deep).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("{}: writable by other users", deep.display())),
                "{error}"
            );
            assert!(!error.contains('\n'), "{error}");
        }
        chmod(&deep, 0o700);
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            check_trusted_dir(&file),
            Err(PrivateFsError::NotAFolder { .. })
        ));
    }

    #[test]
    fn a_folder_of_another_user_is_refused() {
        // Needs root to give a folder away; as anyone else, the check is
        // shown by the folder of another user every system has.
        if my_uid().unwrap() != 0 {
            let error = check_trusted_dir(Path::new("/")).unwrap_err().to_string();
            assert!(error.contains("owned by user 0"), "{error}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        chmod(&theirs, 0o700);
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let error = create_private_dir(&theirs).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!(
                "{}: owned by user 65534, not by this user (0)",
                theirs.display()
            )),
            "{error}"
        );
    }

    #[test]
    fn files_are_written_whole_and_private_and_a_new_one_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record");
        write_private_file(&path, b"one").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(mode(&path), 0o600);
        write_private_file(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");

        let token = dir.path().join("token");
        create_private_file(&token, b"first").unwrap();
        assert_eq!(mode(&token), 0o600);
        let error = create_private_file(&token, b"second").unwrap_err();
        assert!(
            matches!(&error, PrivateFsError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
            "{error}"
        );
        assert_eq!(std::fs::read(&token).unwrap(), b"first");
        // Nothing temporary is left behind.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["record", "token"]);
    }

    #[test]
    fn only_old_temporary_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        let names = [
            format!("{TEMP_PREFIX}0123"),
            ".tmpAbC123".to_owned(),
            "entry.cwasm.0123.tmp".to_owned(),
            "kept".to_owned(),
        ];
        for name in &names {
            let file = std::fs::File::create(dir.path().join(name)).unwrap();
            file.set_modified(old).unwrap();
        }
        let young = dir.path().join(format!("{TEMP_PREFIX}young"));
        std::fs::write(&young, "").unwrap();
        assert_eq!(
            remove_stale_temporaries(dir.path(), Duration::from_secs(600)),
            3
        );
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [format!("{TEMP_PREFIX}young"), "kept".to_owned()]);
    }
}
