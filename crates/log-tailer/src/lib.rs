//! Follow a log file by path, across rotation, truncation, deletion and
//! restarts, without losing or repeating lines.
//!
//! Built for the Hermes gateway log (`~/.hermes/logs/gateway.log`), which
//! Python's `RotatingFileHandler` rotates by renaming: `gateway.log` ->
//! `gateway.log.1` -> `gateway.log.2` ... and creating a fresh `gateway.log`.
//!
//! The [`Tailer`] is synchronous and poll-driven: it starts no threads and
//! does no async work. The caller runs [`Tailer::poll`] (e.g. from a blocking
//! task) whenever something in the log's *directory* changed and on a slow
//! timer. When nothing changed, a poll costs one `stat(2)` of the path plus
//! one `pread(2)` of at most 256 bytes (the head check described below);
//! with no file open it is one failed `open(2)`.
//!
//! ```
//! use log_tailer::{StartAt, TailEvent, Tailer, TailerOptions};
//!
//! let saved = None; // e.g. loaded from the daemon's state file
//! let start = saved.map_or(StartAt::End, StartAt::Resume);
//! let mut tailer = Tailer::new(
//!     "/nonexistent/gateway.log",
//!     TailerOptions { start, ..TailerOptions::default() },
//! );
//! // On every inotify event for the directory, and on a slow timer:
//! for event in tailer.poll()? {
//!     match event {
//!         TailEvent::Line(line) => { /* match failure signatures on line.text */ }
//!         TailEvent::Missing => { /* metric: log file missing */ }
//!         other => { /* Rotated / Truncated / Reopened: metrics, logs */ let _ = other; }
//!     }
//! }
//! // After handling the batch, persist this for the next start:
//! let _to_save = tailer.position();
//! # Ok::<(), log_tailer::TailError>(())
//! ```
//!
//! # Identity
//!
//! A file is identified by `(st_dev, st_ino)`. While a file is open its inode
//! cannot be reused, so that is exact. A persisted [`TailPosition`] also
//! carries a fingerprint of the file's first bytes, because after a restart
//! the inode number may have been reused by a different file.
//!
//! # Semantics of a poll
//!
//! * The path is stat'ed. If it is the file we have open, new bytes are read
//!   up to EOF. Before reading, the file is checked for **truncation**: its
//!   size went below our offset, or its first bytes (up to 256) no longer
//!   match what we read (truncated and rewritten past our offset between two
//!   polls). On truncation ([`TailEvent::Truncated`]) the tailer first looks
//!   for a copy of the old content among the rotated siblings (`<path>.1`,
//!   `<path>.2`, ...; this is what `logrotate copytruncate` leaves), matched
//!   by the first bytes *and* the bytes just before our offset, and if found
//!   reads the rest of the old content from the copy. Then it reads the
//!   truncated file from offset 0.
//! * If the path is now a **different file** (rename rotation, or delete and
//!   re-create), the old file (still open) is drained to EOF,
//!   [`TailEvent::Rotated`] is emitted, and the new file is read from
//!   offset 0. The old file stays open for [`TailerOptions::drain_grace`]
//!   after its last growth: lines a writer that has not reopened yet
//!   appends to it are still read. If the old file is found at `<path>.k` with
//!   `k >= 2`, the files `<path>.(k-1)` ... `<path>.1` were created and
//!   rotated away between two polls: they are read in order (from offset 0)
//!   before the current file, with one `Rotated` event per switch. A name
//!   missing among the siblings (a rotator shifts `.k` to `.k+1` one name
//!   at a time) is looked past, not taken for the end of the chain.
//! * If the path is **missing**, the old file stays open and is drained;
//!   [`TailEvent::Missing`] is emitted once. When a file appears at the path
//!   again, [`TailEvent::Reopened`] is emitted (preceded by `Rotated` if it is
//!   a different file than the one still open). A file that did not exist
//!   when the tailer started is also reported as `Missing` and, on creation,
//!   `Reopened`, and read from offset 0.
//!
//! # Partial lines
//!
//! A last line without a trailing `\n` is buffered (across polls) until it is
//! completed. It is completed only by bytes of the *same* file: a line seen
//! half-written is usually one `write(2)` still in progress, or a record its
//! writer finishes through the descriptor it still holds after a rotation or
//! a deletion. So a file that leaves the path keeps its partial line while it
//! drains, and the line is delivered whole when its writer finishes it. Only
//! when the file is let go unfinished (quiet for the drain grace, or pushed
//! out by newer rotated files), or truncated, are the pending bytes
//! **delivered as a line of their own**; if the writer later writes the rest
//! of that line elsewhere, the rest shows up as a separate line. This never
//! loses bytes and never merges bytes of two different files; such a piece
//! may arrive after lines of newer files.
//!
//! [`Tailer::position`] never points past a byte that has not been returned
//! in a complete line: with a pending partial line it points at the start of
//! that line, so a restart re-reads it whole. Persisting the position after
//! handling each batch returned by `poll()` therefore gives exactly-once
//! delivery across restarts (at-least-once if the daemon crashes between
//! handling a batch and persisting).
//!
//! # Long lines and encoding
//!
//! Lines longer than [`TailerOptions::max_line_bytes`] (counted in bytes,
//! excluding the `\n`) keep their first `max_line_bytes` bytes (minus a
//! multi-byte character cut in half), the rest up to the next `\n` is
//! discarded, and [`Line::truncated`] is set. The line buffer never grows
//! beyond the cap. Invalid UTF-8 is decoded lossily (U+FFFD) and flagged in
//! [`Line::invalid_utf8`]. A trailing `\r` is stripped.
//!
//! # Known limits (inherent)
//!
//! * **copytruncate can lose lines**: lines written between the moment the
//!   rotator copied the file and the moment it truncated it are in neither
//!   file. This race is inherent in copytruncate. Lines written before the
//!   copy but not yet read are recovered from the copy if it is found among
//!   the siblings (see above).
//! * Two copytruncates between two polls, or a copytruncate of a file that
//!   was empty at the last poll and written since, cannot be told apart from
//!   appends; the content in between is lost.
//! * The tailer holds files open only while it runs. Lines not yet read from
//!   a file that is then deleted (not rotated) are lost if the daemon
//!   restarts before the next poll, and a file that is created and deleted
//!   between two polls is never seen. Lines appended late to a file already
//!   rotated away, and an unfinished line kept with it, are lost if the
//!   daemon restarts while the file drains: a persisted position names the
//!   file at the path only.
//! * A persisted position at offset 0 (no complete line read yet) has no
//!   fingerprint, so after a restart a copytruncate of that file cannot be
//!   recognised; the lines in the copy are lost.
//! * Only siblings `<path>.1` ... `<path>.16` are considered, and files
//!   that the rotator deleted (more rotations between two polls than it keeps
//!   backups) are gone unless they were the one file the tailer holds open.
//! * A truncation that rewrites the file past our offset with the same first
//!   bytes is not detected; real log lines start with a timestamp, so the
//!   first 256 bytes differ in practice.
//! * A single poll reads everything available; for the Hermes log (5 MiB per
//!   file) this bounds one batch to a few files' worth of lines.

mod line;
mod tailer;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use tailer::Tailer;

/// Default [`TailerOptions::drain_grace`]: 2 s.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Default cap on the length of one line, and default read size: 64 KiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;
/// Default size of one `read` call.
pub const DEFAULT_READ_CHUNK: usize = 64 * 1024;
/// Default bound on the bytes one [`Tailer::poll`] reads: 4 MiB (Hermes
/// rotates gateway.log at 5 MiB, so a normal burst is one or two polls).
pub const DEFAULT_MAX_POLL_BYTES: usize = 4 * 1024 * 1024;
/// Default bound on the lines one [`Tailer::poll`] returns.
pub const DEFAULT_MAX_POLL_LINES: usize = 32 * 1024;
/// How many leading bytes of a file the fingerprint covers.
pub const FINGERPRINT_BYTES: usize = 256;

/// Options for [`Tailer::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailerOptions {
    /// Longest line kept, in bytes (excluding the `\n`); longer lines are cut
    /// and flagged [`Line::truncated`]. Values below 1 are treated as 1.
    pub max_line_bytes: usize,
    /// Size of one read from the file. Values below 1 are treated as 1.
    pub read_chunk: usize,
    /// Where to start reading.
    pub start: StartAt,
    /// A poll stops reading once it read this many bytes (counted per
    /// read, so it may overshoot by less than one `read_chunk`) and
    /// [`Tailer::has_more`] says so; the next poll goes on from there.
    /// Values below 1 are treated as 1.
    pub max_poll_bytes: usize,
    /// A poll stops reading once it gathered this many lines (it may
    /// overshoot by the lines of one `read_chunk`). Values below 1 are
    /// treated as 1.
    pub max_poll_lines: usize,
    /// How long a file that left the path (rotated away or deleted) is
    /// still read after its last growth: a writer that has not reopened yet
    /// may append to it, or finish a line it was writing. Its unfinished
    /// last line is delivered alone once this has passed.
    pub drain_grace: Duration,
}

impl Default for TailerOptions {
    fn default() -> Self {
        Self {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            read_chunk: DEFAULT_READ_CHUNK,
            start: StartAt::End,
            max_poll_bytes: DEFAULT_MAX_POLL_BYTES,
            max_poll_lines: DEFAULT_MAX_POLL_LINES,
            drain_grace: DEFAULT_DRAIN_GRACE,
        }
    }
}

/// Where a new [`Tailer`] starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StartAt {
    /// Skip the complete lines the file holds at the first `poll()`. An
    /// unterminated last line is kept and returned once completed. If the
    /// file does not exist at the first poll, it is read from the beginning
    /// once it appears (everything in it is new). If the unterminated last
    /// line is already longer than the cap, the rest of it is dropped.
    #[default]
    End,
    /// Read the file from its first byte.
    Beginning,
    /// Continue from a position returned by [`Tailer::position`] in an
    /// earlier run. If that file is still at the path, reading continues at
    /// the offset (if it was truncated meanwhile, the rest is taken from a
    /// copy among the siblings when there is one, and the file is read from
    /// 0). If it was rotated to `<path>.k`, its rest is read, then
    /// `<path>.(k-1)` ... `<path>.1`, then the current file. If it is gone,
    /// the current file is read from the beginning (logged as a warning).
    Resume(TailPosition),
}

/// A point in a specific file, suitable for persisting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailPosition {
    /// `st_dev` of the file.
    pub dev: u64,
    /// `st_ino` of the file.
    pub ino: u64,
    /// Byte offset of the first byte not yet returned as part of a complete
    /// line (the start of a pending partial line, if any).
    pub offset: u64,
    /// FNV-1a 64 hash of the file's first `min(256, offset)` bytes, or `None`
    /// when `offset == 0`. Used on resume to detect inode reuse and in-place
    /// truncation.
    pub fingerprint: Option<u64>,
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The line, lossily decoded, without the trailing `\n` / `\r\n`.
    pub text: String,
    /// The line was longer than [`TailerOptions::max_line_bytes`] and was cut.
    pub truncated: bool,
    /// The line contained invalid UTF-8 (replaced by U+FFFD in `text`).
    pub invalid_utf8: bool,
}

/// What a [`Tailer::poll`] observed, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TailEvent {
    /// A complete line (or a partial line flushed at the end of a file).
    Line(Line),
    /// We stopped following a file (replaced at the path by another file) and
    /// moved on to the next one. `from` is the final position in the old
    /// file, after it was drained.
    Rotated {
        /// Final position in the file we left.
        from: TailPosition,
    },
    /// The followed file was truncated in place (copytruncate). `at` is the
    /// offset we had reached in it when the truncation was noticed; reading
    /// continues at 0. Lines written between the rotator's copy and its
    /// truncate are lost: that race is inherent in copytruncate.
    Truncated {
        /// Our offset in the file when the truncation was noticed.
        at: u64,
    },
    /// A file is at the path again after [`TailEvent::Missing`].
    Reopened,
    /// The path does not exist (reported once until it exists again).
    Missing,
}

/// Errors from [`Tailer::poll`]. The tailer stays usable: the next poll
/// retries. Lines gathered before an error are returned first and the error
/// is reported by the following poll, so no line is lost.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// `stat` of the path or of the open file failed (other than "not found").
    #[error("cannot stat {path}: {source}")]
    Stat {
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Opening the file failed (other than "not found").
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading the open file failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file concerned (the path it was opened under).
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// FNV-1a, 64 bit. Stable across builds and platforms (unlike std's hasher),
/// which matters because fingerprints are persisted.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn tailer_can_move_to_a_blocking_task() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<Tailer>();
        assert_send::<TailError>();
    }

    #[test]
    fn default_options() {
        let o = TailerOptions::default();
        assert_eq!(o.max_line_bytes, 64 * 1024);
        assert_eq!(o.read_chunk, 64 * 1024);
        assert_eq!(o.start, StartAt::End);
    }

    #[test]
    fn position_serde_roundtrip() {
        let p = TailPosition {
            dev: 1,
            ino: 2,
            offset: 3,
            fingerprint: Some(u64::MAX),
        };
        let s = serde_json::to_string(&p).expect("serialize");
        let back: TailPosition = serde_json::from_str(&s).expect("deserialize");
        assert_eq!(p, back);
    }
}
