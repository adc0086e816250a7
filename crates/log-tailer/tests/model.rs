//! Model-based test: random sequences of writes, rotations, truncations,
//! deletions, polls and restarts (from the persisted position). The lines
//! returned, concatenated over all polls and restarts, must be exactly the
//! lines written, in order, with long lines cut at the cap.
//!
//! Polls happen only between operations, so each rotation is atomic with
//! respect to the tailer (in particular copy+truncate: the inherent
//! copytruncate race cannot occur). Some sequences of rotations *between two
//! polls* make lines unreachable for any tailer (e.g. a file created and
//! deleted before the tailer ever saw it); before an operation that would
//! form such a sequence, the model polls first. See [`Model::needs_poll`]
//! for exactly which sequences the tailer is required to follow unaided.

mod common;

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use common::{append, copy_truncate, rename_rotate};
use log_tailer::{Line, StartAt, TailEvent, TailPosition, Tailer, TailerOptions};
use proptest::prelude::*;

const CAP: usize = 96;
const BACKUPS: usize = 3;
const TOKEN: usize = 16;

#[derive(Clone, Debug)]
enum Op {
    /// Append complete lines (bodies; tokens are added when executed).
    Append(Vec<Vec<u8>>),
    /// Write the first part of a line (split point chosen from the seed).
    Partial(Vec<u8>, usize),
    /// RotatingFileHandler: `.2`->`.3`, `.1`->`.2`, current->`.1`, new current.
    Rename,
    /// logrotate copytruncate: shift backups, copy current to `.1`, truncate.
    CopyTruncate,
    /// Delete the file and create a new empty one.
    DeleteRecreate,
    /// Delete the file; the next write creates it.
    Delete,
    Poll,
    /// Drop the tailer; start a new one from the persisted position.
    Restart,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rot {
    Rename,
    Copy,
    Delete,
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        5 => "[a-z ]{0,30}".prop_map(String::into_bytes),
        // Longer than the cap; random so any window of it is unique.
        1 => "[a-z0-9]{90,300}".prop_map(String::into_bytes),
        // Invalid UTF-8 (short, never cut).
        1 => proptest::collection::vec(
            prop_oneof![Just(b'a'), Just(b' '), Just(0xFF_u8), Just(0xFE), Just(0x80)],
            0..30
        ),
        // Multi-byte characters around the cap, so the cut falls inside one.
        1 => proptest::collection::vec(
            prop_oneof![Just('é'), Just('日'), Just('🙂'), Just('x')],
            15..45
        )
        .prop_map(|v| v.into_iter().collect::<String>().into_bytes()),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => proptest::collection::vec(body(), 1..4).prop_map(Op::Append),
        10 => (body(), any::<usize>()).prop_map(|(b, s)| Op::Partial(b, s)),
        20 => Just(Op::Poll),
        7 => Just(Op::Rename),
        6 => Just(Op::CopyTruncate),
        4 => Just(Op::DeleteRecreate),
        3 => Just(Op::Delete),
        6 => Just(Op::Restart),
    ]
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether `p` is a proper prefix of the UTF-8 encoding of some character
/// (brute force: try completing it with continuation bytes).
fn is_proper_prefix_of_char(p: &[u8]) -> bool {
    if p.is_empty() || p.len() >= 4 {
        return false;
    }
    (p.len() + 1..=4).any(|total| {
        (0x80_u8..=0xBF).any(|b| {
            let mut v = p.to_vec();
            v.push(b);
            v.resize(total, 0x80);
            std::str::from_utf8(&v).is_ok_and(|s| s.chars().count() == 1)
        })
    })
}

/// What the tailer must return for a line whose bytes (without `\n`) are
/// `bytes`: cut at `CAP` bytes, minus a character cut in half by the cap.
fn expected_line(bytes: &[u8]) -> Line {
    let (kept, truncated) = if bytes.len() <= CAP {
        (bytes, false)
    } else {
        let cut = (CAP.saturating_sub(3)..CAP)
            .rev()
            .find(|&s| is_proper_prefix_of_char(&bytes[s..CAP]))
            .unwrap_or(CAP);
        (&bytes[..cut], true)
    };
    Line {
        text: String::from_utf8_lossy(kept).into_owned(),
        truncated,
        invalid_utf8: std::str::from_utf8(kept).is_err(),
    }
}

/// A partially written line.
struct Pending {
    /// Bytes written so far, still in the current file (`None` once that
    /// file was rotated away and the part was delivered as its own line).
    written: Option<Vec<u8>>,
    rest: Vec<u8>,
}

struct Model {
    path: PathBuf,
    opts: TailerOptions,
    tailer: Tailer,
    seq: u64,
    pending: Option<Pending>,
    /// Whole lines the tailer must return, in order.
    expected: Vec<Line>,
    /// Pieces of lines cut by a copytruncate, each delivered alone: the
    /// piece left in the file is delivered when the tailer lets go of that
    /// file, so its place among the other lines is not fixed.
    fragments: Vec<Line>,
    /// Lines the tailer returned, in order (over restarts).
    got: Vec<Line>,
    /// Whether the current file has a complete line.
    cur_has_line: bool,
    // State as of the last poll, for `needs_poll`.
    since_poll: Vec<Rot>,
    followed: bool,
    nonempty_at_poll: bool,
    had_line_at_poll: bool,
    written_since_poll: bool,
    restarted_since_poll: bool,
    /// A restart now would lose data (the tailer has not seen a deletion, or
    /// a copytruncate of a file without a complete line): poll first.
    restart_needs_poll: bool,
    forced_polls: usize,
}

impl Model {
    fn new(path: PathBuf, read_chunk: usize, bound: (usize, usize)) -> Self {
        let opts = TailerOptions {
            max_line_bytes: CAP,
            read_chunk,
            start: StartAt::Beginning,
            max_poll_bytes: bound.0,
            max_poll_lines: bound.1,
            // A file left with an unfinished line is let go at the next
            // quiet poll.
            drain_grace: std::time::Duration::ZERO,
        };
        Model {
            tailer: Tailer::new(&path, opts.clone()),
            path,
            opts,
            seq: 0,
            pending: None,
            expected: Vec::new(),
            fragments: Vec::new(),
            got: Vec::new(),
            cur_has_line: false,
            since_poll: Vec::new(),
            followed: false,
            nonempty_at_poll: false,
            had_line_at_poll: false,
            written_since_poll: false,
            restarted_since_poll: false,
            restart_needs_poll: false,
            forced_polls: 0,
        }
    }

    /// A line made unique by a token at each end (so that the first bytes of
    /// every file, and any part of a split line, are unique).
    fn make_line(&mut self, body: &[u8]) -> Vec<u8> {
        self.seq += 1;
        let mut line = format!("{:016x} ", splitmix(self.seq)).into_bytes();
        line.extend_from_slice(body);
        line.extend_from_slice(format!(" {:016x}", splitmix(!self.seq)).as_bytes());
        line
    }

    fn write(&mut self, bytes: &[u8]) {
        append(&self.path, bytes);
        self.written_since_poll |= !bytes.is_empty();
        if bytes.contains(&b'\n') {
            self.cur_has_line = true;
        }
    }

    fn complete_pending(&mut self) {
        if let Some(p) = self.pending.take() {
            let cut = p.written.is_none();
            let mut line = p.written.unwrap_or_default();
            line.extend_from_slice(&p.rest);
            let mut w = p.rest.clone();
            w.push(b'\n');
            self.write(&w);
            if cut {
                self.fragments.push(expected_line(&line));
            } else {
                self.expected.push(expected_line(&line));
            }
        }
    }

    fn append_lines(&mut self, bodies: &[Vec<u8>]) {
        self.complete_pending();
        let mut buf = Vec::new();
        for b in bodies {
            let line = self.make_line(b);
            buf.extend_from_slice(&line);
            buf.push(b'\n');
            self.expected.push(expected_line(&line));
        }
        self.write(&buf);
    }

    fn append_partial(&mut self, body: &[u8], seed: usize) {
        self.complete_pending();
        let line = self.make_line(body);
        // Split after the leading token and before the trailing one.
        let lo = TOKEN + 1;
        let hi = line.len() - TOKEN;
        let split = lo + seed % (hi - lo + 1);
        self.write(&line[..split]);
        self.pending = Some(Pending {
            written: Some(line[..split].to_vec()),
            rest: line[split..].to_vec(),
        });
    }

    /// The current file is truncated: its partial line is delivered alone;
    /// the writer will write the rest at the start of the truncated file.
    fn current_file_ends(&mut self) {
        if let Some(w) = self.pending.as_mut().and_then(|p| p.written.take()) {
            self.fragments.push(expected_line(&w));
        }
        self.cur_has_line = false;
    }

    /// The current file left the path (renamed or deleted) while the
    /// writer, which has not reopened yet, was in the middle of a line: it
    /// finishes the line through the descriptor it still holds, as a
    /// logging handler does before its rollover. The line is one line.
    fn finish_pending_in(&mut self, old: &mut fs::File) {
        if let Some(p) = self.pending.take() {
            let mut line = p.written.unwrap_or_default();
            line.extend_from_slice(&p.rest);
            let mut w = p.rest;
            w.push(b'\n');
            old.write_all(&w).expect("finish the line in the old file");
            self.expected.push(expected_line(&line));
        }
        self.cur_has_line = false;
    }

    /// Rotation sequences (since the last poll) that the tailer must follow
    /// without losing anything. Anything else first gets a poll.
    ///
    /// * The tailer must have had the current file open at the last poll.
    /// * Deletion (with or without re-creation) only alone, and not while
    ///   the tailer is down (it holds no fd then; the data is gone).
    /// * Up to `BACKUPS` renames/copytruncates (older files fall off the end).
    /// * At most one copytruncate of the file the tailer follows, and only if
    ///   it had read something of it (with nothing read, a truncation cannot
    ///   be told from appends), or nothing was written to it since the poll.
    ///   After a restart, it must also have had a complete line: a persisted
    ///   position at offset 0 carries no fingerprint to find the copy by.
    fn needs_poll(&self, next: Rot) -> bool {
        if !self.followed {
            return true;
        }
        let mut seq = self.since_poll.clone();
        seq.push(next);
        if seq.contains(&Rot::Delete) {
            return seq.len() > 1 || self.restarted_since_poll;
        }
        if seq.len() > BACKUPS {
            return true;
        }
        let first_rename = seq
            .iter()
            .position(|r| *r == Rot::Rename)
            .unwrap_or(seq.len());
        let copies_of_followed = seq[..first_rename]
            .iter()
            .filter(|r| **r == Rot::Copy)
            .count();
        if copies_of_followed > 1 {
            return true;
        }
        if next == Rot::Copy && first_rename == seq.len() {
            if !self.nonempty_at_poll && self.written_since_poll {
                return true;
            }
            if self.restarted_since_poll && !self.had_line_at_poll {
                return true;
            }
        }
        false
    }

    /// Polls until the tailer has nothing more to read now: with a small
    /// per-poll bound, a caller's "read everything" is several polls,
    /// each going on where the last one stopped.
    fn poll(&mut self) {
        for round in 0.. {
            assert!(round < 10_000_000, "has_more() never became false");
            let events = self.tailer.poll().expect("poll");
            for e in events {
                if let TailEvent::Line(l) = e {
                    self.got.push(l);
                }
            }
            if !self.tailer.has_more() {
                break;
            }
        }
        self.since_poll.clear();
        self.restarted_since_poll = false;
        self.restart_needs_poll = false;
        self.written_since_poll = false;
        self.followed = self.path.exists();
        self.nonempty_at_poll = self.followed && fs::metadata(&self.path).expect("stat").len() > 0;
        self.had_line_at_poll = self.followed && self.cur_has_line;
    }

    fn rotate(&mut self, kind: Rot, op: &Op) {
        if !self.path.exists() {
            return; // nothing to rotate
        }
        if self.needs_poll(kind) {
            self.forced_polls += 1;
            self.poll();
        }
        let copy_of_followed = kind == Rot::Copy && !self.since_poll.contains(&Rot::Rename);
        if kind == Rot::Delete || (copy_of_followed && !self.had_line_at_poll) {
            self.restart_needs_poll = true;
        }
        if kind == Rot::Copy {
            self.current_file_ends();
            copy_truncate(&self.path, BACKUPS);
        } else {
            let mut old = fs::OpenOptions::new()
                .append(true)
                .open(&self.path)
                .expect("the writer's descriptor");
            match op {
                Op::Rename => rename_rotate(&self.path, BACKUPS),
                Op::DeleteRecreate => {
                    fs::remove_file(&self.path).expect("rm");
                    fs::File::create(&self.path).expect("create");
                }
                Op::Delete => fs::remove_file(&self.path).expect("rm"),
                _ => unreachable!(),
            }
            self.finish_pending_in(&mut old);
        }
        self.since_poll.push(kind);
    }

    fn restart(&mut self) {
        if self.restart_needs_poll {
            self.forced_polls += 1;
            self.poll();
        }
        // A piece of a cut line left in a file rotated away is delivered
        // when the tailer lets go of that file (the next quiet poll, with
        // no drain grace); a restart before then loses it (documented).
        for _ in 0..3 {
            if self.fragments.iter().all(|f| self.got.contains(f)) {
                break;
            }
            self.forced_polls += 1;
            self.poll();
        }
        // The daemon persisted position() after its last batch.
        let persisted: Option<TailPosition> = self.tailer.position();
        let start = persisted.map_or(StartAt::Beginning, StartAt::Resume);
        self.tailer = Tailer::new(
            &self.path,
            TailerOptions {
                start,
                ..self.opts.clone()
            },
        );
        self.restarted_since_poll = true;
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(bodies) => self.append_lines(bodies),
            Op::Partial(body, seed) => self.append_partial(body, *seed),
            Op::Rename => self.rotate(Rot::Rename, op),
            Op::CopyTruncate => self.rotate(Rot::Copy, op),
            Op::DeleteRecreate | Op::Delete => self.rotate(Rot::Delete, op),
            Op::Poll => self.poll(),
            Op::Restart => self.restart(),
        }
    }
}

fn run(
    initial: Option<Vec<Vec<u8>>>,
    ops: &[Op],
    read_chunk: usize,
    bound: (usize, usize),
) -> Model {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.log");
    let mut m = Model::new(path, read_chunk, bound);
    if let Some(bodies) = initial {
        m.append_lines(&bodies);
    }
    for op in ops {
        m.apply(op);
    }
    m.complete_pending();
    // Read everything, then let go of the files rotated away.
    for _ in 0..3 {
        m.poll();
    }
    // Keep the directory alive until the end of the run.
    drop(dir);
    m
}

fn describe(l: &[Line]) -> Vec<String> {
    l.iter()
        .map(|l| {
            let t: String = l.text.chars().take(60).collect();
            format!("{t:?} trunc={} bad={}", l.truncated, l.invalid_utf8)
        })
        .collect()
}

fn check(m: &Model) -> Result<(), TestCaseError> {
    // Every line is unique (tokens at both ends), so a piece is told from a
    // whole line by content.
    let (mut pieces, whole): (Vec<&Line>, Vec<&Line>) =
        m.got.iter().partition(|l| m.fragments.contains(l));
    if whole.iter().copied().ne(m.expected.iter()) {
        let first = whole
            .iter()
            .zip(&m.expected)
            .position(|(a, b)| *a != b)
            .unwrap_or(whole.len().min(m.expected.len()));
        let lo = first.saturating_sub(2);
        let whole: Vec<Line> = whole.into_iter().cloned().collect();
        return Err(TestCaseError::fail(format!(
            "lines differ at index {first} (got {}, expected {})\n got: {:#?}\nwant: {:#?}",
            whole.len(),
            m.expected.len(),
            describe(whole.get(lo..).unwrap_or_default()),
            describe(m.expected.get(lo..).unwrap_or_default()),
        )));
    }
    let mut want: Vec<&Line> = m.fragments.iter().collect();
    pieces.sort_by(|a, b| a.text.cmp(&b.text));
    want.sort_by(|a, b| a.text.cmp(&b.text));
    if pieces != want {
        let pieces: Vec<Line> = pieces.into_iter().cloned().collect();
        let want: Vec<Line> = want.into_iter().cloned().collect();
        return Err(TestCaseError::fail(format!(
            "pieces of cut lines differ\n got: {:#?}\nwant: {:#?}",
            describe(&pieces),
            describe(&want),
        )));
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn lines_out_equal_lines_in(
        initial in proptest::option::of(proptest::collection::vec(body(), 0..4)),
        ops in proptest::collection::vec(op(), 0..60),
        read_chunk in prop_oneof![1usize..16, 16usize..300, Just(64 * 1024)],
        // The per-poll bound: none, a few bytes, a few lines.
        bound in prop_oneof![
            Just((usize::MAX, usize::MAX)),
            (1usize..400).prop_map(|b| (b, usize::MAX)),
            (1usize..4).prop_map(|l| (usize::MAX, l)),
        ],
    ) {
        let m = run(initial, &ops, read_chunk, bound);
        check(&m)?;
    }
}

/// A fixed, busy sequence, so the interesting paths run on every `cargo test`
/// regardless of what proptest draws.
#[test]
fn oracle_self_check() {
    assert!(is_proper_prefix_of_char(b"\xc3"));
    assert!(is_proper_prefix_of_char(b"\xe2\x82"));
    assert!(is_proper_prefix_of_char(b"\xf0\x9f\x99"));
    assert!(!is_proper_prefix_of_char(b"\xe0\x80")); // overlong
    assert!(!is_proper_prefix_of_char(b"\x80"));
    assert!(!is_proper_prefix_of_char(b"a"));
    assert!(!is_proper_prefix_of_char(b"\xff"));
}

#[test]
fn scripted_sequence() {
    let b = |s: &str| s.as_bytes().to_vec();
    let long = vec![b'k'; 250];
    let ops = vec![
        Op::Append(vec![b("a"), long.clone()]),
        Op::Poll,
        Op::Partial(b("partial line body"), 3),
        Op::Poll,
        Op::Rename,
        Op::Append(vec![b("after rename")]),
        Op::Rename,
        Op::Append(vec![b("second rename")]),
        Op::Poll,
        Op::Append(vec![b("x"), "日本語".repeat(20).into_bytes()]),
        Op::Poll,
        Op::Append(vec![b("unread before copy")]),
        Op::CopyTruncate,
        Op::Append(vec![b("after copy")]),
        Op::Restart,
        Op::Rename,
        Op::Append(vec![vec![0xFF, b'z', 0x80]]),
        Op::Poll,
        Op::Partial(b("before delete"), 100),
        Op::Poll,
        Op::Delete,
        Op::Poll,
        Op::Restart,
        Op::Append(vec![b("new file")]),
        Op::DeleteRecreate,
        Op::Append(vec![b("recreated")]),
        Op::Restart,
        Op::Poll,
        Op::Append(vec![b("end")]),
    ];
    for chunk in [1, 7, 64 * 1024] {
        for bound in [
            (usize::MAX, usize::MAX),
            (1, usize::MAX),
            (5, usize::MAX),
            (usize::MAX, 1),
        ] {
            let m = run(Some(vec![b("initial")]), &ops, chunk, bound);
            check(&m).expect("scripted sequence");
            assert!(m.expected.len() >= 14);
        }
    }
}
