//! Reading and replacing the files broker shares with people and other processes: the inventory and
//! the settings file (and its backup).
//!
//! Every such file is replaced whole: the new text goes to a temporary file next to the file it
//! replaces, is fsynced and renamed over it, and the directory is fsynced, so a reader or a crash sees
//! the old file or the new one, never a mix. Two things a plain rename would get wrong are kept:
//!
//! - a symbolic link stays a link: its target is replaced (the temporary file sits next to the
//!   target, so the rename stays within one directory and one file system);
//! - an existing file keeps its permission bits, and its owner and group where the process may set
//!   them, so a group-shared inventory stays shared. New files are private to their owner (0600).
//!
//! This module must not lock: callers that read, change and write hold their own lock around it.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The byte order mark some editors put at the start of UTF-8 files.
const BOM: char = '\u{feff}';

/// The text without a leading UTF-8 byte order mark.
pub(crate) fn strip_bom(text: &str) -> &str {
    text.strip_prefix(BOM).unwrap_or(text)
}

/// Replaces the file at `path` (or, when `path` is a symbolic link, the file it points to) with
/// `contents`, atomically. `action` names the write in errors ("writing inventory").
pub(crate) fn replace(path: &Path, contents: &[u8], action: &'static str) -> Result<()> {
    write_replacing(path, contents, action, true)
}

/// As [`replace`], but the new file is readable by its owner only (0600 on Unix), whatever the mode
/// of the file it replaces: for contents that hold secrets.
///
/// # Errors
/// [`Error::Io`] naming `path` when the directory cannot be made or the file cannot be written,
/// synced or renamed.
#[cfg(feature = "handoff")]
pub fn replace_private(path: &Path, contents: &[u8], action: &'static str) -> Result<()> {
    write_replacing(path, contents, action, false)
}

fn write_replacing(path: &Path, contents: &[u8], action: &'static str, keep: bool) -> Result<()> {
    let failed = |e| Error::io(action, path, e);
    let target = follow_links(path).map_err(failed)?;
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating directory", dir, e))?;
    let existing = match std::fs::metadata(&target) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(failed(e)),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(target.file_name().unwrap_or_default());
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(failed)?;
    tmp.write_all(contents).map_err(failed)?;
    // A temporary file is made 0600; it keeps that when the contents are private.
    if let Some(meta) = existing.as_ref().filter(|_| keep) {
        keep_access(tmp.as_file(), meta).map_err(failed)?;
    }
    tmp.as_file().sync_all().map_err(failed)?;
    tmp.persist(&target).map_err(|e| failed(e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The file a path names after following symbolic links in its last component, as `open` would.
/// A dangling link names the file the write will create.
pub(crate) fn follow_links(path: &Path) -> std::io::Result<PathBuf> {
    const MAX_LINKS: usize = 40;
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = std::fs::read_link(&current)?;
                // A relative link is relative to the directory holding it; `join` keeps an absolute one.
                current = match current.parent() {
                    Some(dir) => dir.join(link),
                    None => link,
                };
            }
            Ok(_) => return Ok(current),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(current),
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!(
        "more than {MAX_LINKS} symbolic links in a row"
    )))
}

/// Gives the new file the permission bits of the one it replaces, and its owner and group when this
/// process may (the owner of a file may change its group to one of their groups; root may do all).
#[cfg(unix)]
fn keep_access(file: &std::fs::File, old: &std::fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let new = file.metadata()?;
    if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
        let uid = (new.uid() != old.uid()).then_some(old.uid());
        let gid = (new.gid() != old.gid()).then_some(old.gid());
        // Best effort: a user who may not give the file away still keeps its mode below.
        let _ = std::os::unix::fs::fchown(file, uid, gid);
    }
    file.set_permissions(old.permissions())
}

#[cfg(not(unix))]
fn keep_access(file: &std::fs::File, old: &std::fs::Metadata) -> std::io::Result<()> {
    file.set_permissions(old.permissions())
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_replaced_file_keeps_its_mode_and_a_new_one_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared.yaml");
        std::fs::write(&shared, "old\n").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o664)).unwrap();
        replace(&shared, b"new\n", "writing").unwrap();
        assert_eq!(std::fs::read_to_string(&shared).unwrap(), "new\n");
        assert_eq!(mode(&shared), 0o664);

        let fresh = dir.path().join("fresh.yaml");
        replace(&fresh, b"new\n", "writing").unwrap();
        assert_eq!(mode(&fresh), 0o600);
    }

    #[test]
    fn a_symbolic_link_is_written_through_and_stays_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let target = real.join("inventory.yaml");
        std::fs::write(&target, "old\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("inventory.yaml");
        std::os::unix::fs::symlink("real/inventory.yaml", &link).unwrap();
        // A link to a link is followed to the end.
        let link2 = dir.path().join("again.yaml");
        std::os::unix::fs::symlink(&link, &link2).unwrap();

        replace(&link2, b"new\n", "writing").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert!(std::fs::symlink_metadata(&link2).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new\n");
        assert_eq!(mode(&target), 0o640);
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(&real),
            ["inventory.yaml"],
            "no temporary file is left"
        );
        assert_eq!(names(dir.path()), ["again.yaml", "inventory.yaml", "real"]);
    }

    #[test]
    fn a_dangling_link_creates_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("settings.yaml");
        std::os::unix::fs::symlink("elsewhere.yaml", &link).unwrap();
        replace(&link, b"a: 1\n", "writing").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("elsewhere.yaml")).unwrap(),
            "a: 1\n"
        );
    }

    #[test]
    fn a_file_in_directories_not_made_yet_is_written_there_leaving_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/sub/inventory.yaml");
        replace(&path, b"- a: 1\n", "writing inventory").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "- a: 1\n");
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            ["inventory.yaml"],
            "the temporary file sits next to the file"
        );
    }

    #[test]
    fn a_path_through_a_file_fails_naming_the_write_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        let path = file.join("inventory.yaml");
        match replace(&path, b"new\n", "writing inventory") {
            Err(Error::Io {
                action,
                path: Some(named),
                ..
            }) => {
                assert_eq!(action, "writing inventory");
                assert_eq!(named, path);
            }
            other => panic!("expected the write's own I/O error, got {other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    }

    /// A replaced file keeps its owner and group, not the writer's, where the writer may set them
    /// (root may; another user may only pick one of their groups, which this test then uses).
    #[test]
    fn a_replaced_file_keeps_its_owner_and_group() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared.yaml");
        std::fs::write(&shared, "old\n").unwrap();
        let mine = std::fs::metadata(&shared).unwrap();
        let (uid, gid) = if mine.uid() == 0 {
            (Some(65534), 65534)
        } else {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let other = status
                .lines()
                .find_map(|l| l.strip_prefix("Groups:"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|g| g.parse::<u32>().ok())
                .find(|g| *g != mine.gid());
            let Some(gid) = other else {
                eprintln!(
                    "NOTE: the owner part of this test needs root or a second group; mode only"
                );
                return;
            };
            (None, gid)
        };
        std::os::unix::fs::chown(&shared, uid, Some(gid)).unwrap();
        replace(&shared, b"new\n", "writing").unwrap();
        let after = std::fs::metadata(&shared).unwrap();
        assert_eq!(after.gid(), gid);
        assert_eq!(after.uid(), uid.unwrap_or(mine.uid()));
    }

    #[test]
    fn a_byte_order_mark_is_stripped_once() {
        assert_eq!(strip_bom("\u{feff}- a: 1\n"), "- a: 1\n");
        assert_eq!(strip_bom("- a: 1\n"), "- a: 1\n");
    }
}
