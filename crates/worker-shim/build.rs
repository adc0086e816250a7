//! Records which build this is for `worker-shim --version`: `git describe` of the
//! checkout when there is one (else nothing), or `KANBAN_WATCHDOG_BUILD`
//! when a packager sets it (one variable for both binaries). Reruns when
//! HEAD moves, not on every build.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KANBAN_WATCHDOG_BUILD");
    let describe = std::env::var("KANBAN_WATCHDOG_BUILD")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(git_describe)
        .unwrap_or_default();
    println!("cargo:rustc-env=WORKER_SHIM_BUILD={}", describe.trim());
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn git_describe() -> Option<String> {
    // Rerun when HEAD moves (a commit, checkout or reset writes HEAD's
    // reflog; a branch switch rewrites HEAD).
    let git_dir = git(&["rev-parse", "--absolute-git-dir"])?;
    for f in ["HEAD", "logs/HEAD"] {
        let p = Path::new(&git_dir).join(f);
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    git(&["describe", "--tags", "--always", "--abbrev=12"])
}
