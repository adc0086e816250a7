//! Records which build this is for `worker-shim --version`: `git describe` of the
//! checkout when there is one (else nothing), or `KANBAN_WATCHDOG_BUILD`
//! when a packager sets it (one variable for both binaries). Reruns when
//! HEAD moves, not on every build.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    pack_relative_relocs();
    println!("cargo:rerun-if-env-changed=KANBAN_WATCHDOG_BUILD");
    let describe = std::env::var("KANBAN_WATCHDOG_BUILD")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(git_describe)
        .unwrap_or_default();
    println!("cargo:rustc-env=WORKER_SHIM_BUILD={}", describe.trim());
}

/// Links the shim with packed relative relocations (DT_RELR) on Linux/glibc.
///
/// A PIE of this size carries ~16,000 relative relocations: 390 KB of
/// `.rela.dyn` that the dynamic loader reads and applies at every start,
/// which made up a third of the shim's page faults on `-- true` and about
/// 0.7 MiB of its peak RSS. Packed, the table is 5 KB. The binary stays a
/// PIE (ASLR unchanged). GNU ld >= 2.38 and lld >= 15 know the option and
/// use it only when the C library supports DT_RELR (glibc >= 2.36), so a
/// binary always runs where it was linked; an older linker ignores it with
/// a warning. `WORKER_SHIM_NO_RELR=1` leaves it out.
fn pack_relative_relocs() {
    println!("cargo:rerun-if-env-changed=WORKER_SHIM_NO_RELR");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let off = !matches!(var("WORKER_SHIM_NO_RELR").trim(), "" | "0");
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" && !off {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
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
