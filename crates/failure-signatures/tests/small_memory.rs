//! With small memory preferred (the shim's mode: no lazy DFA, see
//! `failure_signatures::prefer_small_memory`) every text of the corpus and
//! every built-in example is classified exactly as in the default mode:
//! same winner, class, provider, reset time and matched line. The mode is
//! process-wide and regexes are compiled once per process, so the test runs
//! itself again in a child process with the mode set, and compares.

use std::path::Path;
use std::process::Command;

use failure_signatures::{Catalogue, ClassifyContext, prefer_small_memory};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Deserialize;

/// 2026-06-07T18:51:45Z, as the corpus test.
const NOW: i64 = 1_780_858_305;
const CHILD: &str = "KW_SMALL_MEMORY_CHILD";
const BEGIN: &str = "--- results ---";
const TEST: &str = "small_memory_classifies_as_the_default";

#[derive(Deserialize)]
struct File {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
}

fn texts() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/corpus exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    let mut texts = Vec::new();
    for path in paths {
        let yaml = std::fs::read_to_string(&path).expect("readable corpus file");
        let file: File = serde_yaml::from_str(&yaml).expect("corpus file parses");
        texts.extend(file.cases.into_iter().map(|c| c.text));
    }
    for sig in Catalogue::builtin().signatures() {
        texts.extend(sig.examples().iter().map(|e| e.to_string()));
    }
    texts
}

fn results() -> Vec<String> {
    let ctx = ClassifyContext::new(Timestamp::from_second(NOW).expect("valid"), TimeZone::UTC);
    let catalogue = Catalogue::builtin();
    texts()
        .iter()
        .map(|t| format!("{:?}", catalogue.classify(t, &ctx)).replace('\n', "\\n"))
        .collect()
}

#[test]
fn small_memory_classifies_as_the_default() {
    if std::env::var_os(CHILD).is_some() {
        prefer_small_memory();
        println!("{BEGIN}");
        for line in results() {
            println!("{line}");
        }
        return;
    }
    let default = results();
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("the test binary runs again");
    assert!(out.status.success(), "child failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let small: Vec<&str> = stdout
        .split_once(BEGIN)
        .expect("the child printed its results")
        .1
        .lines()
        .skip(1)
        .take(default.len())
        .collect();
    assert_eq!(small.len(), default.len(), "child printed too few results");
    let classified = default.iter().filter(|r| r.starts_with("Some")).count();
    assert!(
        classified > 100 && classified < default.len(),
        "{classified} of {} texts classified: the comparison would say little",
        default.len()
    );
    for (i, (a, b)) in default.iter().zip(&small).enumerate() {
        assert_eq!(a, b, "text {i} is classified differently with small memory");
    }
}
