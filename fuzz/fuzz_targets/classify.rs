//! The failure-signature catalogue on arbitrary worker output: never
//! panics, and what it reports is well-formed (a redacted matched line
//! that occurs in the input, a sane reset time).
#![no_main]

use failure_signatures::{Catalogue, ClassifyContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let ctx = ClassifyContext::new(
        jiff::Timestamp::from_second(1_790_000_000).unwrap(),
        jiff::tz::TimeZone::UTC,
    );
    let catalogue = Catalogue::builtin();
    if let Some(c) = catalogue.classify(&text, &ctx) {
        assert!(!c.signature.is_empty());
        assert!(catalogue.get(&c.signature).is_some());
        assert!(c.matched_line.len() <= 4096, "matched line is bounded");
        // Redaction is idempotent: the reported line is already clean.
        assert_eq!(failure_signatures::redact(&c.matched_line), c.matched_line);
        if let Some(s) = c.retry_after_s {
            assert!(s.is_finite() && s >= 0.0, "retry_after_s {s}");
        }
    }
    let _ = failure_signatures::redact(&text);
});
