//! Steering a Hermes worker to a healthy fallback provider. The watchdog
//! publishes, per profile, the provider and model to use while the
//! profile's primary is unhealthy (`health.json`, `steer` map). For a
//! Hermes worker (`... chat -q "work kanban task <id>"` with
//! `HERMES_KANBAN_TASK` set) the shim appends `--provider P -m M`: Hermes
//! 0.19's argparse lets the last occurrence win, so the dispatcher's own
//! argv is left untouched and no board column is rewritten.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use exit_record::Steered;

/// `$WORKER_SHIM_HEALTH_FILE`, else `health.json` beside the default record dir.
pub fn default_health_file() -> PathBuf {
    exit_record::default_record_dir()
        .parent()
        .map(|p| p.join("health.json"))
        .unwrap_or_else(|| PathBuf::from("health.json"))
}

/// Appends the steering to `command` when it applies; returns what was done.
pub fn apply(
    command: &mut Vec<OsString>,
    health_file: &Path,
    profile_env: Option<String>,
) -> Option<Steered> {
    if !command.iter().skip(1).any(|a| a == "chat") {
        return None;
    }
    let profile = profile_env.or_else(|| profile_from_argv(command))?;
    let text = std::fs::read(health_file).ok()?;
    let doc: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let entry = doc.get("steer")?.get(&profile)?;
    let provider = entry.get("provider")?.as_str()?.to_string();
    let model = entry
        .get("model")
        .and_then(|m| m.as_str())
        .map(str::to_string);
    command.push("--provider".into());
    command.push(provider.clone().into());
    if let Some(m) = &model {
        command.push("-m".into());
        command.push(m.into());
    }
    Some(Steered {
        provider,
        model,
        from: entry
            .get("from")
            .and_then(|f| f.as_str())
            .map(str::to_string),
    })
}

fn profile_from_argv(command: &[OsString]) -> Option<String> {
    let mut it = command.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "-p" || a == "--profile" {
            return it.next().map(|p| p.to_string_lossy().into_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn appends_provider_and_model_for_a_hermes_chat_worker() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("health.json");
        std::fs::write(
            &f,
            r#"{"steer":{"coder":{"provider":"openrouter","model":"x/y","from":"openai-codex"}}}"#,
        )
        .unwrap();
        let mut cmd = argv(&[
            "hermes",
            "-p",
            "coder",
            "--cli",
            "chat",
            "-q",
            "work kanban task t1",
        ]);
        let s = apply(&mut cmd, &f, None).unwrap();
        assert_eq!(s.provider, "openrouter");
        assert_eq!(s.from.as_deref(), Some("openai-codex"));
        assert_eq!(
            cmd,
            argv(&[
                "hermes",
                "-p",
                "coder",
                "--cli",
                "chat",
                "-q",
                "work kanban task t1",
                "--provider",
                "openrouter",
                "-m",
                "x/y"
            ])
        );
    }

    #[test]
    fn leaves_everything_else_alone() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("health.json");
        std::fs::write(&f, r#"{"steer":{"coder":{"provider":"openrouter"}}}"#).unwrap();
        let mut not_chat = argv(&["hermes", "-p", "coder", "kanban", "list"]);
        assert!(apply(&mut not_chat, &f, None).is_none());
        let mut other_profile = argv(&["hermes", "-p", "writer", "chat"]);
        assert!(apply(&mut other_profile, &f, None).is_none());
        let mut no_file = argv(&["hermes", "-p", "coder", "chat"]);
        assert!(apply(&mut no_file, &dir.path().join("missing"), None).is_none());
        std::fs::write(&f, "{broken").unwrap();
        assert!(apply(&mut no_file, &f, None).is_none());
        assert_eq!(no_file.len(), 4);
    }
}
