//! Masquerade mode: the shim installed under another name (for example as
//! `hermes` through `HERMES_BIN`) runs the real program of that name.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const SHIM_NAME: &str = "worker-shim";

/// The shim runs in masquerade mode when invoked under a name other than
/// `worker-shim`.
pub fn masquerade_name(argv0: &OsStr) -> Option<String> {
    let name = Path::new(argv0).file_name()?.to_str()?.to_string();
    (name != SHIM_NAME && !name.starts_with("worker-shim")).then_some(name)
}

/// The real program, and a warning line when `WORKER_SHIM_TARGET` was refused.
#[derive(Debug)]
pub struct Resolved {
    pub path: PathBuf,
    pub warning: Option<String>,
}

/// Resolves the real program: `WORKER_SHIM_TARGET` (a path, or a name looked
/// up on PATH), else the first executable called `name` on PATH that is not
/// this shim.
///
/// A `WORKER_SHIM_TARGET` path that is this shim (the same file, through a
/// symlink or a hard link) would run the shim again forever. It is refused
/// with one line and the lookup goes on as if it were unset: the next
/// `name` on PATH that is not the shim (as ccache and distcc do in
/// masquerade mode, skipping themselves on PATH), else the error (exit 127,
/// "not found", as a shell reports a missing command).
pub fn resolve_target(
    name: &str,
    target_env: Option<&OsStr>,
    path_env: Option<&OsStr>,
) -> Result<Resolved, String> {
    let me = std::env::current_exe().ok().and_then(|p| identity(&p));
    let is_me = |p: &Path| me.is_some() && identity(p) == me;
    let mut wanted = target_env.filter(|t| !t.is_empty());
    let mut refused = None;
    if let Some(target) = wanted {
        let target = Path::new(target);
        if target.components().count() > 1 {
            if !is_me(target) {
                return Ok(Resolved {
                    path: target.to_path_buf(),
                    warning: None,
                });
            }
            refused = Some(format!(
                "WORKER_SHIM_TARGET={:?} is this shim itself (it would run itself in a loop)",
                target.display().to_string()
            ));
            wanted = None;
        }
    }
    let lookup = wanted.and_then(|t| t.to_str()).unwrap_or(name);
    for dir in std::env::split_paths(path_env.unwrap_or_default()) {
        let candidate = dir.join(lookup);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        if is_me(&candidate) {
            continue;
        }
        return Ok(Resolved {
            warning: refused.map(|r| format!("{r}; running {} instead", candidate.display())),
            path: candidate,
        });
    }
    Err(match refused {
        Some(r) => format!(
            "{r}, and no other executable {name:?} is on PATH; set WORKER_SHIM_TARGET to the real program"
        ),
        None => format!(
            "masquerading as {name:?} but no other executable {lookup:?} is on PATH; set WORKER_SHIM_TARGET to the real program"
        ),
    })
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}
