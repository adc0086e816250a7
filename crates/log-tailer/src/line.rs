//! Line assembly: splits a byte stream on `\n`, caps line length, decodes lossily.

use crate::{Line, TailEvent};

/// Accumulates the bytes of the current (not yet terminated) line.
///
/// The buffer never holds more than `max` bytes: once a line is longer, the
/// rest of it is discarded up to the next `\n` and the line is flagged
/// `truncated`.
#[derive(Debug)]
pub(crate) struct Assembler {
    buf: Vec<u8>,
    max: usize,
    /// The current line exceeded `max`; its remaining bytes are dropped.
    overflow: bool,
    /// Drop everything up to and including the next `\n` without emitting a
    /// line (used when starting in the middle of an over-long line).
    skip: bool,
}

impl Assembler {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max: max.max(1),
            overflow: false,
            skip: false,
        }
    }

    /// The line length cap.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Whether bytes of an unterminated line are pending.
    pub(crate) fn has_partial(&self) -> bool {
        !self.buf.is_empty() || self.overflow
    }

    /// Discard the line we are in the middle of (without emitting it).
    pub(crate) fn skip_current_line(&mut self) {
        self.buf.clear();
        self.overflow = false;
        self.skip = true;
    }

    /// Feed a chunk of bytes; completed lines are pushed to `out`.
    ///
    /// Returns the index just past the last `\n` in `data`, if any (i.e.
    /// where the next line starts), so the caller can track line starts.
    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Vec<TailEvent>) -> Option<usize> {
        let mut start = 0;
        let mut next_line = None;
        while let Some(i) = data
            .get(start..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        {
            let end = start + i;
            if self.skip {
                self.skip = false;
            } else {
                self.push(data.get(start..end).unwrap_or_default());
                out.push(TailEvent::Line(self.take_line()));
            }
            start = end + 1;
            next_line = Some(start);
        }
        if !self.skip {
            self.push(data.get(start..).unwrap_or_default());
        }
        next_line
    }

    /// Emit the pending partial line (if any) as a line, and forget any
    /// pending skip. Used when the byte stream ends for good (file switch,
    /// truncation, deleted file).
    pub(crate) fn flush(&mut self, out: &mut Vec<TailEvent>) {
        self.skip = false;
        if self.has_partial() {
            out.push(TailEvent::Line(self.take_line()));
        }
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    fn push(&mut self, data: &[u8]) {
        if self.overflow || data.is_empty() {
            return;
        }
        let room = self.max.saturating_sub(self.buf.len());
        let take = data.len().min(room);
        if take < data.len() {
            self.overflow = true;
        }
        let Some(part) = data.get(..take) else {
            return;
        };
        if part.is_empty() {
            return;
        }
        let need = self.buf.len() + part.len();
        if need > self.buf.capacity() {
            // Grow geometrically but never beyond the cap, so a huge line
            // cannot make the buffer larger than `max`.
            let target = need
                .max(self.buf.capacity().saturating_mul(2))
                .min(self.max);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(part);
    }

    fn take_line(&mut self) -> Line {
        let truncated = self.overflow;
        let bytes: &[u8] = if truncated {
            trim_incomplete_tail(&self.buf)
        } else {
            self.buf.strip_suffix(b"\r").unwrap_or(&self.buf)
        };
        let (text, invalid_utf8) = match std::str::from_utf8(bytes) {
            Ok(s) => (s.to_owned(), false),
            Err(_) => (String::from_utf8_lossy(bytes).into_owned(), true),
        };
        self.buf.clear();
        self.overflow = false;
        Line {
            text,
            truncated,
            invalid_utf8,
        }
    }
}

/// Drop a trailing *incomplete but so far valid* UTF-8 sequence, which is
/// what cutting a line at the byte cap leaves when the cap falls inside a
/// multi-byte character. Anything else is left for the lossy decoder.
fn trim_incomplete_tail(b: &[u8]) -> &[u8] {
    let lo = b.len().saturating_sub(3);
    for i in (lo..b.len()).rev() {
        let Some(&byte) = b.get(i) else { break };
        if byte & 0xC0 == 0x80 {
            continue; // continuation byte: keep looking for the lead byte
        }
        if byte >= 0xC0 {
            let tail = b.get(i..).unwrap_or_default();
            let incomplete = std::str::from_utf8(tail).is_err_and(|e| e.error_len().is_none());
            if incomplete {
                return b.get(..i).unwrap_or(b);
            }
        }
        break;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(ev: Vec<TailEvent>) -> Vec<Line> {
        ev.into_iter()
            .filter_map(|e| match e {
                TailEvent::Line(l) => Some(l),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn splits_and_buffers_partials() {
        let mut a = Assembler::new(100);
        let mut out = Vec::new();
        assert_eq!(a.feed(b"ab", &mut out), None);
        assert!(out.is_empty());
        assert_eq!(a.feed(b"c\nde\r\nf", &mut out), Some(6));
        let l = lines(std::mem::take(&mut out));
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].text, "abc");
        assert_eq!(l[1].text, "de");
        assert!(a.has_partial());
        a.flush(&mut out);
        assert_eq!(lines(out)[0].text, "f");
        assert!(!a.has_partial());
    }

    #[test]
    fn caps_long_lines_across_chunks() {
        let mut a = Assembler::new(4);
        let mut out = Vec::new();
        a.feed(b"abc", &mut out);
        a.feed(b"defgh", &mut out);
        a.feed(b"ij\nxy\n", &mut out);
        let l = lines(out);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].text, "abcd");
        assert!(l[0].truncated);
        assert_eq!(l[1].text, "xy");
        assert!(!l[1].truncated);
        assert!(a.capacity() <= 4);
    }

    #[test]
    fn exact_cap_is_not_truncated() {
        let mut a = Assembler::new(3);
        let mut out = Vec::new();
        a.feed(b"abc\n", &mut out);
        let l = lines(out);
        assert_eq!(l[0].text, "abc");
        assert!(!l[0].truncated);
    }

    #[test]
    fn cut_inside_multibyte_char_is_trimmed_not_flagged() {
        // "aé€" = 61 C3 A9 E2 82 AC; cap 5 cuts inside the euro sign.
        let mut a = Assembler::new(5);
        let mut out = Vec::new();
        a.feed("aé€\n".as_bytes(), &mut out);
        let l = lines(out);
        assert_eq!(l[0].text, "aé");
        assert!(l[0].truncated);
        assert!(!l[0].invalid_utf8);
    }

    #[test]
    fn invalid_bytes_are_lossy_and_flagged() {
        let mut a = Assembler::new(100);
        let mut out = Vec::new();
        a.feed(b"ok \xff\xfe end\n", &mut out);
        let l = lines(out);
        assert_eq!(l[0].text, "ok \u{fffd}\u{fffd} end");
        assert!(l[0].invalid_utf8);
        assert!(!l[0].truncated);
    }

    #[test]
    fn skip_drops_rest_of_line() {
        let mut a = Assembler::new(100);
        let mut out = Vec::new();
        a.skip_current_line();
        a.feed(b"tail of old", &mut out);
        a.feed(b" line\nnext\n", &mut out);
        let l = lines(out);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].text, "next");
    }

    #[test]
    fn trim_incomplete_tail_cases() {
        assert_eq!(trim_incomplete_tail(b"ab"), b"ab");
        assert_eq!(trim_incomplete_tail(b"a\xc3"), b"a");
        assert_eq!(trim_incomplete_tail(b"a\xe2\x82"), b"a");
        assert_eq!(trim_incomplete_tail(b"a\xf0\x9f\x98"), b"a");
        // Invalid, not merely incomplete: left for the lossy decoder.
        assert_eq!(trim_incomplete_tail(b"a\xe0\x80"), b"a\xe0\x80");
        assert_eq!(trim_incomplete_tail(b"a\x80"), b"a\x80");
        assert_eq!(trim_incomplete_tail(b"\xc3\xa9"), b"\xc3\xa9");
    }
}
