//! Reset times over the whole real-world corpus, whatever the state of the
//! signatures: every real failure that states a provider reset time
//! (`resets_at` / `retry_after_s`) must be read exactly, and no client's own
//! retry backoff (`client_backoff: true`) may be read as a reset.
//!
//! A case is classified with the built-in catalogue; when that does not give
//! the expected class (the signatures are still being written), a stand-in
//! catalogue with one broad signature picks the matched line instead (the last
//! line in the stream's tail that looks like an API error), so the reset-time
//! extraction is measured on its own. Prints `stated reset times read exactly:
//! N/M`, every `MISS id (reset: ...)` and every `BACKOFF read as a reset: id`.

use std::path::{Path, PathBuf};

use failure_signatures::{Catalogue, Classification, ClassifyContext, FailureClass};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Deserialize;

/// "now" the corpus' absolute reset times were computed against.
const NOW: i64 = 1_780_858_305;
const GOAL: f64 = 0.97;

#[derive(Debug, Deserialize)]
struct File {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    id: String,
    kind: String,
    text: String,
    #[serde(default)]
    class: Option<FailureClass>,
    #[serde(default)]
    resets_at: Option<i64>,
    #[serde(default)]
    retry_after_s: Option<f64>,
    #[serde(default)]
    client_backoff: Option<bool>,
}

fn failures() -> Vec<Case> {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/corpus exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("failures"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no failure corpus in {}", dir.display());
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).expect("readable corpus file");
            let parsed: File =
                serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            parsed.cases
        })
        .filter(|c| c.kind == "failure")
        .collect()
}

fn ctx() -> ClassifyContext {
    ClassifyContext::new(
        Timestamp::from_second(NOW).expect("valid now"),
        TimeZone::UTC,
    )
}

/// Broad signatures standing in for the built-ins: the last line that looks
/// like an API error, else the last non-blank line.
fn stand_in() -> Catalogue {
    Catalogue::from_yaml_str(
        r#"signatures:
  - name: stand-in
    class: rate_limit
    priority: 10
    pattern: '(?i)(429|529|50[0-4]|rate.?limit|usage limit|limit reached|reached|limit|quota|overloaded|exhausted|too many|timed out|connection|unavailable|capacity|throttl|error)'
  - name: stand-in-any-line
    class: rate_limit
    priority: 0
    pattern: '\S'
"#,
        "stand-in",
    )
    .expect("valid stand-in catalogue")
}

/// The classification whose reset time counts, and whether it came from
/// the built-ins (`builtin` is `None` to use the stand-in only).
fn classify(
    case: &Case,
    builtin: Option<&Catalogue>,
    stand_in: &Catalogue,
) -> (Option<Classification>, bool) {
    let ctx = ctx();
    if let Some(c) = builtin.and_then(|b| b.classify(&case.text, &ctx))
        && Some(c.class) == case.class
    {
        return (Some(c), true);
    }
    (stand_in.classify(&case.text, &ctx), false)
}

/// Reads every stated reset and every client backoff of the corpus, prints
/// the tally and the misses, and asserts the goals.
fn check(builtin: Option<&Catalogue>) {
    let stand_in = stand_in();
    let (mut stated, mut exact, mut via_builtin, mut judged) = (0u32, 0u32, 0u32, 0u32);
    let mut misses = Vec::new();
    let mut backoffs = Vec::new();
    let mut backoff_cases = 0u32;
    for case in failures() {
        let wants_reset = case.resets_at.is_some() || case.retry_after_s.is_some();
        let backoff = case.client_backoff == Some(true);
        if !wants_reset && !backoff {
            continue;
        }
        let (got, from_builtin) = classify(&case, builtin, &stand_in);
        judged += 1;
        via_builtin += u32::from(from_builtin);
        let (at, after) = got
            .as_ref()
            .map_or((None, None), |c| (c.resets_at, c.retry_after_s));
        if wants_reset {
            stated += 1;
            let ok = match (case.resets_at, case.retry_after_s) {
                (Some(want), _) => at == Some(want),
                (None, Some(want)) => after.is_some_and(|got| (got - want).abs() <= 1.0),
                (None, None) => unreachable!(),
            };
            if ok {
                exact += 1;
            } else {
                misses.push(format!(
                    "{} (reset: want {:?}/{:?}, got {at:?}/{after:?}{})",
                    case.id,
                    case.resets_at,
                    case.retry_after_s,
                    if got.is_none() { ", unclassified" } else { "" }
                ));
            }
        } else {
            backoff_cases += 1;
            if at.is_some() || after.is_some() {
                backoffs.push(format!("{} (got {at:?}/{after:?})", case.id));
            }
        }
    }
    let share = if stated == 0 {
        1.0
    } else {
        f64::from(exact) / f64::from(stated)
    };
    println!(
        "stated reset times read exactly: {exact}/{stated} = {:.1}% (goal {:.0}%; {via_builtin}/{judged} cases judged by the built-ins, the rest by the stand-in)",
        100.0 * share,
        100.0 * GOAL
    );
    println!(
        "client backoffs ignored: {}/{backoff_cases}",
        backoff_cases - backoffs.len() as u32
    );
    for m in &misses {
        println!("MISS {m}");
    }
    for b in &backoffs {
        println!("BACKOFF read as a reset: {b}");
    }
    assert!(
        backoffs.is_empty(),
        "client backoff read as a provider reset: {backoffs:?}"
    );
    assert!(
        share >= GOAL,
        "only {exact}/{stated} stated reset times read exactly; misses listed above"
    );
}

/// With the built-ins where they class the case right.
#[test]
fn corpus_reset_times() {
    check(Some(&Catalogue::builtin()));
}

/// With the stand-in only: the extraction on its own, whatever line the
/// built-ins pick.
#[test]
fn corpus_reset_times_with_the_stand_in_only() {
    check(None);
}
