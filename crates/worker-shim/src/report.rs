//! Turning a finished run into an exit record: capture snapshots, redaction,
//! classification, and the exit-code translation.

use std::path::Path;
use std::sync::{Arc, Mutex};

use exit_record::{ExitInfo, StreamCapture};
use failure_signatures::{Catalogue, Classification, ClassifyContext, redact};

use crate::capture::HeadTail;
use crate::cli::Tempfail;

/// Redacted, lossy-decoded copy of one stream's capture.
pub fn snapshot(capture: Option<&Arc<Mutex<HeadTail>>>) -> StreamCapture {
    let Some(capture) = capture else {
        return StreamCapture::default();
    };
    let Ok(mut cap) = capture.lock() else {
        return StreamCapture::default();
    };
    let text = |bytes: &[u8]| redact(&utf8_lossy(bytes)).into_owned();
    StreamCapture {
        captured: true,
        bytes_total: cap.total(),
        head: text(cap.head()),
        tail: text(cap.tail()),
        truncated: cap.truncated(),
    }
}

/// `bytes` as text, invalid UTF-8 replaced by U+FFFD. Valid text (nearly
/// every capture) is checked by `str::from_utf8`, which skips ASCII a word
/// at a time; `from_utf8_lossy` decodes it character by character (7
/// instructions a byte, a third of the shim's work at the end of a run
/// with 72 KiB captured, callgrind on kw-bench 1g's workload).
fn utf8_lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Loads the catalogue: built-ins plus the operator's file. A broken file
/// never costs the worker anything: the built-ins are used and the reason
/// is returned for one line on stderr.
pub fn catalogue(extra: Option<&Path>) -> (Catalogue, Option<String>) {
    let builtin = Catalogue::builtin();
    match extra {
        None => (builtin, None),
        Some(path) => match Catalogue::load_file(path) {
            Ok(user) => (builtin.merged(user), None),
            Err(e) => (
                Catalogue::builtin(),
                Some(format!("ignoring signatures file: {e}")),
            ),
        },
    }
}

/// Judges the stdout and stderr captures, each as its own stream (a
/// failure counts only at the end of its stream, see
/// `failure_signatures::evidence`). Secrets were already masked; the matched
/// line is masked again in case a signature's line spans both halves.
pub fn classify(
    catalogue: &Catalogue,
    stdout: &StreamCapture,
    stderr: &StreamCapture,
    ctx: impl FnOnce() -> ClassifyContext,
) -> Option<Classification> {
    let stdout = stream_text(stdout);
    let stderr = stream_text(stderr);
    if stdout.trim().is_empty() && stderr.trim().is_empty() {
        return None;
    }
    catalogue
        .judge_lazily(&[&stdout, &stderr], ctx)
        .winner
        .map(|mut c| {
            c.matched_line = redact(&c.matched_line).into_owned();
            c
        })
}

/// One stream's captured text: head then tail (contiguous unless bytes
/// were dropped between them, in which case a line break separates them).
fn stream_text(s: &StreamCapture) -> String {
    let mut text = String::with_capacity(s.head.len() + s.tail.len() + 1);
    text.push_str(&s.head);
    if s.truncated && !s.tail.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&s.tail);
    text
}

/// The code the shim exits with, given how the worker ended.
pub fn reported_code(exit: &ExitInfo, failure: Option<&Classification>, tempfail: Tempfail) -> i32 {
    if let Some(sig) = exit.signal {
        return 128 + sig;
    }
    let code = exit.code.unwrap_or(1);
    match (tempfail, failure) {
        (Tempfail::Code(t), Some(f)) if f.transient && (code == 0 || code == 1) => t,
        _ => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_decode_as_from_utf8_lossy_does() {
        let cases: [&[u8]; 6] = [
            b"",
            b"plain ascii\n",
            "caf\u{e9} \u{2713} \u{1f600}".as_bytes(),
            b"bad \xff byte",
            // A tail ring cut in the middle of a character.
            b"\xa9 ends cut \xe2\x9c",
            b"\xc3\x28 overlong \xf0\x28\x8c\x28",
        ];
        for bytes in cases {
            assert_eq!(
                utf8_lossy(bytes),
                String::from_utf8_lossy(bytes),
                "{bytes:?}"
            );
        }
        assert!(matches!(
            utf8_lossy(b"ok"),
            std::borrow::Cow::Borrowed("ok")
        ));
    }
}
