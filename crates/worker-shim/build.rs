//! Records which build this is for `worker-shim --version` (see
//! `build_id` in `build-support/build_id.rs`), and links the shim with
//! packed relative relocations.

include!("../../build-support/build_id.rs");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../../build-support/build_id.rs");
    pack_relative_relocs();
    println!("cargo:rustc-env=WORKER_SHIM_BUILD={}", build_id());
}

/// Links the shim with packed relative relocations (DT_RELR) on Linux/glibc.
///
/// A PIE of this size carries ~16,000 relative relocations: 390 KB of
/// `.rela.dyn` that the dynamic loader reads and applies at every start,
/// which made up a third of the shim's page faults on `-- true` and about
/// 0.7 MiB of its peak RSS. Packed, the table is 5 KB. The binary stays a
/// PIE (ASLR unchanged). GNU ld >= 2.38 and lld >= 15 know the option and
/// use it only when the C library supports DT_RELR (glibc >= 2.36), so a
/// binary always runs where it was linked; an older linker ignores it with
/// a warning. `WORKER_SHIM_NO_RELR=1` leaves it out.
fn pack_relative_relocs() {
    println!("cargo:rerun-if-env-changed=WORKER_SHIM_NO_RELR");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let off = !matches!(var("WORKER_SHIM_NO_RELR").trim(), "" | "0");
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" && !off {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
