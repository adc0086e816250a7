//! Runs every case of `provider-errors.yaml` (the shared fixture and the
//! vendored copy in tests/fixtures/) through the built-in catalogue.

use std::path::{Path, PathBuf};

use failure_signatures::{Catalogue, ClassifyContext, FailureClass};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Deserialize;

/// Fixed "now" for relative times: 2026-05-04T00:00:00Z.
const NOW: i64 = 1_777_852_800;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    text: String,
    class: Option<FailureClass>,
    provider: Option<String>,
    resets_at: Option<i64>,
    retry_after_s: Option<f64>,
    transient: Option<bool>,
}

const RELATIVE: &str = "shared/fixtures/provider-errors.yaml";

/// `PROVIDER_ERRORS_FIXTURE`, else `shared/fixtures/provider-errors.yaml` in
/// CARGO_MANIFEST_DIR or any ancestor (this covers both `<workspace>/shared`
/// and `<workspace>/../shared`, the layout CI uses). `None` on a plain clone
/// without `shared/` beside it: the tests that need it say SKIPPED (the
/// vendored copy is tested either way); under CI (`CI=true`), where
/// `shared/` is always laid beside the checkout, its absence is a failure.
fn shared_fixture() -> Option<PathBuf> {
    let found = std::panic::catch_unwind(shared_fixture_path);
    match found {
        Ok(p) => Some(p),
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but shared/fixtures/provider-errors.yaml is not beside the checkout")
        }
        Err(_) => {
            println!(
                "SKIPPED: shared/fixtures/provider-errors.yaml is not beside this checkout; \
                 the vendored copy tests/fixtures/provider-errors.yaml was tested instead"
            );
            None
        }
    }
}

fn shared_fixture_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PROVIDER_ERRORS_FIXTURE") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "PROVIDER_ERRORS_FIXTURE={} does not exist",
            p.display()
        );
        return p;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut searched = Vec::new();
    for dir in manifest.ancestors() {
        let candidate = dir.join(RELATIVE);
        if candidate.is_file() {
            return candidate;
        }
        searched.push(candidate);
    }
    panic!(
        "shared fixture {RELATIVE} not found; set PROVIDER_ERRORS_FIXTURE or place shared/ beside the workspace. Searched:\n{}",
        searched
            .iter()
            .map(|p| format!("  {}", p.display()))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn vendored_fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/provider-errors.yaml")
}

fn load(path: &Path) -> Fixture {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let fixture: Fixture = serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()));
    assert!(!fixture.cases.is_empty(), "{} has no cases", path.display());
    fixture
}

fn check_all(path: &Path) {
    let fixture = load(path);
    let catalogue = Catalogue::builtin();
    let ctx = ClassifyContext::new(Timestamp::from_second(NOW).expect("valid"), TimeZone::UTC);
    let mut failures = Vec::new();
    for case in &fixture.cases {
        if let Err(msg) = check_case(&catalogue, &ctx, case) {
            failures.push(format!("[{}] {msg}\n    text: {}", case.name, case.text));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases in {} failed:\n{}",
        failures.len(),
        fixture.cases.len(),
        path.display(),
        failures.join("\n")
    );
}

fn check_case(catalogue: &Catalogue, ctx: &ClassifyContext, case: &Case) -> Result<(), String> {
    let got = catalogue.classify(&case.text, ctx);
    let Some(expected_class) = case.class else {
        return match got {
            None => Ok(()),
            Some(c) => Err(format!(
                "expected no classification, got {} via {}",
                c.class, c.signature
            )),
        };
    };
    let got = got.ok_or_else(|| format!("expected {expected_class}, got nothing"))?;
    let mut errs = Vec::new();
    if got.class != expected_class {
        errs.push(format!(
            "class: expected {expected_class}, got {} (signature {})",
            got.class, got.signature
        ));
    }
    if let Some(p) = &case.provider {
        if got.provider.as_deref() != Some(p.as_str()) {
            errs.push(format!("provider: expected {p}, got {:?}", got.provider));
        }
    }
    if let Some(t) = case.transient {
        if got.transient != t {
            errs.push(format!("transient: expected {t}, got {}", got.transient));
        }
    }
    if let Some(r) = case.resets_at {
        if got.resets_at != Some(r) {
            errs.push(format!("resets_at: expected {r}, got {:?}", got.resets_at));
        }
    }
    if let Some(r) = case.retry_after_s {
        match got.retry_after_s {
            Some(g) if (g - r).abs() < 1e-9 => {}
            other => errs.push(format!("retry_after_s: expected {r}, got {other:?}")),
        }
        // Relative delays also produce an absolute reset: ceil(now + delay).
        let expected_at = NOW + r.ceil() as i64;
        if got.resets_at != Some(expected_at) {
            errs.push(format!(
                "resets_at from retry_after: expected {expected_at}, got {:?}",
                got.resets_at
            ));
        }
    }
    if got.matched_line.is_empty() || got.matched_line.len() > 1024 {
        errs.push(format!(
            "matched_line has bad length {}",
            got.matched_line.len()
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

#[test]
fn shared_fixture_cases() {
    if let Some(path) = shared_fixture() {
        check_all(&path);
    }
}

#[test]
fn vendored_fixture_cases() {
    check_all(&vendored_fixture_path());
}

#[test]
fn vendored_copy_covers_every_class_and_lookalikes() {
    let fixture = load(&vendored_fixture_path());
    for class in FailureClass::ALL {
        // Not every class has a real sample in the fixture; the ones that do
        // are listed here so a trimmed copy is noticed.
        let needed = matches!(
            class,
            FailureClass::RateLimit
                | FailureClass::Quota
                | FailureClass::Overloaded
                | FailureClass::AuthExpired
                | FailureClass::RequestTooLarge
        );
        if needed {
            assert!(
                fixture.cases.iter().any(|c| c.class == Some(class)),
                "vendored fixture lacks a {class} case"
            );
        }
    }
    assert!(fixture.cases.iter().any(|c| c.class.is_none()));
}

#[test]
fn vendored_copy_includes_every_shared_case() {
    let Some(path) = shared_fixture() else {
        return;
    };
    let shared = load(&path);
    let vendored = load(&vendored_fixture_path());
    let missing: Vec<&str> = shared
        .cases
        .iter()
        .filter(|s| {
            !vendored
                .cases
                .iter()
                .any(|v| v.name == s.name && v.text == s.text)
        })
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "tests/fixtures/provider-errors.yaml is out of date, missing: {missing:?}"
    );
}
