//! The gateway-log path: random bytes written to a real file, read by the
//! real tailer, every line classified. Lines come out complete and bounded,
//! and never more bytes than were written.
#![no_main]

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use hermes_board::gateway_log::{LineClassifier, LineEvent};
use kanban_watchdog::config::LogPatterns;
use libfuzzer_sys::fuzz_target;
use log_tailer::{StartAt, TailEvent, Tailer, TailerOptions};

thread_local! {
    // Not Sync (it keeps a cell of its own): one per fuzzing thread.
    static CLASSIFIER: LineClassifier = LineClassifier::new(&LogPatterns::default()).unwrap();
}
static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
static N: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    CLASSIFIER.with(|classifier| one_input(classifier, data));
});

fn one_input(classifier: &LineClassifier, data: &[u8]) {
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let path = dir
        .path()
        .join(format!("gateway-{}.log", N.fetch_add(1, Ordering::Relaxed)));
    let max = 512;
    let mut tailer = Tailer::new(
        &path,
        TailerOptions {
            start: StartAt::Beginning,
            max_line_bytes: max,
            read_chunk: 97,
            ..TailerOptions::default()
        },
    );
    let _ = tailer.poll();
    // Written in two pieces (the first byte picks the split), polled between.
    let split = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    let mut f = std::fs::File::create(&path).unwrap();
    let mut lines = 0usize;
    let mut bytes = 0usize;
    for part in [&data[..split], &data[split..]] {
        f.write_all(part).unwrap();
        for ev in tailer.poll().unwrap() {
            if let TailEvent::Line(l) = ev {
                assert!(l.text.len() <= max * 3 + 3, "line cap holds");
                assert!(!l.text.contains('\n'));
                let event = classifier.classify(&l.text);
                let _ = event.label();
                if event == LineEvent::Activity {
                    assert!(l.text.contains("kanban dispatcher"));
                }
                lines += 1;
                bytes += l.text.len();
            }
        }
    }
    let newlines = data.iter().filter(|b| **b == b'\n').count();
    assert!(lines <= newlines, "{lines} lines from {newlines} newlines");
    let _ = bytes;
    let _ = classifier.classify(&String::from_utf8_lossy(data));
    drop(tailer);
    let _ = std::fs::remove_file(&path);
}
