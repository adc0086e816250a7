//! The one atomic file writer of the workspace: a reader sees the old file
//! or the new one, never half of one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What the new file should be like.
#[derive(Clone, Copy, Debug)]
pub struct AtomicOptions {
    /// Its permission bits (0600 unless said otherwise).
    pub mode: u32,
    /// Its owner and group, best effort (only root can give a file away).
    pub owner: Option<(u32, u32)>,
    /// fsync the file before the rename and (best effort) the directory
    /// after it.
    /// Atomic visibility comes from the rename alone; fsync adds crash
    /// durability.
    pub fsync: bool,
    /// How the temp file is named.
    pub temp: TempName,
}

/// The hidden temp file's name, in the target's directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TempName {
    /// `.<name>.<pid>.<uuid>.tmp`: unpredictable; a name already taken (a
    /// planted link, say) is skipped for the next one.
    Unique,
    /// `.<name>.tmp`: for a target whose name is already unique (an exit
    /// record's UUID). Anything already there, a link included, fails the
    /// write.
    Fixed,
}

impl Default for AtomicOptions {
    fn default() -> Self {
        AtomicOptions {
            mode: 0o600,
            owner: None,
            fsync: true,
            temp: TempName::Unique,
        }
    }
}

/// Writes `body` to `path` through a hidden temp file in the same
/// directory, renamed into place; the temp file is removed on any failure.
///
/// The temp file (see [`TempName`]) is created with
/// `O_CREAT|O_EXCL|O_NOFOLLOW` and mode 0600: a link or a file someone
/// planted at the temp name is never written through, and rename(2)
/// replaces a link at `path` rather than following it. The directory must
/// exist.
pub fn write_file_atomic(path: &Path, body: &[u8], opts: AtomicOptions) -> std::io::Result<()> {
    write_file_atomic_with(path, opts, |file| file.write_all(body))
}

/// [`write_file_atomic`] with the body written by `write` straight into the
/// temp file (buffer it yourself): no copy of a large body in memory.
pub fn write_file_atomic_with(
    path: &Path,
    opts: AtomicOptions,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let (mut file, tmp) = match opts.temp {
        TempName::Unique => create_unique_temp(dir, &name)?,
        TempName::Fixed => {
            let tmp = dir.join(format!(".{name}.tmp"));
            (create_private(&tmp)?, tmp)
        }
    };
    let result = (|| {
        if let Some((uid, gid)) = opts.owner {
            let _ = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
        }
        if opts.mode != 0o600 {
            file.set_permissions(std::fs::Permissions::from_mode(opts.mode))?;
        }
        write(&mut file)?;
        if opts.fsync {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if opts.fsync {
            // Best effort: the file is in place and its bytes are on disk;
            // a directory we cannot open for reading does not undo that.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    })();
    drop(file);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A new, empty, private (0600) file at `path` that nobody else had a
/// handle on: `O_EXCL` refuses any existing entry, a link included.
fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// [`create_private`] at an unpredictable name in `dir` (a UUIDv7's random
/// bits); a taken name is skipped for the next one.
fn create_unique_temp(dir: &Path, name: &str) -> std::io::Result<(File, PathBuf)> {
    let mut last = None;
    for _ in 0..16 {
        let tmp = dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            crate::new_record_id()
        ));
        match create_private(&tmp) {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temp file name")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_file_is_replaced_whole_with_the_mode_asked_and_no_temp_left() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.json");
        std::fs::write(&path, b"old").unwrap();
        write_file_atomic(&path, b"new", AtomicOptions::default()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let opts = AtomicOptions {
            mode: 0o644,
            fsync: false,
            temp: TempName::Fixed,
            ..AtomicOptions::default()
        };
        write_file_atomic(&path, b"newer", opts).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "only the file itself");
    }

    #[test]
    fn a_link_at_the_name_is_replaced_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let path = tmp.path().join("x.json");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_file_atomic(&path, b"new", AtomicOptions::default()).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(
            !std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn a_missing_directory_is_an_error_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("no/such/x.json");
        assert!(write_file_atomic(&path, b"x", AtomicOptions::default()).is_err());
    }
}
