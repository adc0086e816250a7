//! The shim asks the board (read-only) whether a worker reported its run
//! before it turns a provider error in the output into exit 75: the real
//! `worker-shim` binary, real workers that end their run on a real
//! Hermes-schema board (from Python's sqlite3, as Hermes does).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hermes_board::testkit;
use serde_json::Value;

mod common;

use common::shim_bin;
const CODEX_429: &str =
    "HTTP 429: The usage limit has been reached. plan_type: team, resets_at: 4102444800";

/// A board with task `t` claimed by the dispatcher: returns its run id.
fn board_with_running_task(db: &Path) -> i64 {
    let mut conn = testkit::create_board(db).unwrap();
    testkit::add_task(&conn, "t", "coder", "ready").unwrap();
    testkit::claim(&mut conn, "t", 4242).unwrap()
}

/// Python that ends the current run of `$HERMES_KANBAN_TASK` the way
/// Hermes' `complete_task` / `block_task` do (`outcome` = completed|blocked).
fn end_run_py(outcome: &str) -> String {
    let status = if outcome == "completed" {
        "done"
    } else {
        "blocked"
    };
    format!(
        r#"python3 - <<'PY'
import os, sqlite3, time
c = sqlite3.connect(os.environ["HERMES_KANBAN_DB"], timeout=30, isolation_level=None)
t = int(time.time()); task = os.environ["HERMES_KANBAN_TASK"]; run = int(os.environ["HERMES_KANBAN_RUN_ID"])
c.execute("BEGIN IMMEDIATE")
c.execute("UPDATE tasks SET status='{status}', claim_lock=NULL, worker_pid=NULL, current_run_id=NULL WHERE id=?", (task,))
c.execute("UPDATE task_runs SET status='{status}', outcome='{outcome}', ended_at=? WHERE id=? AND ended_at IS NULL", (t, run))
c.execute("INSERT INTO task_events (task_id, run_id, kind, payload, created_at) VALUES (?, ?, '{outcome}', NULL, ?)", (task, run, t))
c.execute("COMMIT")
PY
"#
    )
}

fn shim(records: &Path, db: &Path, run: i64, script: &str) -> Command {
    let mut cmd = Command::new(shim_bin());
    cmd.env("WORKER_SHIM_RECORD_DIR", records)
        .env_remove("WORKER_SHIM_TEMPFAIL_EXIT")
        .env("HERMES_KANBAN_TASK", "t")
        .env("HERMES_KANBAN_RUN_ID", run.to_string())
        .env("HERMES_KANBAN_DB", db)
        .env("HERMES_KANBAN_BOARD", "default")
        .env("HERMES_PROFILE", "coder")
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null());
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("run the shim")
}

fn only_record(dir: &Path) -> Value {
    let recs: Vec<Value> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            !n.starts_with('.') && n.ends_with(".json")
        })
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    assert_eq!(recs.len(), 1, "one record in {dir:?}");
    recs.into_iter().next().unwrap()
}

#[test]
fn a_worker_that_completed_its_run_then_printed_a_429_keeps_its_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let run = board_with_running_task(&db);
    let records = tmp.path().join("records");
    let script = format!("{}echo '{CODEX_429}'; exit 0", end_run_py("completed"));
    let out = output(&mut shim(&records, &db, run, &script));
    assert_eq!(out.status.code(), Some(0), "the worker's own code, not 75");
    let rec = only_record(&records);
    assert_eq!(rec["failure"]["class"], "rate_limit", "still recorded");
    assert_eq!(rec["exit"]["reported_code"], 0);
    assert_eq!(rec["run_at_exit"]["open"], false);
    assert_eq!(rec["run_at_exit"]["outcome"], "completed");
}

#[test]
fn a_worker_that_blocked_its_run_and_exited_1_keeps_its_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let run = board_with_running_task(&db);
    let records = tmp.path().join("records");
    let script = format!("{}echo '{CODEX_429}' >&2; exit 1", end_run_py("blocked"));
    let out = output(&mut shim(&records, &db, run, &script));
    assert_eq!(out.status.code(), Some(1));
    let rec = only_record(&records);
    assert_eq!(rec["run_at_exit"]["outcome"], "blocked");
    assert_eq!(rec["exit"]["reported_code"], 1);
}

#[test]
fn a_worker_that_left_its_run_open_is_still_reported_as_tempfail() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("kanban.db");
    let run = board_with_running_task(&db);
    let records = tmp.path().join("records");
    let before = std::fs::read(&db).unwrap();
    let out = output(&mut shim(
        &records,
        &db,
        run,
        &format!("echo '{CODEX_429}'; exit 0"),
    ));
    assert_eq!(out.status.code(), Some(75));
    let rec = only_record(&records);
    assert_eq!(rec["run_at_exit"]["open"], true);
    assert_eq!(rec["run_at_exit"]["outcome"], Value::Null);
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the check never writes the board"
    );
}

#[test]
fn when_the_board_cannot_say_the_shim_behaves_as_before() {
    // No such board file: 75 as always, and no file is created.
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-board.db");
    let records = tmp.path().join("r1");
    let out = output(&mut shim(
        &records,
        &missing,
        7,
        &format!("echo '{CODEX_429}'; exit 0"),
    ));
    assert_eq!(out.status.code(), Some(75));
    assert!(only_record(&records).get("run_at_exit").is_none());
    assert!(!missing.exists(), "never creates a board");

    // No such run on the board.
    let db = tmp.path().join("kanban.db");
    board_with_running_task(&db);
    let records = tmp.path().join("r2");
    let out = output(&mut shim(
        &records,
        &db,
        9_999,
        &format!("echo '{CODEX_429}'; exit 0"),
    ));
    assert_eq!(out.status.code(), Some(75));
    assert!(only_record(&records).get("run_at_exit").is_none());

    // A board held under an exclusive lock (rollback journal, so readers
    // wait too): given up after the short busy timeout, 75 as before.
    let locked = tmp.path().join("locked.db");
    let run = board_with_running_task(&locked);
    let mut conn = testkit::connect(&locked).unwrap();
    conn.pragma_update(None, "journal_mode", "DELETE").unwrap();
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    tx.execute(
        "UPDATE task_runs SET outcome='completed', ended_at=1 WHERE id=?1",
        [run],
    )
    .unwrap();
    let records = tmp.path().join("r3");
    let started = Instant::now();
    let out = output(&mut shim(
        &records,
        &locked,
        run,
        &format!("echo '{CODEX_429}'; exit 0"),
    ));
    let took = started.elapsed();
    tx.rollback().unwrap();
    assert_eq!(out.status.code(), Some(75));
    assert!(only_record(&records).get("run_at_exit").is_none());
    assert!(
        took < Duration::from_secs(5),
        "a locked board costs at most the short busy timeout, took {took:?}"
    );
}

#[test]
fn a_clean_exit_never_touches_the_board() {
    // HERMES_KANBAN_DB names a FIFO: opening it would block until a writer
    // comes, so a shim that looked at the board on a clean exit would hang.
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("board.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let records = tmp.path().join("records");
    let mut child = shim(&records, &fifo, 1, "echo all good; exit 0")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the shim hung on a clean exit: it opened the board");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    let rec = only_record(&records);
    assert_eq!(rec["failure"], Value::Null);
    assert!(rec.get("run_at_exit").is_none());
}
