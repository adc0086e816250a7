//! The `hermes` command line a kanban worker runs with, as the dispatcher
//! builds it (`hermes -p <profile> [-m M --provider P] chat ...`; Hermes
//! parses it with argparse, so the last of a repeated option wins).
//! `argv[0]` is the program and is never read as an option.

use std::ffi::OsString;

/// A worker that runs an agent: `chat` in its arguments.
pub fn is_chat(argv: &[OsString]) -> bool {
    argv.iter().skip(1).any(|a| a == "chat")
}

/// The last `--provider P` (or `--provider=P`): the provider the run uses.
pub fn provider(argv: &[OsString]) -> Option<String> {
    let mut found = None;
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--provider" {
            found = it.next().map(|p| p.to_string_lossy().into_owned());
        } else if let Some(p) = a.strip_prefix("--provider=") {
            found = Some(p.to_string());
        }
    }
    found
}

/// The first `-p NAME` or `--profile NAME`.
pub fn profile(argv: &[OsString]) -> Option<String> {
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "-p" || a == "--profile" {
            return it.next().map(|p| p.to_string_lossy().into_owned());
        }
    }
    None
}

/// Appends `--provider P` and, with a model, `-m M`: the run then uses
/// that provider and model (a later option overrules an earlier one).
pub fn append_provider(argv: &mut Vec<OsString>, provider: &str, model: Option<&str>) {
    argv.push("--provider".into());
    argv.push(provider.into());
    if let Some(m) = model {
        argv.push("-m".into());
        argv.push(m.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn options_are_read_as_argparse_reads_them() {
        let a = argv(&[
            "hermes",
            "-p",
            "coder",
            "--provider",
            "xai",
            "--provider=openrouter",
            "chat",
        ]);
        assert!(is_chat(&a));
        assert_eq!(provider(&a).as_deref(), Some("openrouter"));
        assert_eq!(profile(&a).as_deref(), Some("coder"));
        let b = argv(&["chat", "--profile", "writer", "kanban", "list"]);
        assert!(!is_chat(&b), "argv[0] is the program");
        assert_eq!(profile(&b).as_deref(), Some("writer"));
        assert_eq!(provider(&b), None);
        assert_eq!(profile(&argv(&["hermes", "-p"])), None);
    }

    #[test]
    fn appended_options_name_the_provider_then_the_model() {
        let mut a = argv(&["hermes", "chat"]);
        append_provider(&mut a, "openrouter", Some("x-ai/grok-4"));
        assert_eq!(
            a,
            argv(&[
                "hermes",
                "chat",
                "--provider",
                "openrouter",
                "-m",
                "x-ai/grok-4"
            ])
        );
        assert_eq!(provider(&a).as_deref(), Some("openrouter"));
        let mut b = argv(&["hermes", "chat"]);
        append_provider(&mut b, "xai", None);
        assert_eq!(b, argv(&["hermes", "chat", "--provider", "xai"]));
    }
}
