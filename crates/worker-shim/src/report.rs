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
    let Ok(cap) = capture.lock() else {
        return StreamCapture::default();
    };
    let text = |bytes: &[u8]| redact(&String::from_utf8_lossy(bytes)).into_owned();
    StreamCapture {
        captured: true,
        bytes_total: cap.total(),
        head: text(cap.head()),
        tail: text(&cap.tail()),
        truncated: cap.truncated(),
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

/// Scans stdout then stderr captures. Secrets were already masked, and the
/// matched line is masked again in case a signature's line spans both.
pub fn classify(
    catalogue: &Catalogue,
    stdout: &StreamCapture,
    stderr: &StreamCapture,
    ctx: impl FnOnce() -> ClassifyContext,
) -> Option<Classification> {
    let mut text = String::new();
    for part in [&stdout.head, &stdout.tail, &stderr.head, &stderr.tail] {
        if part.is_empty() {
            continue;
        }
        text.push_str(part);
        if !part.ends_with('\n') {
            text.push('\n');
        }
    }
    if text.trim().is_empty() {
        return None;
    }
    catalogue.classify(&text, &ctx()).map(|mut c| {
        c.matched_line = redact(&c.matched_line).into_owned();
        c
    })
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
