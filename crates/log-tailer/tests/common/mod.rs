//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use log_tailer::{Line, StartAt, TailEvent, Tailer, TailerOptions};

pub fn append(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(bytes).expect("append");
}

pub fn sibling(path: &Path, k: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{k}"));
    PathBuf::from(s)
}

/// Python RotatingFileHandler style: shift `.k` -> `.k+1`, current -> `.1`,
/// create an empty current file.
pub fn rename_rotate(path: &Path, backups: usize) {
    for k in (1..backups).rev() {
        let from = sibling(path, k);
        if from.exists() {
            fs::rename(&from, sibling(path, k + 1)).expect("shift backup");
        }
    }
    if path.exists() {
        fs::rename(path, sibling(path, 1)).expect("rotate current");
    }
    fs::File::create(path).expect("create new current");
}

/// logrotate copytruncate: shift backups, copy current to `.1`, truncate.
pub fn copy_truncate(path: &Path, backups: usize) {
    for k in (1..backups).rev() {
        let from = sibling(path, k);
        if from.exists() {
            fs::rename(&from, sibling(path, k + 1)).expect("shift backup");
        }
    }
    fs::copy(path, sibling(path, 1)).expect("copy");
    OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for truncate")
        .set_len(0)
        .expect("truncate");
}

pub fn opts(start: StartAt) -> TailerOptions {
    TailerOptions {
        start,
        ..TailerOptions::default()
    }
}

pub fn texts(events: &[TailEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            TailEvent::Line(l) => Some(l.text.clone()),
            _ => None,
        })
        .collect()
}

pub fn lines(events: &[TailEvent]) -> Vec<Line> {
    events
        .iter()
        .filter_map(|e| match e {
            TailEvent::Line(l) => Some(l.clone()),
            _ => None,
        })
        .collect()
}

/// Events with lines replaced by their text, for compact assertions.
#[derive(Debug, PartialEq, Eq)]
pub enum Ev {
    L(String),
    Rotated(u64),
    Truncated(u64),
    Reopened,
    Missing,
}

pub fn evs(events: &[TailEvent]) -> Vec<Ev> {
    events
        .iter()
        .map(|e| match e {
            TailEvent::Line(l) => Ev::L(l.text.clone()),
            TailEvent::Rotated { from } => Ev::Rotated(from.offset),
            TailEvent::Truncated { at } => Ev::Truncated(*at),
            TailEvent::Reopened => Ev::Reopened,
            TailEvent::Missing => Ev::Missing,
        })
        .collect()
}

pub fn l(s: &str) -> Ev {
    Ev::L(s.to_owned())
}

/// Everything available now: polls until [`Tailer::has_more`] is false
/// (one poll reads at most `max_poll_bytes`).
pub fn poll(t: &mut Tailer) -> Vec<TailEvent> {
    let mut all = t.poll().expect("poll");
    while t.has_more() {
        all.extend(t.poll().expect("poll"));
    }
    all
}

/// Options with a short drain grace, for tests that wait it out.
pub fn quick_drain(start: StartAt) -> TailerOptions {
    TailerOptions {
        start,
        drain_grace: std::time::Duration::from_millis(100),
        ..TailerOptions::default()
    }
}

/// Polls until a poll returns something (a file let go after its drain
/// grace), at most 10 s; returns what that poll returned.
pub fn poll_until_some(t: &mut Tailer) -> Vec<Ev> {
    let start = std::time::Instant::now();
    loop {
        let got = evs(&poll(t));
        if !got.is_empty() {
            return got;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "nothing delivered within 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
