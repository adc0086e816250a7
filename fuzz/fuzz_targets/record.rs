//! Exit-record parsing on arbitrary bytes: every input is either a record
//! or a typed refusal (never a panic), and a record round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match exit_record::parse_record_bytes(data) {
        Ok(rec) => {
            assert_eq!(rec.schema, exit_record::SCHEMA_NAME);
            assert_eq!(rec.schema_version, exit_record::SCHEMA_VERSION);
            let again = serde_json::to_vec(&rec).unwrap();
            let back = exit_record::parse_record_bytes(&again).unwrap();
            assert_eq!(back, rec);
        }
        Err(e) => {
            let _ = e.to_string();
            assert!(!e.is_transient(), "a parse error is never transient: {e}");
        }
    }
});
