//! Writes a rendered template into the service's folder whole or not at all.
//!
//! Everything is first written into a staging folder on the same file
//! system; only once every file is there does it move into place. A missing
//! folder is the staging folder renamed (made beside it); an existing empty
//! one (`.` included, which the user's shell is in, so it must stay the same
//! folder) gets the staging folder's entries moved into it (made inside it).
//! On any failure the staging folder, and whatever was moved, is removed.

use anyhow::{Context as _, bail};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Writes `rendered` (paths relative to `folder`, with their bytes) into
/// `folder`, made if missing, refused if it holds anything.
pub fn make(folder: &Path, rendered: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    let existing = match std::fs::read_dir(folder) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "'{}' exists and is not empty: nothing written",
                    folder.display()
                );
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(e).with_context(|| {
                format!("'{}' exists and is not a readable folder", folder.display())
            });
        }
    };
    if existing {
        let staging = Staging::new_in(folder)?;
        staging.write(rendered)?;
        staging.move_entries_into(folder, rendered)
    } else {
        // `Path::parent` of a bare name is "", the current folder.
        let parent = folder
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot make {}", parent.display()))?;
        let staging = Staging::new_in(parent)?;
        staging.write(rendered)?;
        staging.rename_to(folder)
    }
}

/// A folder of ours being filled; removed, with what is left in it, when
/// dropped.
struct Staging {
    path: PathBuf,
}

impl Staging {
    /// A new folder in `parent`, named so that neither a template's files
    /// nor another `weft new` running meanwhile take the name.
    fn new_in(parent: &Path) -> anyhow::Result<Staging> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!(".weft-new-{pid}-{n}"));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(Staging { path }),
                // One left by a killed run of a process with this id.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot make a folder in {}", parent.display()));
                }
            }
        }
    }

    fn write(&self, rendered: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
        for (path, bytes) in rendered {
            let target = self.path.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot make {}", parent.display()))?;
            }
            std::fs::write(&target, bytes)
                .with_context(|| format!("cannot write {}", target.display()))?;
        }
        Ok(())
    }

    /// Renames the staging folder to `folder`, which does not exist (or
    /// has become an empty folder meanwhile, which it replaces).
    fn rename_to(self, folder: &Path) -> anyhow::Result<()> {
        std::fs::rename(&self.path, folder)
            .with_context(|| format!("cannot make {}", folder.display()))
    }

    /// Moves each of the staging folder's entries into `folder`, which the
    /// staging folder is in; if one cannot be moved (or its name was taken
    /// meanwhile), those already moved are removed.
    fn move_entries_into(
        self,
        folder: &Path,
        rendered: &[(String, Vec<u8>)],
    ) -> anyhow::Result<()> {
        let mut tops: Vec<&Path> = rendered
            .iter()
            .filter_map(|(path, _)| match Path::new(path).components().next() {
                Some(Component::Normal(top)) => Some(Path::new(top)),
                _ => None,
            })
            .collect();
        tops.sort();
        tops.dedup();
        let mut moved: Vec<PathBuf> = Vec::new();
        let result = tops.iter().try_for_each(|top| {
            let to = folder.join(top);
            if to.symlink_metadata().is_ok() {
                bail!("{} appeared meanwhile: nothing written", to.display());
            }
            std::fs::rename(self.path.join(top), &to)
                .with_context(|| format!("cannot move {} into place", to.display()))?;
            moved.push(to);
            Ok(())
        });
        if result.is_err() {
            for path in &moved {
                // Best effort: the error that stopped the move is the one
                // to report.
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(path)
                } else {
                    std::fs::remove_file(path)
                };
            }
        }
        result
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // After a rename it is gone; otherwise this is the clean-up.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn files(paths: &[&str]) -> Vec<(String, Vec<u8>)> {
        paths
            .iter()
            .map(|p| ((*p).to_owned(), format!("this is {p}").into_bytes()))
            .collect()
    }

    fn entries(folder: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_missing_folder_is_made_whole() {
        let parent = tempfile::tempdir().unwrap();
        let folder = parent.path().join("deeper/svc");
        make(&folder, &files(&["README.md", "src/main.rs"])).unwrap();
        assert_eq!(entries(&folder), ["README.md", "src"]);
        assert_eq!(
            std::fs::read_to_string(folder.join("src/main.rs")).unwrap(),
            "this is src/main.rs"
        );
        // Nothing but the folder is left beside it.
        assert_eq!(entries(folder.parent().unwrap()), ["svc"]);
    }

    /// An empty folder is filled and stays the same folder (the current
    /// one, with `weft new TEMPLATE .`).
    #[test]
    fn an_empty_folder_is_filled_and_stays_the_same_folder() {
        let parent = tempfile::tempdir().unwrap();
        let folder = parent.path().join("svc");
        std::fs::create_dir(&folder).unwrap();
        let inode = folder.metadata().unwrap().ino();
        make(&folder, &files(&["a", "b/c", "b/d"])).unwrap();
        assert_eq!(entries(&folder), ["a", "b"]);
        assert_eq!(entries(&folder.join("b")), ["c", "d"]);
        assert_eq!(folder.metadata().unwrap().ino(), inode);
        assert_eq!(entries(parent.path()), ["svc"]);
    }

    #[test]
    fn a_folder_with_anything_in_it_is_refused_and_left_alone() {
        let parent = tempfile::tempdir().unwrap();
        let folder = parent.path().join("svc");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("notes.txt"), "mine").unwrap();
        let refused = make(&folder, &files(&["a"])).unwrap_err().to_string();
        assert!(
            refused.contains("exists and is not empty: nothing written"),
            "{refused}"
        );
        assert_eq!(entries(&folder), ["notes.txt"]);

        let file = parent.path().join("file");
        std::fs::write(&file, "").unwrap();
        let refused = format!("{:#}", make(&file, &files(&["a"])).unwrap_err());
        assert!(refused.contains("not a readable folder"), "{refused}");
    }

    /// A write that fails halfway (here: `x/y` under a file `x`) leaves
    /// nothing behind: no folder where there was none, an empty folder
    /// still empty, no staging folder.
    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let broken = files(&["README.md", "x", "x/y"]);
        let parent = tempfile::tempdir().unwrap();
        let folder = parent.path().join("svc");
        let failed = format!("{:#}", make(&folder, &broken).unwrap_err());
        assert!(failed.contains("cannot make"), "{failed}");
        assert!(
            entries(parent.path()).is_empty(),
            "{:?}",
            entries(parent.path())
        );

        std::fs::create_dir(&folder).unwrap();
        make(&folder, &broken).unwrap_err();
        assert!(entries(&folder).is_empty(), "{:?}", entries(&folder));
        assert_eq!(entries(parent.path()), ["svc"]);
    }

    /// A name taken while the files were written: what was moved already
    /// is taken back out, the newcomer is left alone.
    #[test]
    fn a_move_that_fails_takes_back_what_it_moved() {
        let parent = tempfile::tempdir().unwrap();
        let folder = parent.path().join("svc");
        std::fs::create_dir(&folder).unwrap();
        let staging = Staging::new_in(&folder).unwrap();
        let rendered = files(&["a", "b/c", "z"]);
        staging.write(&rendered).unwrap();
        std::fs::write(folder.join("z"), "theirs").unwrap();
        let failed = staging
            .move_entries_into(&folder, &rendered)
            .unwrap_err()
            .to_string();
        assert!(failed.contains("appeared meanwhile"), "{failed}");
        assert_eq!(entries(&folder), ["z"]);
        assert_eq!(std::fs::read_to_string(folder.join("z")).unwrap(), "theirs");
    }
}
