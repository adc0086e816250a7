//! Issue 17: `--version` names the build and the exit-record schema; shell
//! completions and man pages come from the clap definitions
//! (`kanban-watchdog generate ...`, hidden), and they generate.

use std::path::Path;
use std::process::{Command, Output, Stdio};

const WATCHDOG: &str = env!("CARGO_BIN_EXE_kanban-watchdog");

fn run(args: &[&str]) -> Output {
    let out = Command::new(WATCHDOG)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(args: &[&str]) -> String {
    String::from_utf8(run(args).stdout).unwrap()
}

#[test]
fn version_names_the_build_and_the_exit_record_schema() {
    let v = stdout(&["--version"]);
    let v = v.trim();
    assert_eq!(v, stdout(&["-V"]).trim());
    let head = format!("kanban-watchdog {} (", env!("CARGO_PKG_VERSION"));
    assert!(v.starts_with(&head), "{v}");
    assert!(
        v.ends_with(&format!(
            "exit-record schema {})",
            exit_record::SCHEMA_VERSION
        )),
        "{v}"
    );
    // Built from a checkout: `git describe` of a commit that exists here.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let in_git = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .current_dir(repo)
        .output()
        .is_ok_and(|o| o.status.success());
    if in_git && std::env::var_os("KANBAN_WATCHDOG_BUILD").is_none() {
        let build = v
            .split("(build ")
            .nth(1)
            .and_then(|s| s.split(';').next())
            .unwrap_or_else(|| panic!("no build in {v}"));
        let commit = build.rsplit("-g").next().unwrap();
        assert!(
            commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
            "{v}"
        );
        let known = Command::new("git")
            .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .current_dir(repo)
            .status()
            .unwrap();
        assert!(known.success(), "{commit} is not a commit of this checkout");
    }
}

#[test]
fn completions_generate_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout(&["generate", "completions", shell]);
        for word in ["kanban-watchdog", "check-config", "explain", "hermes-home"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    // bash parses its script and registers the completion.
    let bash = Command::new("bash")
        .args([
            "-c",
            "source <(\"$0\" generate completions bash) && complete -p kanban-watchdog",
            WATCHDOG,
        ])
        .output();
    if let Ok(out) = bash {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(text.contains("kanban-watchdog"), "{text}");
    }
    // An unknown shell is refused.
    let out = Command::new(WATCHDOG)
        .args(["generate", "completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn man_pages_generate_for_every_command() {
    let page = stdout(&["generate", "man"]);
    assert!(page.contains(".TH kanban-watchdog 1"), "{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    assert!(page.contains("exit-record schema"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let listed = stdout(&["generate", "man", "--out-dir", dir.path().to_str().unwrap()]);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for want in [
        "kanban-watchdog.1",
        "kanban-watchdog-run.1",
        "kanban-watchdog-check-config.1",
        "kanban-watchdog-status.1",
        "kanban-watchdog-provider-reset.1",
        "kanban-watchdog-explain.1",
        "kanban-watchdog-wire-hermes.1",
    ] {
        assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
    }
    // Hidden commands get no page.
    assert!(
        !names
            .iter()
            .any(|n| n.contains("fake-gateway") || n.contains("generate")),
        "{names:?}"
    );
    assert_eq!(listed.lines().count(), names.len());
    // groff, where installed, renders every page without a warning.
    for name in &names {
        let path = dir.path().join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(".SH NAME"), "{name}");
        if let Ok(out) = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
        {
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
