//! Records which build this is for `--version` (see `build_id` in
//! `build-support/build_id.rs`).

include!("../../build-support/build_id.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../../build-support/build_id.rs");
    println!("cargo:rustc-env=KANBAN_WATCHDOG_BUILD={}", build_id());
}
