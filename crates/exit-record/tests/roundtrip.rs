use std::os::unix::fs::PermissionsExt;

use exit_record::{
    ExitInfo, ExitRecord, ReadLimits, RecordError, SCHEMA_NAME, SCHEMA_VERSION, StreamCapture,
    TaskContext, WriteOptions, new_record_id, parse_record_bytes, read_record, write_atomic,
};

fn sample() -> ExitRecord {
    let now = jiff::Timestamp::now();
    ExitRecord {
        schema: SCHEMA_NAME.into(),
        schema_version: SCHEMA_VERSION,
        id: new_record_id(),
        argv: vec!["hermes".into(), "chat".into()],
        cwd: Some("/tmp".into()),
        pid: Some(42),
        shim_pid: 41,
        started_at: now,
        ended_at: now,
        duration_ms: 0,
        exit: ExitInfo {
            code: Some(0),
            signal: None,
            reported_code: 75,
            spawn_error: None,
        },
        task: TaskContext::from_env(|k| match k {
            "HERMES_KANBAN_TASK" => Some("t_1".into()),
            "HERMES_KANBAN_RUN_ID" => Some("7".into()),
            _ => None,
        }),
        stdout: StreamCapture::default(),
        stderr: StreamCapture {
            captured: true,
            bytes_total: 3,
            head: "hi\n".into(),
            tail: String::new(),
            truncated: false,
        },
        failure: None,
        steered: None,
        run_at_exit: None,
        skipped: None,
    }
}

#[test]
fn write_then_read_round_trips_with_private_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/records");
    let rec = sample();
    let path = write_atomic(&dir, &rec, WriteOptions::default()).unwrap();
    assert_eq!(path, dir.join(format!("{}.json", rec.id)));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dmode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dmode, 0o700);
    let back = read_record(&path, &ReadLimits::default()).unwrap();
    assert_eq!(back, rec);
    assert_eq!(back.task.run_id, Some(7));
    // No temp file is left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![format!("{}.json", rec.id)]);
}

#[test]
fn symlinks_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_atomic(tmp.path(), &sample(), WriteOptions { fsync: false }).unwrap();
    let link = tmp.path().join("link.json");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let err = read_record(&link, &ReadLimits::default()).unwrap_err();
    assert!(matches!(err, RecordError::Symlink { .. }), "{err}");
    assert!(!err.is_transient());
}

#[test]
fn oversized_and_foreign_owned_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_atomic(tmp.path(), &sample(), WriteOptions { fsync: false }).unwrap();
    let small = ReadLimits {
        max_bytes: 10,
        owner_uid: None,
    };
    assert!(matches!(
        read_record(&path, &small),
        Err(RecordError::TooLarge { .. })
    ));
    let other_owner = ReadLimits {
        max_bytes: 1 << 20,
        owner_uid: Some(unsafe { libc::geteuid() } + 1),
    };
    let err = read_record(&path, &other_owner).unwrap_err();
    assert!(matches!(err, RecordError::WrongOwner { .. }), "{err}");
}

#[test]
fn unknown_versions_bad_json_and_bad_utf8_say_why() {
    let mut v = serde_json::to_value(sample()).unwrap();
    v["schema_version"] = 99.into();
    let err = parse_record_bytes(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(
        matches!(err, RecordError::UnsupportedVersion { found: 99, .. }),
        "{err}"
    );

    let err = parse_record_bytes(b"{\"schema\": \"other\"}").unwrap_err();
    assert!(matches!(err, RecordError::WrongSchema { .. }), "{err}");

    let err = parse_record_bytes(b"{\n  \"schema\": ").unwrap_err();
    match err {
        RecordError::Json { line, .. } => assert_eq!(line, 2),
        other => panic!("expected a JSON error, got {other}"),
    }

    let err = parse_record_bytes(b"{\"a\": \"\xff\"}").unwrap_err();
    assert!(
        matches!(err, RecordError::InvalidUtf8 { offset: 7, .. }),
        "{err}"
    );

    let mut v = serde_json::to_value(sample()).unwrap();
    v.as_object_mut().unwrap().remove("exit");
    let err = parse_record_bytes(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(err.to_string().contains("exit"), "{err}");
}

#[test]
fn unwritable_directory_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = write_atomic(&file.join("records"), &sample(), WriteOptions::default()).unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn run_at_exit_round_trips_and_records_without_it_still_read() {
    let mut rec = sample();
    rec.run_at_exit = Some(exit_record::RunAtExit {
        open: false,
        outcome: Some("completed".into()),
    });
    let bytes = serde_json::to_vec(&rec).unwrap();
    let back = parse_record_bytes(&bytes).unwrap();
    assert_eq!(back, rec);
    assert!(back.run_at_exit.unwrap().reported_by_worker());
    // An older record (no field) still reads, as None; a record without the
    // check does not write the field at all.
    let old = serde_json::to_value(sample()).unwrap();
    assert!(old.get("run_at_exit").is_none());
    let back = parse_record_bytes(&serde_json::to_vec(&old).unwrap()).unwrap();
    assert_eq!(back.run_at_exit, None);
    // Open, or ended by the dispatcher: not the worker's report.
    for (open, outcome) in [(true, None), (false, Some("crashed")), (false, None)] {
        let r = exit_record::RunAtExit {
            open,
            outcome: outcome.map(str::to_string),
        };
        assert!(!r.reported_by_worker(), "{r:?}");
    }
}
