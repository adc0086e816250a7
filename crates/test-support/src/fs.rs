//! Looking at files and processes from a test.

use std::path::Path;

/// The names in `dir`, sorted (none when it cannot be read).
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Whether process `pid` is alive; a zombie counts as dead.
pub fn proc_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The binary a suite runs: the path in the environment variable `var`
/// when it is set and not empty (`scripts/test` runs the shim's suite a
/// second time with `WORKER_SHIM_UNDER_TEST` naming the static build
/// `scripts/install` ships), else `built`, the one cargo built for the
/// test (`env!("CARGO_BIN_EXE_<name>")`).
pub fn bin_under_test(var: &str, built: &str) -> std::path::PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(built))
}
