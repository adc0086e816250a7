//! `kanban-watchdog wire hermes`: puts worker-shim between the Hermes
//! dispatcher and its workers, without touching Hermes itself.
//!
//! The dispatcher runs workers through `$HERMES_BIN` (an absolute path is
//! used as is), and the gateway loads `<HERMES_HOME>/.env` with override at
//! start (docs/hermes-0.19-findings.md). So the wiring is:
//!
//! * `<HERMES_HOME>/kanban-watchdog/bin/hermes`, a symlink to worker-shim.
//!   Invoked under the name `hermes`, the shim runs in masquerade mode and
//!   execs `$WORKER_SHIM_TARGET`.
//! * one marked block in `<HERMES_HOME>/.env` that sets `HERMES_BIN` to that
//!   symlink, `WORKER_SHIM_TARGET` to the real hermes, and optionally
//!   `WORKER_SHIM_RECORD_DIR`.
//!
//! Both steps are idempotent, every other byte of `.env` is preserved, and
//! `--undo` removes exactly what was added.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

pub struct WireOptions {
    pub hermes_home: Option<PathBuf>,
    pub shim: Option<PathBuf>,
    pub hermes: Option<PathBuf>,
    pub record_dir: Option<PathBuf>,
    pub undo: bool,
}

/// First line of the managed block in `.env`.
pub const BLOCK_BEGIN: &str = "# >>> kanban-watchdog wiring (managed by `kanban-watchdog wire hermes`; remove with --undo) >>>";
/// Last line of the managed block.
pub const BLOCK_END: &str = "# <<< kanban-watchdog wiring <<<";
// Markers are recognised by these prefixes, so a reworded comment still
// matches.
const BEGIN_PREFIX: &str = "# >>> kanban-watchdog wiring";
const END_PREFIX: &str = "# <<< kanban-watchdog wiring";

pub const KEY_BIN: &str = hermes_board::env::BIN;
pub const KEY_TARGET: &str = "WORKER_SHIM_TARGET";
pub const KEY_RECORD_DIR: &str = "WORKER_SHIM_RECORD_DIR";

const RESTART_HINT: &str = "Restart the Hermes gateway so it loads .env again, e.g. \
`systemctl --user restart hermes-gateway` or `hermes gateway run --replace`.";

/// `<HERMES_HOME>/kanban-watchdog/bin/hermes`.
pub fn link_path(hermes_home: &Path) -> PathBuf {
    hermes_home
        .join("kanban-watchdog")
        .join("bin")
        .join("hermes")
}

pub fn hermes(o: WireOptions) -> anyhow::Result<ExitCode> {
    let home = resolve_hermes_home(o.hermes_home.as_deref())?;
    let mut out = std::io::stdout().lock();
    let report = if o.undo {
        undo(&home)?
    } else {
        install(&home, &o)?
    };
    for line in report {
        writeln!(out, "{line}").context("cannot write to stdout")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn resolve_hermes_home(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let home = match given {
        Some(h) => h.to_path_buf(),
        None => match std::env::var_os(hermes_board::env::HOME).filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h),
            None => std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".hermes"))
                .context("neither --hermes-home, $HERMES_HOME nor $HOME is set")?,
        },
    };
    let home = crate::paths::expand_tilde(&home);
    std::path::absolute(&home).with_context(|| format!("cannot make {} absolute", home.display()))
}

// ----- install -----------------------------------------------------------

fn install(home: &Path, o: &WireOptions) -> anyhow::Result<Vec<String>> {
    if !home.is_dir() {
        bail!(
            "no Hermes install at {} (not a directory); pass --hermes-home DIR or set HERMES_HOME",
            home.display()
        );
    }
    let link = link_path(home);
    let shim = resolve_shim(o.shim.as_deref())?;
    let real = resolve_real_hermes(o.hermes.as_deref(), &shim, &link)?;
    let record_dir = o
        .record_dir
        .as_deref()
        .map(|d| {
            let d = crate::paths::expand_tilde(d);
            std::path::absolute(&d).with_context(|| format!("cannot make {} absolute", d.display()))
        })
        .transpose()?;

    let link_text = path_text(&link)?;
    let mut entries = vec![
        (KEY_BIN, link_text.clone()),
        (KEY_TARGET, path_text(&real)?),
    ];
    if let Some(d) = &record_dir {
        entries.push((KEY_RECORD_DIR, path_text(d)?));
    }
    let block = render_block(&entries)?;

    // Read and check .env before changing anything.
    let env_file = home.join(".env");
    let old = read_env(&env_file)?;
    let lines = split_lines(old.as_deref().unwrap_or_default());
    let range = find_block(&lines).map_err(|e| anyhow::anyhow!("{}: {e}", env_file.display()))?;
    let mut notes = Vec::new();
    let mut conflicts = Vec::new();
    for (key, want) in &entries {
        for (line_no, value) in unmanaged_assignments(&lines, range, key) {
            if value == *want {
                notes.push(format!(
                    "  note        {}:{line_no}: an unmanaged {key}= line already has this value; leaving it",
                    env_file.display()
                ));
            } else {
                conflicts.push(format!("  {}:{line_no}: {key}={value}", env_file.display()));
            }
        }
    }
    if !conflicts.is_empty() {
        bail!(
            "{} sets these outside the kanban-watchdog block, to other values:\n{}\n\
             Hermes would use whichever comes last, so the wiring would be ambiguous. \
             Remove or comment out those lines (this wires {KEY_BIN}={link_text}), then run this again.",
            env_file.display(),
            conflicts.join("\n")
        );
    }

    let mut report = vec![format!("kanban-watchdog wire hermes: {}", home.display())];
    let link_state = ensure_link(&link, &shim)?;
    report.push(format!(
        "  shim link   {} -> {} ({link_state})",
        link.display(),
        shim.display()
    ));
    report.push(format!("  real hermes {}", real.display()));
    match &record_dir {
        Some(d) => report.push(format!("  records     {}", d.display())),
        None => report.push(format!(
            "  records     worker-shim's default ({} for this user)",
            exit_record::default_record_dir().display()
        )),
    }
    let new = replace_block(old.as_deref().unwrap_or_default(), Some(&block))
        .map_err(|e| anyhow::anyhow!("{}: {e}", env_file.display()))?;
    let keys: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
    let env_state = if old.as_deref() == Some(new.as_slice()) {
        "unchanged"
    } else {
        write_env(&env_file, &new)?;
        match (&old, range) {
            (None, _) => "created (mode 0600) with the wiring block",
            (Some(_), Some(_)) => "wiring block updated",
            (Some(_), None) => "wiring block added",
        }
    };
    report.push(format!(
        "  .env        {}: {env_state} ({})",
        env_file.display(),
        keys.join(", ")
    ));
    report.extend(notes);
    if link_state == "unchanged" && env_state == "unchanged" {
        report.push(
            "Already wired; nothing changed. (A gateway started before the wiring still needs a restart.)"
                .into(),
        );
    } else {
        report.push(RESTART_HINT.into());
    }
    Ok(report)
}

/// `--shim`, else `worker-shim` next to this binary, else on PATH.
fn resolve_shim(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        let p = absolute(p)?;
        check_executable(&p).with_context(|| format!("--shim {}", p.display()))?;
        return Ok(p);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let beside = dir.join("worker-shim");
        if check_executable(&beside).is_ok() {
            return Ok(beside);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_on_path("worker-shim", &path, |_| true).context(
        "worker-shim not found next to kanban-watchdog nor on PATH; \
         install it (cargo install --path crates/worker-shim) or pass --shim PATH",
    )
}

/// `--hermes`, else the first `hermes` on PATH that is not the shim (our
/// symlink, or any other name for the same file).
fn resolve_real_hermes(given: Option<&Path>, shim: &Path, link: &Path) -> anyhow::Result<PathBuf> {
    let shim_id = identity(shim);
    let is_shim = |p: &Path| {
        p.starts_with(link.parent().unwrap_or(link))
            || (shim_id.is_some() && identity(p) == shim_id)
    };
    if let Some(p) = given {
        let p = absolute(p)?;
        check_executable(&p).with_context(|| format!("--hermes {}", p.display()))?;
        if is_shim(&p) {
            bail!(
                "--hermes {} is worker-shim itself; it must name the real hermes executable",
                p.display()
            );
        }
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_on_path("hermes", &path, |p| !is_shim(p)).context(
        "no real `hermes` executable on PATH (other than the shim); pass --hermes /path/to/hermes",
    )
}

fn find_on_path(name: &str, path: &OsStr, accept: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| check_executable(p).is_ok() && accept(p))
}

fn check_executable(p: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(p).with_context(|| format!("{} not found", p.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", p.display());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        bail!("{} is not executable", p.display());
    }
    Ok(())
}

fn identity(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    let p = crate::paths::expand_tilde(p);
    std::path::absolute(&p).with_context(|| format!("cannot make {} absolute", p.display()))
}

fn path_text(p: &Path) -> anyhow::Result<String> {
    p.to_str()
        .map(str::to_string)
        .with_context(|| format!("{} is not valid UTF-8; .env cannot hold it", p.display()))
}

/// Creates or corrects the symlink; says what it did.
fn ensure_link(link: &Path, shim: &Path) -> anyhow::Result<&'static str> {
    let dir = link.parent().context("symlink path has no parent")?;
    match std::fs::symlink_metadata(link) {
        Ok(meta) if meta.file_type().is_symlink() => {
            let current = std::fs::read_link(link)
                .with_context(|| format!("cannot read symlink {}", link.display()))?;
            if current == shim {
                return Ok("unchanged");
            }
            // Replace atomically: a new link beside it, renamed over it.
            let tmp = dir.join(format!(".hermes.{}.tmp", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(shim, &tmp)
                .with_context(|| format!("cannot create symlink {}", tmp.display()))?;
            std::fs::rename(&tmp, link)
                .with_context(|| format!("cannot replace symlink {}", link.display()))?;
            Ok("updated")
        }
        Ok(_) => bail!(
            "{} exists and is not a symlink; refusing to replace it (move it away and run again)",
            link.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            std::os::unix::fs::symlink(shim, link)
                .with_context(|| format!("cannot create symlink {}", link.display()))?;
            Ok("created")
        }
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", link.display())),
    }
}

// ----- undo --------------------------------------------------------------

fn undo(home: &Path) -> anyhow::Result<Vec<String>> {
    let mut report = vec![format!(
        "kanban-watchdog wire hermes --undo: {}",
        home.display()
    )];
    let mut changed = false;
    let env_file = home.join(".env");
    let link = link_path(home);
    if let Some(old) = read_env(&env_file)? {
        let lines = split_lines(&old);
        let range =
            find_block(&lines).map_err(|e| anyhow::anyhow!("{}: {e}", env_file.display()))?;
        let link_text = link.to_string_lossy();
        for (line_no, value) in unmanaged_assignments(&lines, range, KEY_BIN) {
            if value == link_text {
                report.push(format!(
                    "  warning     {}:{line_no}: an unmanaged {KEY_BIN}= line still points at the shim link; remove it",
                    env_file.display()
                ));
            }
        }
        if range.is_some() {
            let new = replace_block(&old, None)
                .map_err(|e| anyhow::anyhow!("{}: {e}", env_file.display()))?;
            write_env(&env_file, &new)?;
            report.push(format!(
                "  .env        {}: wiring block removed",
                env_file.display()
            ));
            changed = true;
        }
    }
    match std::fs::symlink_metadata(&link) {
        Ok(meta) if meta.file_type().is_symlink() => {
            std::fs::remove_file(&link)
                .with_context(|| format!("cannot remove {}", link.display()))?;
            report.push(format!("  shim link   {} removed", link.display()));
            changed = true;
        }
        Ok(_) => report.push(format!(
            "  warning     {} is not a symlink; left in place",
            link.display()
        )),
        Err(_) => {}
    }
    if let Some(bin) = link.parent() {
        for dir in [Some(bin), bin.parent()].into_iter().flatten() {
            match std::fs::remove_dir(dir) {
                Ok(()) => {
                    report.push(format!("  directory   {} removed", dir.display()));
                    changed = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => {
                    report.push(format!(
                        "  note        {} is not empty; left in place",
                        dir.display()
                    ));
                    break;
                }
            }
        }
    }
    if changed {
        report.push(RESTART_HINT.into());
    } else {
        report.push("Nothing to undo: no kanban-watchdog wiring found.".into());
    }
    Ok(report)
}

// ----- .env handling (pure, unit-tested) --------------------------------

/// `None` when the file does not exist.
fn read_env(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Lines with their terminators, so joining them gives the input back.
pub fn split_lines(content: &[u8]) -> Vec<&[u8]> {
    content.split_inclusive(|b| *b == b'\n').collect()
}

fn trimmed(line: &[u8]) -> &[u8] {
    line.trim_ascii()
}

/// The managed block's first and last line indices, if present. A begin
/// without an end, an end without a begin, or two blocks are refused.
pub fn find_block(lines: &[&[u8]]) -> Result<Option<(usize, usize)>, String> {
    let mut found = None;
    let mut open = None;
    for (i, line) in lines.iter().enumerate() {
        let t = trimmed(line);
        if t.starts_with(BEGIN_PREFIX.as_bytes()) {
            if open.is_some() || found.is_some() {
                return Err(format!(
                    "line {}: a second kanban-watchdog wiring block; keep one and run again",
                    i + 1
                ));
            }
            open = Some(i);
        } else if t.starts_with(END_PREFIX.as_bytes()) {
            match open.take() {
                Some(start) => found = Some((start, i)),
                None => {
                    return Err(format!(
                        "line {}: end of a kanban-watchdog wiring block without its start; fix it by hand",
                        i + 1
                    ));
                }
            }
        }
    }
    if let Some(start) = open {
        return Err(format!(
            "line {}: a kanban-watchdog wiring block is not closed (no `{BLOCK_END}` line); fix it by hand",
            start + 1
        ));
    }
    Ok(found)
}

/// `KEY=value` assignments of `key` outside the block: (1-based line, value).
pub fn unmanaged_assignments(
    lines: &[&[u8]],
    block: Option<(usize, usize)>,
    key: &str,
) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if block.is_some_and(|(a, b)| (a..=b).contains(&i)) {
            continue;
        }
        let text = String::from_utf8_lossy(trimmed(line));
        let text = text
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(&text);
        if let Some((k, v)) = text.split_once('=')
            && k.trim_end() == key
        {
            out.push((i + 1, parse_env_value(v)));
        }
    }
    out
}

/// The value of a dotenv assignment, as python-dotenv reads it for the
/// forms that matter here: `'literal'`, `"escaped"`, or bare with an
/// optional ` # comment`.
pub fn parse_env_value(raw: &str) -> String {
    let v = raw.trim();
    if let Some(rest) = v.strip_prefix('\'') {
        return rest.split('\'').next().unwrap_or_default().to_string();
    }
    if let Some(rest) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                }
                c => out.push(c),
            }
        }
        return out;
    }
    let end = v
        .char_indices()
        .find(|&(i, c)| c == '#' && v[..i].ends_with(char::is_whitespace))
        .map(|(i, _)| i)
        .unwrap_or(v.len());
    v[..end].trim_end().to_string()
}

/// A value as dotenv text: bare when plain, single-quoted (literal in
/// python-dotenv and in sh) otherwise. Values that cannot be written
/// unambiguously are refused.
pub fn quote_env_value(v: &str) -> Result<String, String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c);
    if !v.is_empty() && v.chars().all(plain) {
        return Ok(v.to_string());
    }
    if v.chars().any(|c| c == '\'' || c == '\\' || c.is_control()) {
        return Err(format!(
            "{v:?} contains a quote, backslash or control character; .env cannot hold it safely"
        ));
    }
    Ok(format!("'{v}'"))
}

/// The block text, one `KEY=value` per entry, ending with a newline.
pub fn render_block(entries: &[(&str, String)]) -> anyhow::Result<String> {
    let mut s = String::new();
    s.push_str(BLOCK_BEGIN);
    s.push('\n');
    for (k, v) in entries {
        let q = quote_env_value(v).map_err(|e| anyhow::anyhow!("{k}: {e}"))?;
        s.push_str(&format!("{k}={q}\n"));
    }
    s.push_str(BLOCK_END);
    s.push('\n');
    Ok(s)
}

/// Puts `block` where the managed block is (or appends it), or removes the
/// block when `block` is `None`. Every other byte is kept.
pub fn replace_block(content: &[u8], block: Option<&str>) -> Result<Vec<u8>, String> {
    let lines = split_lines(content);
    let range = find_block(&lines)?;
    let mut out = Vec::with_capacity(content.len() + 256);
    match range {
        Some((start, end)) => {
            for l in &lines[..start] {
                out.extend_from_slice(l);
            }
            if let Some(b) = block {
                out.extend_from_slice(b.as_bytes());
            }
            for l in &lines[end + 1..] {
                out.extend_from_slice(l);
            }
        }
        None => {
            out.extend_from_slice(content);
            if let Some(b) = block {
                if !out.is_empty() && !out.ends_with(b"\n") {
                    out.push(b'\n');
                }
                out.extend_from_slice(b.as_bytes());
            }
        }
    }
    Ok(out)
}

/// Replaces `.env` atomically. Keeps its mode and (when allowed) its owner;
/// a new file is 0600. A symlinked `.env` is written through, keeping the
/// link.
fn write_env(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path)
            .with_context(|| format!("cannot resolve symlink {}", path.display()))?,
        _ => path.to_path_buf(),
    };
    let existing = std::fs::metadata(&target).ok();
    let mode = existing
        .as_ref()
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    let owner = existing
        .as_ref()
        .map(|m| (m.uid(), m.gid()))
        .filter(|&(uid, gid)| {
            uid != nix::unistd::getuid().as_raw() || gid != nix::unistd::getgid().as_raw()
        });
    let result = crate::state::write_atomic_as(&target, body, mode, owner);
    result.with_context(|| format!("cannot write {}", target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(entries: &[(&str, &str)]) -> String {
        let e: Vec<(&str, String)> = entries.iter().map(|(k, v)| (*k, v.to_string())).collect();
        render_block(&e).unwrap()
    }

    #[test]
    fn values_are_quoted_only_when_needed() {
        assert_eq!(
            quote_env_value("/usr/bin/hermes").unwrap(),
            "/usr/bin/hermes"
        );
        assert_eq!(quote_env_value("/a b/#c$x").unwrap(), "'/a b/#c$x'");
        assert!(quote_env_value("/it's").is_err());
        assert!(quote_env_value("/a\\b").is_err());
        assert!(quote_env_value("/a\nb").is_err());
        assert_eq!(quote_env_value("").unwrap(), "''");
    }

    #[test]
    fn values_are_read_like_python_dotenv() {
        assert_eq!(parse_env_value("/x/hermes"), "/x/hermes");
        assert_eq!(parse_env_value(" /x/hermes  # mine"), "/x/hermes");
        assert_eq!(parse_env_value("/x#y"), "/x#y");
        assert_eq!(parse_env_value("'/a b/#c$x'"), "/a b/#c$x");
        assert_eq!(parse_env_value(r#""/a \"b\"" # c"#), "/a \"b\"");
        // What we write reads back as itself.
        for v in ["/usr/bin/hermes", "/a b/#c$x", "/x=y,z"] {
            assert_eq!(parse_env_value(&quote_env_value(v).unwrap()), v);
        }
    }

    #[test]
    fn the_block_is_appended_replaced_and_removed_byte_for_byte() {
        let original = b"A=1\r\n# keep me\nexport B='x y'\n\xff\xfe raw\n";
        let b1 = block(&[
            ("HERMES_BIN", "/h/kanban-watchdog/bin/hermes"),
            ("WORKER_SHIM_TARGET", "/usr/bin/hermes"),
        ]);
        let with = replace_block(original, Some(&b1)).unwrap();
        assert!(with.starts_with(original));
        assert_eq!(&with[original.len()..], b1.as_bytes());
        // Idempotent.
        assert_eq!(replace_block(&with, Some(&b1)).unwrap(), with);
        // Replaced in place, lines after it kept.
        let mut later = with.clone();
        later.extend_from_slice(b"C=3\n");
        let b2 = block(&[("HERMES_BIN", "/other")]);
        let replaced = replace_block(&later, Some(&b2)).unwrap();
        let mut want = original.to_vec();
        want.extend_from_slice(b2.as_bytes());
        want.extend_from_slice(b"C=3\n");
        assert_eq!(replaced, want);
        // Removed: the original comes back.
        assert_eq!(replace_block(&with, None).unwrap(), original);
        assert_eq!(replace_block(original, None).unwrap(), original);
    }

    #[test]
    fn a_missing_final_newline_is_added_before_the_block() {
        let b = block(&[("HERMES_BIN", "/x")]);
        let out = replace_block(b"A=1", Some(&b)).unwrap();
        assert_eq!(out, format!("A=1\n{b}").into_bytes());
        assert_eq!(replace_block(b"", Some(&b)).unwrap(), b.as_bytes());
    }

    #[test]
    fn broken_blocks_are_refused() {
        let begin = format!("{BLOCK_BEGIN}\n");
        let end = format!("{BLOCK_END}\n");
        let open = format!("A=1\n{begin}HERMES_BIN=/x\n");
        assert!(
            replace_block(open.as_bytes(), None)
                .unwrap_err()
                .contains("line 2")
        );
        let stray_end = format!("A=1\n{end}");
        assert!(replace_block(stray_end.as_bytes(), None).is_err());
        let two = format!("{begin}{end}{begin}{end}");
        assert!(
            replace_block(two.as_bytes(), None)
                .unwrap_err()
                .contains("second")
        );
    }

    #[test]
    fn unmanaged_assignments_skip_the_block() {
        let text = format!(
            "HERMES_BIN=/mine\n{}export  HERMES_BIN = '/quoted' # c\n#HERMES_BIN=/commented\nHERMES_BINX=/no\n",
            block(&[("HERMES_BIN", "/managed")])
        );
        let lines = split_lines(text.as_bytes());
        let range = find_block(&lines).unwrap();
        assert_eq!(range, Some((1, 3)));
        assert_eq!(
            unmanaged_assignments(&lines, range, "HERMES_BIN"),
            vec![(1, "/mine".to_string()), (5, "/quoted".to_string())]
        );
    }
}
