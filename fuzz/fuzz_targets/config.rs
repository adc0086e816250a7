//! Config parsing on arbitrary text: a config or an error naming the file
//! (never a panic); an accepted config renders and parses back to itself.
#![no_main]

use kanban_watchdog::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_yaml(text, "fuzz.yaml") {
        Ok(cfg) => {
            let again = Config::from_yaml(&cfg.to_yaml(), "rendered.yaml")
                .expect("a rendered config parses");
            assert_eq!(again, cfg);
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.yaml"), "{e}"),
    }
});
