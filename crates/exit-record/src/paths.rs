//! Where records live and how they are named, and the check that a
//! directory we write into is ours alone.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The shim's and the watchdog's shared default record directory:
/// `$XDG_STATE_HOME/kanban-watchdog/records`, else
/// `$HOME/.local/state/kanban-watchdog/records`, else
/// `/tmp/kanban-watchdog-<uid>/records` when neither is set.
///
/// The last one is a predictable name in a world-writable directory:
/// another local user can create it first. Whoever writes there checks it
/// with [`ensure_private_dir`] first.
pub fn default_record_dir() -> PathBuf {
    let from_env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(state) = from_env("XDG_STATE_HOME") {
        return state.join("kanban-watchdog").join("records");
    }
    if let Some(home) = from_env("HOME") {
        return home
            .join(".local")
            .join("state")
            .join("kanban-watchdog")
            .join("records");
    }
    // SAFETY: getuid never fails and has no preconditions.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/kanban-watchdog-{uid}/records"))
}

/// `<id>.json`
pub fn record_file_name(id: &str) -> String {
    format!("{id}.json")
}

/// True for names a reader should pick up: `*.json`, not hidden (temp files
/// are written as hidden `.<id>.json.tmp` and renamed into place).
pub fn is_record_file_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".json") && name.len() > ".json".len()
}

/// What is wrong with a directory (or one of the directories above it).
#[derive(Debug, thiserror::Error)]
pub enum DirProblem {
    #[error("cannot create it: {0}")]
    Create(std::io::Error),
    #[error("cannot inspect {path}: {source}")]
    Inspect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("{path} is owned by uid {found}, not by this user (uid {expected})")]
    NotOurs {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{path} is owned by uid {found}, neither this user (uid {expected}) nor root")]
    ForeignAncestor {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{path} is writable by its group or by others (mode {mode:04o})")]
    Writable { path: PathBuf, mode: u32 },
}

impl DirProblem {
    /// What the operator can do about it.
    fn fix(&self) -> String {
        match self {
            DirProblem::Create(_) | DirProblem::Inspect { .. } => {
                "create it (mode 0700) or choose another directory".into()
            }
            DirProblem::NotADirectory { path } => {
                format!("remove {} or choose another directory", path.display())
            }
            DirProblem::NotOurs { path, found, .. }
            | DirProblem::ForeignAncestor { path, found, .. } => format!(
                "someone else (uid {found}) may have created {} to hijack it: have it removed \
                 (by its owner or root) and let this program create it, or set XDG_STATE_HOME \
                 (or the configured directory) to a directory only you can write",
                path.display()
            ),
            DirProblem::Writable { path, .. } => format!("run `chmod go-w {}`", path.display()),
        }
    }
}

/// A directory we will not keep records or state in, and why. Its message
/// is one line: what is wrong, and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("unsafe directory {dir}: {problem}; refusing to use it. Fix: {fix}", fix = .problem.fix())]
pub struct UnsafeDir {
    pub dir: PathBuf,
    pub problem: DirProblem,
}

/// Creates `dir` (and missing parents) with mode 0700 when missing, then
/// checks it with [`check_private_dir`].
pub fn ensure_private_dir(dir: &Path) -> Result<(), UnsafeDir> {
    use std::os::unix::fs::DirBuilderExt;
    if std::fs::symlink_metadata(dir).is_err()
        && let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    {
        return Err(UnsafeDir {
            dir: dir.to_path_buf(),
            problem: DirProblem::Create(e),
        });
    }
    check_private_dir(dir)
}

/// Refuses a directory another user could write to, as OpenSSH's
/// `StrictModes` refuses `~/.ssh` (its `safe_path()`): `dir` must be a
/// directory owned by this user and not writable by group or others, and
/// every directory above it (on the path as written and on the resolved
/// path) must be owned by this user or root and not writable by group or
/// others. One exception, as sudo and systemd's tmpfiles make it: a
/// root-owned directory with the sticky bit (`/tmp`), where nobody else
/// can rename or remove our entries. A symbolic link on the way must be
/// owned by this user or root (a link another user owns can be re-pointed
/// at any time, as the kernel's `protected_symlinks` assumes too).
pub fn check_private_dir(dir: &Path) -> Result<(), UnsafeDir> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let fail = |problem| UnsafeDir {
        dir: dir.to_path_buf(),
        problem,
    };
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|source| {
                fail(DirProblem::Inspect {
                    path: dir.to_path_buf(),
                    source,
                })
            })?
            .join(dir)
    };
    check_chain(&absolute, me).map_err(fail)?;
    let real = std::fs::canonicalize(&absolute).map_err(|source| {
        fail(DirProblem::Inspect {
            path: absolute.clone(),
            source,
        })
    })?;
    if real != absolute {
        check_chain(&real, me).map_err(fail)?;
    }
    Ok(())
}

/// Checks `leaf` and every ancestor of it, without following the last
/// component of each.
fn check_chain(leaf: &Path, me: u32) -> Result<(), DirProblem> {
    for path in leaf.ancestors() {
        let meta = std::fs::symlink_metadata(path).map_err(|source| DirProblem::Inspect {
            path: path.to_path_buf(),
            source,
        })?;
        let (uid, mode) = (meta.uid(), meta.mode());
        let trusted_owner = uid == me || uid == 0;
        if meta.file_type().is_symlink() {
            if !trusted_owner {
                return Err(DirProblem::ForeignAncestor {
                    path: path.to_path_buf(),
                    found: uid,
                    expected: me,
                });
            }
            continue;
        }
        if !meta.is_dir() {
            return Err(DirProblem::NotADirectory {
                path: path.to_path_buf(),
            });
        }
        let group_or_other_writable = mode & 0o022 != 0;
        if path == leaf {
            if uid != me {
                return Err(DirProblem::NotOurs {
                    path: path.to_path_buf(),
                    found: uid,
                    expected: me,
                });
            }
            if group_or_other_writable {
                return Err(DirProblem::Writable {
                    path: path.to_path_buf(),
                    mode: mode & 0o7777,
                });
            }
        } else {
            if !trusted_owner {
                return Err(DirProblem::ForeignAncestor {
                    path: path.to_path_buf(),
                    found: uid,
                    expected: me,
                });
            }
            // `MetadataExt::mode` is a u32; `libc::S_ISVTX` is a mode_t (u16 on macOS).
            let sticky_root = uid == 0 && mode & 0o1000 != 0;
            if group_or_other_writable && !sticky_root {
                return Err(DirProblem::Writable {
                    path: path.to_path_buf(),
                    mode: mode & 0o7777,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn temp_files_are_not_records() {
        assert!(is_record_file_name("0192-abc.json"));
        assert!(!is_record_file_name(".0192-abc.json.tmp"));
        assert!(!is_record_file_name(".0192-abc.json"));
        assert!(!is_record_file_name("0192-abc.json.tmp"));
        assert!(!is_record_file_name(".json"));
        assert!(!is_record_file_name("notes.txt"));
    }

    #[test]
    fn a_private_directory_passes_and_a_writable_one_is_refused_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state/records");
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_private_dir(&dir).unwrap_err();
        assert!(matches!(err.problem, DirProblem::Writable { .. }), "{err}");
        assert!(err.to_string().contains("chmod go-w"), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
        // A writable parent is as bad: it could swap the directory.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let parent = tmp.path().join("state");
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o770)).unwrap();
        let err = check_private_dir(&dir).unwrap_err();
        assert!(
            matches!(&err.problem, DirProblem::Writable { path, .. } if path == &parent),
            "{err}"
        );
    }

    #[test]
    fn a_file_in_the_way_is_not_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert!(matches!(
            check_private_dir(&f).unwrap_err().problem,
            DirProblem::NotADirectory { .. }
        ));
        assert!(matches!(
            ensure_private_dir(&f.join("sub")).unwrap_err().problem,
            DirProblem::Create(_)
        ));
    }

    #[test]
    fn a_link_of_ours_to_a_private_directory_is_followed_and_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        ensure_private_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        check_private_dir(&link).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o757)).unwrap();
        assert!(check_private_dir(&link).is_err());
    }
}
