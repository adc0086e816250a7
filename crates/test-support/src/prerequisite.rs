//! A test never passes silently when what it needs is missing.

/// True under CI (`CI=true` or `CI=1`), where every prerequisite is
/// provided (see `.ci/run`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A prerequisite is missing: under CI this fails the test; anywhere else
/// it prints `SKIPPED: why` and the caller returns.
///
/// # Panics
/// Under CI, always.
pub fn prerequisite_missing(why: &str) {
    assert!(!in_ci(), "prerequisite missing under CI=true: {why}");
    eprintln!("SKIPPED: {why}");
}
