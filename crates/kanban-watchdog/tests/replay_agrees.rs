//! Issue 14: `replay` runs the daemon's decision core. For one incident —
//! rate-limited runs, an expired credential, a worker that completed and
//! then printed a 429, a clean exit — the daemon acts on a live board, and
//! `replay` of the same records against a snapshot of the board as it was
//! before must name the same parks, the same untouched tasks and the same
//! provider transitions.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::*;
use hermes_board::testkit;

const T: Duration = Duration::from_secs(30);

#[test]
fn replay_of_an_incident_names_what_the_daemon_did() {
    let mut h = Harness::new();
    h.write_config("");
    let reset = now() + 3600;
    let runs: Vec<(&str, &str, i64)> = ["r1", "r2", "done1", "g1", "clean1"]
        .into_iter()
        .map(|t| {
            let profile = if t == "g1" { "grok" } else { "coder" };
            (t, profile, h.running_task(t, profile))
        })
        .collect();
    // done1's worker reported before its record arrived.
    testkit::complete(&h.conn(), "done1").unwrap();
    // The board as it was when the records were written.
    let snapshot = h.tmp.path().join("before.db");
    h.conn()
        .execute("VACUUM INTO ?1", [snapshot.display().to_string()])
        .unwrap();
    for (task, profile, run) in &runs {
        let failure = match *task {
            "clean1" => None,
            "g1" => Some(auth_expired("xai-oauth")),
            _ => Some(rate_limit(Some(reset))),
        };
        h.write_record(&record(Some((task, *run)), profile, failure));
    }
    h.start();
    wait_until("every record handled", T, || {
        (h.pending_records() == 0).then_some(())
    });
    let parked_by_daemon: BTreeSet<String> = runs
        .iter()
        .map(|(t, _, _)| t.to_string())
        .filter(|t| h.count_events(t, "watchdog_parked") > 0)
        .collect();
    // The provider transitions, in order, as the daemon logged them.
    let transitions = |text: &str| -> Vec<String> {
        text.lines()
            // (The daemon also repeats each one as an alert line.)
            .filter(|l| !l.contains("ALERT") && !l.contains("RESOLVED"))
            .filter_map(|l| {
                let at = l.find("provider ")?;
                let rest = &l[at..];
                ["marked unhealthy", "healthy again"]
                    .iter()
                    .find(|w| rest.contains(*w))
                    .map(|w| format!("{} {w}", rest.split_whitespace().nth(1).unwrap_or("")))
            })
            .collect()
    };
    let by_daemon = transitions(&h.stderr());
    h.stop();
    assert_eq!(
        parked_by_daemon,
        ["g1", "r1", "r2"].map(String::from).into(),
        "the incident itself"
    );

    let out = Command::new(WATCHDOG)
        .args(["replay", "--config"])
        .arg(&h.config)
        .arg("--records")
        .arg(h.records.join("done"))
        .arg("--board")
        .arg(&snapshot)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parked_by_replay: BTreeSet<String> = runs
        .iter()
        .map(|(t, _, _)| t.to_string())
        .filter(|t| text.contains(&format!("task {t}: park")))
        .collect();
    assert_eq!(parked_by_replay, parked_by_daemon, "parks differ:\n{text}");
    assert_eq!(
        transitions(&text),
        by_daemon,
        "provider transitions differ:\n{text}\n--- daemon:\n{}",
        h.stderr()
    );
    assert_eq!(
        by_daemon,
        [
            "openai-codex marked unhealthy",
            "xai-oauth marked unhealthy",
            "openai-codex healthy again"
        ],
        "the incident itself"
    );
    assert!(!text.contains("task done1: park"), "{text}");
    assert!(text.contains("nothing was written"), "{text}");
}
