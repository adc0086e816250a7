// Included by the build scripts of worker-shim and kanban-watchdog
// (`include!`), so both binaries name their build the same way.

/// The build's name: `KANBAN_WATCHDOG_BUILD` when a packager sets it (one
/// variable for both binaries), else `git describe` of the checkout, else
/// empty. Reruns the build script when either changes, not on every build.
fn build_id() -> String {
    println!("cargo:rerun-if-env-changed=KANBAN_WATCHDOG_BUILD");
    std::env::var("KANBAN_WATCHDOG_BUILD")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(git_describe)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
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
        let p = std::path::Path::new(&git_dir).join(f);
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    git(&["describe", "--tags", "--always", "--abbrev=12"])
}
