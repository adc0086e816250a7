//! The [`Tailer`] state machine. See the crate docs for the semantics.

use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::line::Assembler;
use crate::{
    FINGERPRINT_BYTES, StartAt, TailError, TailEvent, TailPosition, TailerOptions, fnv1a64,
};

/// Rotated siblings `<path>.1` ..= `<path>.MAX_SIBLINGS` are considered.
const MAX_SIBLINGS: usize = 16;
/// Bytes remembered just before the read offset, to recognise a copy of the
/// followed file after a copytruncate.
const RECENT_BYTES: usize = 256;
/// Bound on file switches in one poll (each sibling at most once, plus slack).
const MAX_STEPS_PER_POLL: usize = MAX_SIBLINGS + 4;

/// The file currently being followed (kept open across renames/deletion).
#[derive(Debug)]
struct Current {
    file: File,
    /// The path it was opened under (for messages only).
    origin: PathBuf,
    dev: u64,
    ino: u64,
    /// Next byte to read.
    read_offset: u64,
    /// Start of the pending partial line (== `read_offset` when none).
    line_start: u64,
    /// `file[0 .. min(FINGERPRINT_BYTES, read_offset)]`.
    head: Vec<u8>,
    /// `file[read_offset - min(RECENT_BYTES, read_offset) .. read_offset]`.
    recent: Vec<u8>,
    /// When the file last showed life: opened, a read found new bytes, or
    /// it left the path (the drain grace counts from the latest).
    grew_at: Instant,
}

impl Current {
    fn at_start(file: File, origin: PathBuf, meta: &Metadata) -> Self {
        Self {
            file,
            origin,
            dev: meta.dev(),
            ino: meta.ino(),
            read_offset: 0,
            line_start: 0,
            head: Vec::new(),
            recent: Vec::new(),
            grew_at: Instant::now(),
        }
    }

    /// Open at `offset`, which must be a line start; primes `head`/`recent`
    /// from the file so the invariants hold.
    fn at_offset(file: File, origin: PathBuf, meta: &Metadata, offset: u64) -> io::Result<Self> {
        let mut c = Self::at_start(file, origin, meta);
        let head_len = offset.min(FINGERPRINT_BYTES as u64) as usize;
        let recent_len = offset.min(RECENT_BYTES as u64) as usize;
        c.head = read_at_most(&c.file, head_len, 0)?;
        c.recent = read_at_most(&c.file, recent_len, offset - recent_len as u64)?;
        c.read_offset = offset;
        c.line_start = offset;
        Ok(c)
    }

    fn same_file(&self, meta: &Metadata) -> bool {
        meta.dev() == self.dev && meta.ino() == self.ino
    }

    fn position(&self) -> TailPosition {
        let n = self.line_start.min(FINGERPRINT_BYTES as u64) as usize;
        let fingerprint =
            (self.line_start > 0).then(|| fnv1a64(self.head.get(..n).unwrap_or(&self.head)));
        TailPosition {
            dev: self.dev,
            ino: self.ino,
            offset: self.line_start,
            fingerprint,
        }
    }

    /// Record `data`, just read at `read_offset`, in `head` and `recent`.
    fn observe(&mut self, data: &[u8]) {
        if self.read_offset < FINGERPRINT_BYTES as u64 {
            let want = FINGERPRINT_BYTES - self.read_offset as usize;
            self.head
                .extend_from_slice(data.get(..want.min(data.len())).unwrap_or_default());
        }
        if data.len() >= RECENT_BYTES {
            self.recent.clear();
            self.recent
                .extend_from_slice(data.get(data.len() - RECENT_BYTES..).unwrap_or_default());
        } else {
            self.recent.extend_from_slice(data);
            let excess = self.recent.len().saturating_sub(RECENT_BYTES);
            self.recent.drain(..excess);
        }
    }

    /// Whether the bytes we read at the start of the file are still there.
    /// Catches a truncation followed by writes past our offset.
    fn content_replaced(&self) -> io::Result<bool> {
        if self.head.is_empty() {
            return Ok(false);
        }
        let mut buf = [0_u8; FINGERPRINT_BYTES];
        let Some(buf) = buf.get_mut(..self.head.len()) else {
            return Ok(true);
        };
        let n = fill_at(&self.file, buf, 0)?;
        Ok(buf.get(..n) != Some(self.head.as_slice()))
    }

    fn reset(&mut self) {
        self.read_offset = 0;
        self.line_start = 0;
        self.head.clear();
        self.recent.clear();
    }
}

enum Step {
    /// Keep following this file; the poll is done.
    Stay,
    /// The path now holds another file: move on.
    Switch,
}

/// At most this many rotated-away files are kept open.
const MAX_DRAINING: usize = 4;

#[derive(Debug)]
struct Draining {
    cur: Current,
    asm: Assembler,
}

/// What one poll may still read ([`TailerOptions::max_poll_bytes`],
/// [`TailerOptions::max_poll_lines`]).
#[derive(Debug, Clone, Copy)]
struct Budget {
    bytes: usize,
    lines: usize,
    /// A read stopped because the budget was spent.
    cut: bool,
}

impl Budget {
    fn new(bytes: usize, lines: usize) -> Budget {
        Budget {
            bytes,
            lines,
            cut: false,
        }
    }

    fn unlimited() -> Budget {
        Budget::new(usize::MAX, usize::MAX)
    }

    /// Whether another read is allowed, with `gathered` events so far.
    fn allows(&mut self, gathered: usize) -> bool {
        if self.bytes == 0 || gathered >= self.lines {
            self.cut = true;
        }
        !self.cut
    }
}

/// Follows one log file by path. See the crate docs.
#[derive(Debug)]
pub struct Tailer {
    path: PathBuf,
    read_chunk: usize,
    max_poll_bytes: usize,
    max_poll_lines: usize,
    budget: Budget,
    /// Until the first successful poll: how to start.
    start: Option<StartAt>,
    cur: Option<Current>,
    asm: Assembler,
    /// Files rotated away but kept open for [`TailerOptions::drain_grace`]: a writer that
    /// has not reopened yet may still append a few lines to them.
    draining: Vec<Draining>,
    max_line_bytes: usize,
    drain_grace: Duration,
    chunk: Vec<u8>,
    missing_reported: bool,
    /// An error hit after lines were already gathered; reported next poll.
    pending_error: Option<TailError>,
}

impl Tailer {
    /// Create a tailer for `path`. Does no I/O: the start position is resolved
    /// by the first [`poll`](Self::poll), and a missing file is waited for.
    pub fn new(path: impl Into<PathBuf>, opts: TailerOptions) -> Tailer {
        Tailer {
            path: path.into(),
            read_chunk: opts.read_chunk.max(1),
            max_poll_bytes: opts.max_poll_bytes.max(1),
            max_poll_lines: opts.max_poll_lines.max(1),
            budget: Budget::unlimited(),
            start: Some(opts.start),
            cur: None,
            asm: Assembler::new(opts.max_line_bytes),
            draining: Vec::new(),
            max_line_bytes: opts.max_line_bytes,
            drain_grace: opts.drain_grace,
            chunk: Vec::new(),
            missing_reported: false,
            pending_error: None,
        }
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a restarted tailer should resume ([`StartAt::Resume`]) so that it
    /// returns exactly the lines not yet returned by this one. Points at the
    /// start of a pending partial line, never past it. Before the first poll
    /// of a resumed tailer this is the resume position itself. `None` when no
    /// file has been opened yet.
    pub fn position(&self) -> Option<TailPosition> {
        if let Some(cur) = &self.cur {
            return Some(cur.position());
        }
        match &self.start {
            Some(StartAt::Resume(p)) => Some(p.clone()),
            _ => None,
        }
    }

    /// Read everything available now. Returns the lines and state changes in
    /// order. When nothing changed this costs a `stat` of the path and a
    /// `pread` of at most 256 bytes (the truncation check). On error the tailer stays usable and the next poll retries; if
    /// lines had already been gathered they are returned and the error is
    /// returned by the next call instead.
    pub fn poll(&mut self) -> Result<Vec<TailEvent>, TailError> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        let mut out = Vec::new();
        match self.poll_inner(&mut out) {
            Ok(()) => Ok(out),
            Err(e) if out.is_empty() => Err(e),
            Err(e) => {
                debug!(path = %self.path.display(), error = %e, "error after gathering events; reporting it on the next poll");
                self.pending_error = Some(e);
                Ok(out)
            }
        }
    }

    /// The last poll stopped at its bound ([`TailerOptions::max_poll_bytes`]
    /// or [`TailerOptions::max_poll_lines`]) with more to read: poll again
    /// (after handling what it returned) without waiting for a change.
    pub fn has_more(&self) -> bool {
        self.budget.cut
    }

    fn poll_inner(&mut self, out: &mut Vec<TailEvent>) -> Result<(), TailError> {
        self.budget = Budget::new(self.max_poll_bytes, self.max_poll_lines);
        if self.chunk.len() != self.read_chunk {
            self.chunk = vec![0; self.read_chunk];
        }
        if let Some(start) = self.start.clone() {
            self.begin(start, out)?;
            self.start = None;
        }
        self.drain_rotated(out);
        for _ in 0..MAX_STEPS_PER_POLL {
            let path_meta = self.stat_path()?;
            let mut cur = match self.cur.take() {
                Some(cur) => cur,
                None => {
                    let opened = match path_meta {
                        Some(_) => open_from_start(&self.path)?,
                        None => None,
                    };
                    match opened {
                        Some(cur) => {
                            debug!(path = %self.path.display(), "opened log file");
                            self.note_present(out);
                            cur
                        }
                        None => {
                            self.note_missing(out);
                            return Ok(());
                        }
                    }
                }
            };
            match self.step(&mut cur, path_meta.as_ref(), out) {
                Ok(Step::Stay) => {
                    self.cur = Some(cur);
                    return Ok(());
                }
                Ok(Step::Switch) => self.switch(cur, out)?,
                Err(e) => {
                    self.cur = Some(cur);
                    return Err(e);
                }
            }
        }
        debug!(path = %self.path.display(), "many file switches in one poll; continuing next poll");
        Ok(())
    }

    /// One round on the followed file: truncation check, read, and decide
    /// whether the path still names it.
    fn step(
        &mut self,
        cur: &mut Current,
        path_meta: Option<&Metadata>,
        out: &mut Vec<TailEvent>,
    ) -> Result<Step, TailError> {
        let same = path_meta.is_some_and(|m| cur.same_file(m));
        if same {
            self.note_present(out);
        }
        let (size, nlink) = match path_meta {
            Some(m) if same => (m.len(), m.nlink()),
            _ => {
                let m = cur.file.metadata().map_err(|source| TailError::Stat {
                    path: cur.origin.clone(),
                    source,
                })?;
                (m.len(), m.nlink())
            }
        };
        if cur.read_offset > 0 {
            let truncated = size < cur.read_offset
                || cur.content_replaced().map_err(|source| TailError::Read {
                    path: cur.origin.clone(),
                    source,
                })?;
            if truncated {
                self.handle_truncation(cur, out);
            }
        }
        // When leaving the file (path gone or replaced) read until EOF no
        // matter what the size said, so nothing written before the switch
        // is missed.
        if (size > cur.read_offset || !same)
            && !read_to_eof(cur, &mut self.asm, &mut self.chunk, out, &mut self.budget)?
        {
            // The poll's bound was reached: the rest of this file (and any
            // switch away from it) waits for the next poll.
            return Ok(Step::Stay);
        }
        if same {
            return Ok(Step::Stay);
        }
        if path_meta.is_none() {
            // A partial line of a deleted file is still the writer's: a
            // writer that has not reopened yet finishes it in this file (a
            // line we saw half-written is usually one write(2) still in
            // progress). Delivered alone only once the file stayed quiet
            // for the drain grace.
            if nlink == 0 && self.asm.has_partial() && cur.grew_at.elapsed() >= self.drain_grace {
                debug!(path = %cur.origin.display(), "followed file deleted and quiet; flushing its partial line");
                self.asm.flush(out);
                cur.line_start = cur.read_offset;
            }
            self.note_missing(out);
            return Ok(Step::Stay);
        }
        Ok(Step::Switch)
    }

    /// The path names another file: finish `cur` and move to the next file,
    /// which is the next-newer rotated sibling if files were rotated away
    /// between polls, else the file at the path.
    fn switch(&mut self, mut cur: Current, out: &mut Vec<TailEvent>) -> Result<(), TailError> {
        let from = cur.position();
        // The successor of the old file is the nearest sibling newer than
        // it. A rotation between finding it and opening it shifts every
        // name, the old file's included: open, then check the file opened
        // is still the old file's successor, else look again.
        let (mut next, mut opened) = (self.path.clone(), None);
        for _ in 0..16 {
            next = self.successor_of(cur.dev, cur.ino);
            opened = open_from_start(&next)?;
            let again = self.successor_of(cur.dev, cur.ino);
            let still = match (&opened, fs::metadata(&again)) {
                (Some(o), Ok(m)) => again == next && o.same_file(&m),
                (None, Err(_)) => again == next,
                _ => false,
            };
            if still {
                break;
            }
        }
        info!(
            path = %self.path.display(),
            old_offset = from.offset,
            next = %next.display(),
            "log file rotated; following the next file"
        );
        out.push(TailEvent::Rotated { from });
        // A pending partial line goes with its file: the writer that has
        // not reopened yet finishes it there. It is delivered alone when
        // the file is let go.
        let asm = std::mem::replace(&mut self.asm, Assembler::new(self.max_line_bytes));
        cur.grew_at = Instant::now();
        self.draining.push(Draining { cur, asm });
        if self.draining.len() > MAX_DRAINING {
            let mut oldest = self.draining.remove(0);
            oldest.asm.flush(out);
        }
        self.cur = opened;
        Ok(())
    }

    /// Reads what late writers appended to files already rotated away, and
    /// lets go of them once they stayed quiet for [`TailerOptions::drain_grace`].
    fn drain_rotated(&mut self, out: &mut Vec<TailEvent>) {
        let grace = self.drain_grace;
        let chunk = &mut self.chunk;
        let budget = &mut self.budget;
        self.draining.retain_mut(|d| {
            let before = d.cur.read_offset;
            match read_to_eof(&mut d.cur, &mut d.asm, chunk, out, budget) {
                // Cut by the poll's bound: keep it, read on next poll.
                Ok(false) => return true,
                Ok(true) => {}
                Err(e) => {
                    debug!(path = %d.cur.origin.display(), error = %e, "cannot read a rotated file")
                }
            }
            if d.cur.read_offset > before || d.cur.grew_at.elapsed() < grace {
                return true;
            }
            d.asm.flush(out);
            false
        });
    }

    /// Truncation of the followed file detected: recover the unread rest of
    /// the old content from a copy (copytruncate) if one is found, then
    /// restart at offset 0.
    fn handle_truncation(&mut self, cur: &mut Current, out: &mut Vec<TailEvent>) {
        let at = cur.read_offset;
        warn!(path = %cur.origin.display(), at, "log file truncated in place");
        let (head, recent) = (&cur.head, &cur.recent);
        let copy = self.find_copy((cur.dev, cur.ino), at, |f| {
            if read_at_most(f, head.len(), 0)? != *head {
                return Ok(false);
            }
            Ok(read_at_most(f, recent.len(), at - recent.len() as u64)? == *recent)
        });
        if let Some((file, meta, origin)) = copy {
            self.drain_copy(file, origin, &meta, at, out);
        }
        self.asm.flush(out);
        out.push(TailEvent::Truncated { at });
        cur.reset();
    }

    /// Best effort: read a copy of a truncated file from `from` to its end.
    fn drain_copy(
        &mut self,
        file: File,
        origin: PathBuf,
        meta: &Metadata,
        from: u64,
        out: &mut Vec<TailEvent>,
    ) {
        let mut copy = Current::at_start(file, origin, meta);
        copy.read_offset = from;
        copy.line_start = from;
        // Not bounded by the poll's budget: the copy is read once, now.
        let mut whole = Budget::unlimited();
        match read_to_eof(&mut copy, &mut self.asm, &mut self.chunk, out, &mut whole) {
            Ok(_) => info!(
                copy = %copy.origin.display(),
                bytes = copy.read_offset - from,
                "read the rest of the truncated content from its copy"
            ),
            Err(e) => warn!(error = %e, "could not read the copy of a truncated log file"),
        }
    }

    fn begin(&mut self, start: StartAt, out: &mut Vec<TailEvent>) -> Result<(), TailError> {
        match start {
            StartAt::Beginning => Ok(()),
            StartAt::End => self.begin_at_end(),
            StartAt::Resume(pos) => self.begin_resume(pos, out),
        }
    }

    fn begin_at_end(&mut self) -> Result<(), TailError> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(TailError::Open {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let read_err = |source| TailError::Read {
            path: self.path.clone(),
            source,
        };
        let meta = file.metadata().map_err(|source| TailError::Stat {
            path: self.path.clone(),
            source,
        })?;
        let limit = self.asm_cap_plus_one();
        let (offset, skip) =
            last_line_start(&file, meta.len(), limit, &mut self.chunk).map_err(read_err)?;
        let cur = Current::at_offset(file, self.path.clone(), &meta, offset).map_err(read_err)?;
        if skip {
            self.asm.skip_current_line();
        }
        debug!(path = %self.path.display(), offset, "starting at the end of the log file");
        self.cur = Some(cur);
        Ok(())
    }

    fn asm_cap_plus_one(&self) -> u64 {
        self.asm.max() as u64 + 1
    }

    fn begin_resume(
        &mut self,
        pos: TailPosition,
        out: &mut Vec<TailEvent>,
    ) -> Result<(), TailError> {
        let Some((file, meta, origin)) = self.locate(&pos)? else {
            warn!(
                path = %self.path.display(),
                ?pos,
                "saved log position's file is gone; starting at the beginning of the current file (lines may have been lost)"
            );
            return Ok(());
        };
        let read_err = |source| TailError::Read {
            path: origin.clone(),
            source,
        };
        if meta.len() >= pos.offset && fingerprint_matches(&file, &pos).map_err(read_err)? {
            let cur =
                Current::at_offset(file, origin.clone(), &meta, pos.offset).map_err(read_err)?;
            info!(path = %origin.display(), offset = pos.offset, "resuming log file");
            self.cur = Some(cur);
            return Ok(());
        }
        // Same inode, different content: truncated while we were down (or
        // the inode was reused by a new file).
        warn!(
            path = %origin.display(),
            offset = pos.offset,
            size = meta.len(),
            "log file was truncated or replaced while not running; reading it from the beginning"
        );
        if pos.offset > 0 {
            let copy = self.find_copy((pos.dev, pos.ino), pos.offset, |f| {
                fingerprint_matches(f, &pos)
            });
            if let Some((cfile, cmeta, corigin)) = copy {
                self.drain_copy(cfile, corigin, &cmeta, pos.offset, out);
            }
        }
        self.asm.flush(out);
        out.push(TailEvent::Truncated { at: pos.offset });
        self.cur = Some(Current::at_start(file, origin, &meta));
        Ok(())
    }

    /// Find the file with `pos`'s identity at the path or among its siblings.
    fn locate(&self, pos: &TailPosition) -> Result<Option<(File, Metadata, PathBuf)>, TailError> {
        let at_path = self.stat_path()?.map(|m| (self.path.clone(), m));
        for (candidate, meta) in at_path.into_iter().chain(self.existing_siblings()) {
            if (meta.dev(), meta.ino()) != (pos.dev, pos.ino) {
                continue;
            }
            let file = match File::open(&candidate) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(TailError::Open {
                        path: candidate,
                        source,
                    });
                }
            };
            let meta = file.metadata().map_err(|source| TailError::Stat {
                path: candidate.clone(),
                source,
            })?;
            if (meta.dev(), meta.ino()) == (pos.dev, pos.ino) {
                return Ok(Some((file, meta, candidate)));
            }
        }
        Ok(None)
    }

    /// The file rotated in right after `(dev, ino)`: the nearest sibling
    /// newer than it, else the path (also when it is not among the
    /// siblings: deleted, or moved out of the naming scheme).
    ///
    /// A rotator shifts `.k` to `.k+1` one name at a time, from the oldest
    /// down, before renaming the path to `.1`: in between, one index is
    /// missing. The scan goes past such a gap (stopping at the first
    /// missing name would send the tailer to the path and skip the files
    /// between).
    fn successor_of(&self, dev: u64, ino: u64) -> PathBuf {
        let mut newer = None;
        for (p, m) in self.existing_siblings() {
            if (m.dev(), m.ino()) == (dev, ino) {
                return newer.unwrap_or_else(|| self.path.clone());
            }
            newer = Some(p);
        }
        self.path.clone()
    }

    /// The rotated siblings `<path>.1` ..= `<path>.MAX_SIBLINGS` that exist
    /// now, oldest last, with their metadata. A missing name may be a gap a
    /// rotator is shifting through: the scan looks past it.
    fn existing_siblings(&self) -> impl Iterator<Item = (PathBuf, Metadata)> + '_ {
        (1..=MAX_SIBLINGS).filter_map(|k| {
            let p = sibling(&self.path, k);
            match fs::metadata(&p) {
                Ok(m) => Some((p, m)),
                Err(e) => {
                    if e.kind() != io::ErrorKind::NotFound {
                        debug!(path = %p.display(), error = %e, "cannot stat rotated sibling");
                    }
                    None
                }
            }
        })
    }

    /// A sibling other than `exclude`, at least `min_size` long, for which
    /// `matches` holds. Errors are logged and the candidate skipped.
    fn find_copy(
        &self,
        exclude: (u64, u64),
        min_size: u64,
        matches: impl Fn(&File) -> io::Result<bool>,
    ) -> Option<(File, Metadata, PathBuf)> {
        for (p, meta) in self.existing_siblings() {
            if !meta.is_file() || (meta.dev(), meta.ino()) == exclude || meta.len() < min_size {
                continue;
            }
            let file = match File::open(&p) {
                Ok(f) => f,
                Err(e) => {
                    debug!(path = %p.display(), error = %e, "cannot open rotated sibling");
                    continue;
                }
            };
            match matches(&file) {
                Ok(true) => return Some((file, meta, p)),
                Ok(false) => {}
                Err(e) => debug!(path = %p.display(), error = %e, "cannot read rotated sibling"),
            }
        }
        None
    }

    fn stat_path(&self) -> Result<Option<Metadata>, TailError> {
        match fs::metadata(&self.path) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TailError::Stat {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn note_missing(&mut self, out: &mut Vec<TailEvent>) {
        if !self.missing_reported {
            self.missing_reported = true;
            warn!(path = %self.path.display(), "log file missing; waiting for it to appear");
            out.push(TailEvent::Missing);
        }
    }

    fn note_present(&mut self, out: &mut Vec<TailEvent>) {
        if self.missing_reported {
            self.missing_reported = false;
            info!(path = %self.path.display(), "log file present again");
            out.push(TailEvent::Reopened);
        }
    }

    #[cfg(test)]
    fn line_buffer_capacity(&self) -> usize {
        self.asm.capacity()
    }
}

/// `<path>.k`
fn sibling(path: &Path, k: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{k}"));
    PathBuf::from(s)
}

fn open_from_start(path: &Path) -> Result<Option<Current>, TailError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TailError::Open {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let meta = file.metadata().map_err(|source| TailError::Stat {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Some(Current::at_start(file, path.to_path_buf(), &meta)))
}

/// Read `cur` from its offset until `read` returns 0, feeding the assembler,
/// or until `budget` is spent. `Ok(true)` at EOF, `Ok(false)` when cut by
/// the budget. State is updated per chunk, so an error or a cut leaves it
/// consistent.
fn read_to_eof(
    cur: &mut Current,
    asm: &mut Assembler,
    chunk: &mut [u8],
    out: &mut Vec<TailEvent>,
    budget: &mut Budget,
) -> Result<bool, TailError> {
    loop {
        if !budget.allows(out.len()) {
            return Ok(false);
        }
        let n = match cur.file.read_at(chunk, cur.read_offset) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(TailError::Read {
                    path: cur.origin.clone(),
                    source,
                });
            }
        };
        if n == 0 {
            return Ok(true);
        }
        cur.grew_at = Instant::now();
        budget.bytes = budget.bytes.saturating_sub(n);
        let data = chunk.get(..n).unwrap_or_default();
        cur.observe(data);
        if let Some(next_line) = asm.feed(data, out) {
            cur.line_start = cur.read_offset + next_line as u64;
        }
        cur.read_offset += n as u64;
    }
}

/// Up to `len` bytes at `offset` (fewer at EOF).
fn read_at_most(file: &File, len: usize, offset: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    let filled = fill_at(file, &mut buf, offset)?;
    buf.truncate(filled);
    Ok(buf)
}

/// Fill `buf` from `offset`, stopping early only at EOF. Returns the count.
fn fill_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match file.read_at(rest, offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn fingerprint_matches(file: &File, pos: &TailPosition) -> io::Result<bool> {
    let Some(fp) = pos.fingerprint else {
        return Ok(true);
    };
    let n = pos.offset.min(FINGERPRINT_BYTES as u64) as usize;
    let head = read_at_most(file, n, 0)?;
    Ok(head.len() == n && fnv1a64(&head) == fp)
}

/// Where to start so that only lines completed after now are returned: just
/// after the last `\n` among the last `limit` bytes. Returns `(offset, skip)`;
/// `skip` means the last line is longer than the cap and we start in its
/// middle, so its rest must be dropped.
fn last_line_start(
    file: &File,
    size: u64,
    limit: u64,
    chunk: &mut [u8],
) -> io::Result<(u64, bool)> {
    let lo = size.saturating_sub(limit);
    let mut end = size;
    while end > lo {
        let start = end.saturating_sub(chunk.len() as u64).max(lo);
        let len = (end - start) as usize;
        let Some(buf) = chunk.get_mut(..len) else {
            break;
        };
        let filled = fill_at(file, buf, start)?;
        let got = buf.get(..filled).unwrap_or_default();
        if let Some(i) = got.iter().rposition(|&b| b == b'\n') {
            return Ok((start + i as u64 + 1, false));
        }
        end = start;
    }
    if lo == 0 {
        Ok((0, false))
    } else {
        Ok((size, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn ten_megabyte_line_keeps_the_buffer_capped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gateway.log");
        let mut f = File::create(&path).expect("create");
        let opts = TailerOptions {
            start: StartAt::Beginning,
            ..TailerOptions::default()
        };
        let cap = opts.max_line_bytes;
        let mut t = Tailer::new(&path, opts);
        let mb = vec![b'q'; 1024 * 1024];
        for _ in 0..10 {
            f.write_all(&mb).expect("write");
            assert!(t.poll().expect("poll").is_empty());
            assert!(t.line_buffer_capacity() <= cap);
        }
        // Unterminated: a restart must re-read it from its start.
        assert_eq!(t.position().map(|p| p.offset), Some(0));
        f.write_all(b"\n").expect("write");
        let ev = t.poll().expect("poll");
        assert_eq!(ev.len(), 1);
        match &ev[0] {
            TailEvent::Line(l) => {
                assert!(l.truncated);
                assert_eq!(l.text.len(), cap);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(t.line_buffer_capacity() <= cap);
        assert_eq!(t.chunk.len(), crate::DEFAULT_READ_CHUNK);
        assert_eq!(t.position().map(|p| p.offset), Some(10 * 1024 * 1024 + 1));
    }

    #[test]
    fn sibling_names() {
        assert_eq!(
            sibling(Path::new("/x/gateway.log"), 2),
            PathBuf::from("/x/gateway.log.2")
        );
    }

    #[test]
    fn last_line_start_cases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut chunk = vec![0; 3];
        let check = |content: &[u8], limit: u64, chunk: &mut [u8]| {
            std::fs::write(&path, content).expect("write");
            let f = File::open(&path).expect("open");
            last_line_start(&f, content.len() as u64, limit, chunk).expect("scan")
        };
        assert_eq!(check(b"", 10, &mut chunk), (0, false));
        assert_eq!(check(b"ab\ncd\n", 10, &mut chunk), (6, false));
        assert_eq!(check(b"ab\ncdef", 10, &mut chunk), (3, false));
        assert_eq!(check(b"abcdef", 10, &mut chunk), (0, false));
        assert_eq!(check(b"\nabcdefghijkl", 5, &mut chunk), (13, true));
    }
}
