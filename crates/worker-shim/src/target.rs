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

/// Resolves the real program: `WORKER_SHIM_TARGET` (a path, or a name looked
/// up on PATH), else the first executable called `name` on PATH that is not
/// this shim.
pub fn resolve_target(
    name: &str,
    target_env: Option<&OsStr>,
    path_env: Option<&OsStr>,
) -> Result<PathBuf, String> {
    let me = std::env::current_exe().ok().and_then(|p| identity(&p));
    let wanted = target_env.filter(|t| !t.is_empty());
    if let Some(target) = wanted {
        let target = Path::new(target);
        if target.components().count() > 1 {
            return Ok(target.to_path_buf());
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
        if me.is_some() && identity(&candidate) == me {
            continue;
        }
        return Ok(candidate);
    }
    Err(format!(
        "masquerading as {name:?} but no other executable {lookup:?} is on PATH; set WORKER_SHIM_TARGET to the real program"
    ))
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}
