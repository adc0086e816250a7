//! `kanban-watchdog status`: what the watchdog sees, from the running
//! daemon (`GET /status` at the address it wrote to `<state_dir>/http.addr`)
//! or, when that is not reachable, from the last snapshot in its state file.
//! The output always says which of the two it used.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::alerts::Severity;
use crate::cli::Common;
use crate::paths::Paths;
use crate::state::PersistedState;
use crate::status::{DispatchState, ParkedStatus, ProviderStatus, Status};
use exit_record::health::HealthState;

/// How long to wait for the daemon before falling back to the state file.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// Most restarts shown in the table (the daemon keeps the last 20).
const RESTARTS_SHOWN: usize = 5;
/// Longest reason/detail shown in a table cell (the JSON has the full text).
const CELL_MAX: usize = 100;

/// Where the status came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The running daemon's HTTP endpoint.
    Daemon { url: String },
    /// The daemon's state file, saved at `saved_at`; `why` says why the
    /// daemon was not asked (or did not answer).
    Saved {
        file: String,
        saved_at: i64,
        why: String,
    },
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Daemon { .. } => "daemon",
            Source::Saved { .. } => "saved_state",
        }
    }

    /// `daemon at http://…` or
    /// `saved state from <time>, <age>, in <file> (daemon not reachable: <why>)`.
    pub fn describe(&self, now: i64) -> String {
        match self {
            Source::Daemon { url } => format!("daemon at {url}"),
            Source::Saved {
                file,
                saved_at,
                why,
            } => format!(
                "saved state from {}, {}, in {file} (daemon not reachable: {why})",
                fmt_time(*saved_at),
                fmt_ago(*saved_at, now)
            ),
        }
    }
}

pub fn status(common: &Common, json: bool) -> anyhow::Result<ExitCode> {
    let (cfg, _) = crate::run::load_config(common)?;
    let paths = Paths::resolve(&cfg);
    let (source, status) = match find_status(&paths) {
        Ok(found) => found,
        Err(why) => {
            eprintln!("kanban-watchdog: no status available\n{why}");
            return Ok(ExitCode::from(1));
        }
    };
    let now = jiff::Timestamp::now().as_second();
    if json {
        let mut doc = serde_json::json!({
            "source": source.describe(now),
            "source_kind": source.kind(),
            "status": status,
        });
        if let Source::Saved { why, .. } = &source {
            doc["daemon_error"] = serde_json::Value::String(why.clone());
        }
        let text = serde_json::to_string_pretty(&doc).context("cannot encode the status")?;
        println!("{text}");
    } else {
        print!("{}", render(&status, &source, now));
    }
    Ok(exit_code(&status))
}

/// Exit status of `status`: 2 while a critical incident is open (the board
/// unavailable, the restart limit hit, a stall a restart did not cure), so
/// a script or a check can tell; else 0.
pub fn exit_code(s: &Status) -> ExitCode {
    if s.incidents.iter().any(|i| i.severity == Severity::Critical) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// The daemon first, then the state file. The error names every path tried.
fn find_status(paths: &Paths) -> Result<(Source, Status), String> {
    // `http.addr` says where to send the request and `state.json` what to
    // show: from a directory another user could write, neither is ours (a
    // planted address would have `status` query any local port and print
    // its answer). The daemon's own check (OpenSSH StrictModes), read-only
    // here: a missing directory is reported as missing files below.
    if std::fs::symlink_metadata(&paths.state_dir).is_ok()
        && let Err(e) = exit_record::check_private_dir(&paths.state_dir)
    {
        return Err(format!(
            "  state directory: {e}\n\
             Neither {} nor {} was read.",
            paths.http_addr_file().display(),
            paths.state_file().display()
        ));
    }
    let daemon_err = match fetch_from_daemon(&paths.http_addr_file()) {
        Ok((url, status)) => return Ok((Source::Daemon { url }, status)),
        Err(e) => e,
    };
    let file = paths.state_file();
    match load_saved(&file) {
        Ok((saved_at, status)) => Ok((
            Source::Saved {
                file: file.display().to_string(),
                saved_at,
                why: daemon_err,
            },
            status,
        )),
        Err(saved_err) => Err(format!(
            "  daemon: {daemon_err}\n  saved state: {saved_err}\n\
             Is the watchdog running with this state directory ({})? \
             Pass the same --config or --state-dir as the daemon.",
            paths.state_dir.display()
        )),
    }
}

/// Reads `http.addr` and asks the daemon. Errors are one-line reasons.
fn fetch_from_daemon(addr_file: &Path) -> Result<(String, Status), String> {
    let text = std::fs::read_to_string(addr_file).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "no {} (daemon not running, or its HTTP endpoint is disabled)",
                addr_file.display()
            )
        } else {
            format!("cannot read {}: {e}", addr_file.display())
        }
    })?;
    let addr = parse_addr(&text)
        .ok_or_else(|| format!("{} holds no host:port ({text:?})", addr_file.display()))?;
    let url = format!("http://{addr}/status");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(HTTP_TIMEOUT))
        .http_status_as_error(true)
        .max_redirects(0)
        // The endpoint is local; never route it through $HTTP_PROXY.
        .proxy(None)
        .build()
        .new_agent();
    let body = agent
        .get(&url)
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status: Status = serde_json::from_str(&body)
        .map_err(|e| format!("{url} answered, but not with a watchdog status: {e}"))?;
    Ok((format!("http://{addr}"), status))
}

/// `127.0.0.1:9464` or `[::1]:9464`; an unspecified address (the daemon
/// listening on all interfaces) is asked on loopback.
pub fn parse_addr(text: &str) -> Option<SocketAddr> {
    let mut addr: SocketAddr = text.trim().parse().ok()?;
    if addr.ip().is_unspecified() {
        let ip: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        addr.set_ip(ip);
    }
    Some(addr)
}

/// The last status snapshot in the state file. Read-only: unlike
/// `PersistedState::load`, a corrupt file is reported, not moved aside (that
/// is the daemon's call, not a status query's).
fn load_saved(file: &Path) -> Result<(i64, Status), String> {
    let bytes = std::fs::read(file).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("no {}", file.display())
        } else {
            format!("cannot read {}: {e}", file.display())
        }
    })?;
    let state: PersistedState = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a valid state file: {e}", file.display()))?;
    let status = state.last_status.ok_or_else(|| {
        format!(
            "{} has no status snapshot yet (the daemon saves one after its first check)",
            file.display()
        )
    })?;
    let saved_at = if state.saved_at > 0 {
        state.saved_at
    } else {
        status.generated_at
    };
    Ok((saved_at, status))
}

// ----- rendering ---------------------------------------------------------

/// The terminal view.
pub fn render(s: &Status, source: &Source, now: i64) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "source: {}", source.describe(now));
    let _ = writeln!(
        w,
        "watchdog {}, pid {}, started {}{}",
        s.version,
        s.pid,
        fmt_ago(s.started_at, now),
        if s.dry_run {
            " [dry-run: board changes and restarts are only logged]"
        } else {
            ""
        }
    );
    let _ = writeln!(w, "board {}", s.board);
    if let Some(problem) = &s.board_problem {
        // Whole: a refusal names every missing column.
        let _ = writeln!(w, "  UNAVAILABLE: {}", flat(problem));
    }
    if let Some(info) = &s.board_info {
        let _ = writeln!(w, "  {}", flat(&info.describe()));
    }
    let _ = writeln!(w, "records {}", s.record_dir);
    if s.boards.len() > 1 {
        let _ = writeln!(w);
        let _ = writeln!(w, "BOARDS ({})", s.boards.len());
        let rows = s
            .boards
            .iter()
            .map(|b| {
                let waiting = match b.waiting_since {
                    Some(t) if b.ready_tasks > 0 => format!("since {}", fmt_ago(t, now)),
                    _ => "-".into(),
                };
                let why = b.problem.as_deref().or(b.reason.as_deref()).unwrap_or("");
                vec![
                    b.slug.clone(),
                    cell(b.state.as_str()),
                    b.ready_tasks.to_string(),
                    waiting,
                    b.parked.to_string(),
                    cell(why),
                ]
            })
            .collect();
        w.push_str(&table(
            &["BOARD", "STATE", "READY", "WAITING", "PARKED", "WHY"],
            rows,
        ));
    }

    let d = &s.dispatcher;
    let _ = writeln!(w);
    let _ = writeln!(w, "DISPATCHER  {}", cell(d.state.as_str()));
    if let Some(reason) = &d.reason {
        let _ = writeln!(w, "  why            {reason}");
    }
    let progress = match d.last_progress_at {
        Some(t) => format!("last progress {}", fmt_ago(t, now)),
        None => "no progress seen yet".into(),
    };
    let _ = writeln!(w, "  heartbeat      {progress}");
    // An idle Hermes dispatcher logs nothing and writes no events: its
    // next cycle cannot be seen, and is never "overdue".
    let next = match d.next_cycle_at {
        _ if d.state == DispatchState::Idle => "not observable while idle".into(),
        Some(t) if t >= now => fmt_relative(t, now),
        // The snapshot is a check old: a few seconds late is not overdue.
        Some(t) if now - t <= d.interval_s.ceil() as i64 + 5 => "due now".into(),
        Some(t) => format!("overdue by {}", fmt_duration(now - t)),
        None => "unknown".into(),
    };
    let _ = writeln!(
        w,
        "  next cycle     {next} (every {}; stall after {})",
        fmt_duration(d.interval_s.round() as i64),
        fmt_duration(d.stall_after_s.round() as i64)
    );
    let waiting = match d.waiting_since {
        Some(t) if d.ready_tasks > 0 => format!(" (waiting since {})", fmt_ago(t, now)),
        _ => String::new(),
    };
    let _ = writeln!(w, "  ready tasks    {}{waiting}", d.ready_tasks);
    let gateway = match (d.gateway_pid, d.gateway_up) {
        (Some(pid), Some(true)) => format!("pid {pid}, up"),
        (Some(pid), Some(false)) => format!("pid {pid}, DOWN (process gone)"),
        (Some(pid), None) => format!("pid {pid}"),
        (None, _) => "no gateway.pid (not running?)".into(),
    };
    let _ = writeln!(w, "  gateway        {gateway}");

    let _ = writeln!(w);
    if s.providers.is_empty() {
        let _ = writeln!(w, "PROVIDERS  none seen yet");
    } else {
        let _ = writeln!(w, "PROVIDERS");
        let rows = s
            .providers
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    provider_state(p, now),
                    fmt_ago(p.since, now),
                    cell(p.reason.as_deref().unwrap_or("-")),
                ]
            })
            .collect();
        w.push_str(&table(&["NAME", "STATE", "SINCE", "REASON"], rows));
    }

    let _ = writeln!(w);
    if s.parked.is_empty() {
        let _ = writeln!(w, "PARKED  none");
    } else {
        let _ = writeln!(w, "PARKED ({})", s.parked.len());
        // The board column only when more than one board is watched.
        let many = s.boards.len() > 1;
        let rows = s
            .parked
            .iter()
            .map(|p| {
                let mut row = vec![p.task.clone()];
                if many {
                    row.push(p.board.clone());
                }
                row.extend([
                    cell(p.kind.as_str()),
                    parked_returns(p, now),
                    cell(&p.reason),
                ]);
                row
            })
            .collect();
        let head: &[&str] = if many {
            &["TASK", "BOARD", "KIND", "RETURNS", "REASON"]
        } else {
            &["TASK", "KIND", "RETURNS", "REASON"]
        };
        w.push_str(&table(head, rows));
    }

    let _ = writeln!(w);
    if s.restarts.is_empty() {
        let _ = writeln!(w, "RESTARTS  none");
    } else {
        let shown = s.restarts.len().min(RESTARTS_SHOWN);
        if shown < s.restarts.len() {
            let _ = writeln!(w, "RESTARTS (last {shown} of {})", s.restarts.len());
        } else {
            let _ = writeln!(w, "RESTARTS ({shown})");
        }
        let rows = s.restarts[s.restarts.len() - shown..]
            .iter()
            .map(|r| vec![fmt_ago(r.at, now), cell(r.result.as_str()), cell(&r.detail)])
            .collect();
        w.push_str(&table(&["WHEN", "RESULT", "DETAIL"], rows));
    }

    let _ = writeln!(w);
    if s.incidents.is_empty() {
        let _ = writeln!(w, "INCIDENTS  none open");
    } else {
        let _ = writeln!(w, "INCIDENTS ({} open)", s.incidents.len());
        let rows = s
            .incidents
            .iter()
            .map(|i| {
                vec![
                    cell(i.severity.as_str()),
                    fmt_ago(i.since, now),
                    i.key.clone(),
                    // Whole, never cut: the summary is what to do.
                    flat(&i.summary),
                ]
            })
            .collect();
        w.push_str(&table(&["SEVERITY", "SINCE", "KEY", "SUMMARY"], rows));
    }

    let c = &s.counters;
    let _ = writeln!(w);
    let _ = writeln!(w, "COUNTERS");
    let _ = writeln!(
        w,
        "  records handled {}, quarantined {}",
        c.records_handled, c.records_quarantined
    );
    let writes = if c.board_writes.is_empty() {
        "none".to_string()
    } else {
        c.board_writes
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        w,
        "  board writes {writes}; busy retries {}",
        c.board_busy_retries
    );
    let _ = writeln!(
        w,
        "  ready tasks held for unhealthy providers {}; dispatcher restarts {}",
        c.providers_skipped, c.restarts
    );
    let _ = writeln!(
        w,
        "  alerts sent {}, failed {}",
        c.alerts_sent, c.alerts_failed
    );
    out
}

/// `healthy`, `probing`, `unhealthy, 4m12s left`, `unhealthy, until re-auth`,
/// `unhealthy, cooldown over` (probing at the next check).
pub fn provider_state(p: &ProviderStatus, now: i64) -> String {
    if p.state != HealthState::Unhealthy {
        return cell(p.state.as_str());
    }
    let class = p
        .class
        .as_ref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    match p.until {
        None => format!("unhealthy{class}, until re-auth"),
        Some(t) if t > now => format!("unhealthy{class}, {} left", fmt_duration(t - now)),
        Some(_) => format!("unhealthy{class}, cooldown over"),
    }
}

/// When a parked task returns: `in 3m`, `due now`, `when xai-oauth heals`.
pub fn parked_returns(p: &ParkedStatus, now: i64) -> String {
    match (p.due_at, p.provider.as_deref()) {
        (Some(t), _) if t > now => fmt_relative(t, now),
        (Some(_), _) => "due now".into(),
        (None, Some(provider)) => format!("when {provider} heals"),
        (None, None) => "when released".into(),
    }
}

/// `0s`, `12s`, `3m`, `4m12s`, `2h`, `2h3m`, `1d`, `3d4h`. Negative
/// durations are shown as their magnitude.
pub fn fmt_duration(secs: i64) -> String {
    let s = secs.unsigned_abs();
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let pair = |a: u64, ua: &str, b: u64, ub: &str| {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua}{b}{ub}")
        }
    };
    if d > 0 {
        pair(d, "d", h, "h")
    } else if h > 0 {
        pair(h, "h", m, "m")
    } else if m > 0 {
        pair(m, "m", sec, "s")
    } else {
        format!("{sec}s")
    }
}

/// `12s ago`, `just now`, or `in 12s` for a time still ahead.
pub fn fmt_ago(t: i64, now: i64) -> String {
    if t > now {
        fmt_relative(t, now)
    } else if t == now {
        "just now".into()
    } else {
        format!("{} ago", fmt_duration(now - t))
    }
}

/// `in 3m`, or `now`, or `12s ago` for a time already past.
pub fn fmt_relative(t: i64, now: i64) -> String {
    if t > now {
        format!("in {}", fmt_duration(t - now))
    } else if t == now {
        "now".into()
    } else {
        format!("{} ago", fmt_duration(now - t))
    }
}

/// A wall-clock time in the local zone, e.g. `2025-06-01 14:03:12 CEST`.
pub fn fmt_time(t: i64) -> String {
    match jiff::Timestamp::from_second(t) {
        Ok(ts) => ts
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        Err(_) => format!("@{t}"),
    }
}

/// One line: control characters (newlines) flattened to spaces.
fn flat(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// One line of a cell: newlines flattened, long text cut with `…`.
fn cell(text: &str) -> String {
    let flat = flat(text);
    if flat.chars().count() <= CELL_MAX {
        flat
    } else {
        let mut cut: String = flat.chars().take(CELL_MAX - 1).collect();
        cut.push('…');
        cut
    }
}

/// Left-aligned columns, two spaces apart, indented by two; the last column
/// is not padded.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows.iter()) {
        let mut line = String::from(" ");
        for (i, c) in row.iter().enumerate() {
            line.push(' ');
            line.push_str(c);
            if i + 1 < row.len() {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(c.chars().count());
                line.extend(std::iter::repeat_n(' ', pad + 1));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{DispatcherStatus, IncidentStatus, RestartStatus};
    use exit_record::ReadName;
    use hermes_board::Kind;

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(fmt_duration(0), "0s");
        assert_eq!(fmt_duration(12), "12s");
        assert_eq!(fmt_duration(60), "1m");
        assert_eq!(fmt_duration(180), "3m");
        assert_eq!(fmt_duration(252), "4m12s");
        assert_eq!(fmt_duration(3600), "1h");
        assert_eq!(fmt_duration(3600 + 3 * 60 + 59), "1h3m");
        assert_eq!(fmt_duration(86_400), "1d");
        assert_eq!(fmt_duration(3 * 86_400 + 4 * 3600 + 5), "3d4h");
        assert_eq!(fmt_duration(-252), "4m12s");
        assert!(fmt_duration(i64::MIN).ends_with('h'));
    }

    #[test]
    fn relative_times_point_the_right_way() {
        assert_eq!(fmt_ago(88, 100), "12s ago");
        assert_eq!(fmt_ago(100, 100), "just now");
        assert_eq!(fmt_ago(160, 100), "in 1m");
        assert_eq!(fmt_relative(280, 100), "in 3m");
        assert_eq!(fmt_relative(100, 100), "now");
        assert_eq!(fmt_relative(40, 100), "1m ago");
    }

    #[test]
    fn provider_states_say_how_long() {
        let mut p = ProviderStatus {
            name: "openai".into(),
            state: HealthState::Unhealthy.into(),
            since: 0,
            until: Some(1252),
            class: Some("rate_limit".into()),
            reason: Some("HTTP 429".into()),
        };
        assert_eq!(
            provider_state(&p, 1000),
            "unhealthy (rate_limit), 4m12s left"
        );
        assert_eq!(
            provider_state(&p, 1300),
            "unhealthy (rate_limit), cooldown over"
        );
        p.until = None;
        p.class = None;
        assert_eq!(provider_state(&p, 1000), "unhealthy, until re-auth");
        p.state = HealthState::Probing.into();
        assert_eq!(provider_state(&p, 1000), "probing");
    }

    #[test]
    fn parked_tasks_say_when_they_return() {
        let mut p = ParkedStatus {
            task: "t_1".into(),
            board: "default".into(),
            kind: Kind::Parked.into(),
            due_at: Some(1180),
            provider: Some("xai-oauth".into()),
            reason: "r".into(),
        };
        assert_eq!(parked_returns(&p, 1000), "in 3m");
        assert_eq!(parked_returns(&p, 2000), "due now");
        p.due_at = None;
        assert_eq!(parked_returns(&p, 1000), "when xai-oauth heals");
        p.provider = None;
        assert_eq!(parked_returns(&p, 1000), "when released");
    }

    #[test]
    fn addresses_are_asked_on_loopback_when_unspecified() {
        assert_eq!(
            parse_addr("127.0.0.1:9464\n"),
            "127.0.0.1:9464".parse().ok()
        );
        assert_eq!(parse_addr("0.0.0.0:9464"), "127.0.0.1:9464".parse().ok());
        assert_eq!(parse_addr("[::]:9464"), "[::1]:9464".parse().ok());
        assert_eq!(parse_addr("localhost"), None);
    }

    #[test]
    fn tables_align_and_cells_are_one_line() {
        let t = table(
            &["A", "LONGER"],
            vec![vec!["xyz".into(), "1".into()], vec!["q".into(), "".into()]],
        );
        assert_eq!(t, "  A    LONGER\n  xyz  1\n  q\n");
        assert_eq!(cell("a\nb"), "a b");
        let long = "é".repeat(300);
        assert_eq!(cell(&long).chars().count(), CELL_MAX);
        assert!(cell(&long).ends_with('…'));
    }

    #[test]
    fn the_table_shows_every_section() {
        let now = 10_000;
        let s = Status {
            version: "0.1.0".into(),
            generated_at: now,
            started_at: now - 3600,
            pid: 42,
            dry_run: false,
            board: "/h/kanban.db".into(),
            board_info: None,
            board_problem: None,
            boards: Vec::new(),
            record_dir: "/r".into(),
            dispatcher: DispatcherStatus {
                state: DispatchState::Stalled.into(),
                stalled: true,
                reason: Some("dispatcher stalled: 2 ready task(s) waited".into()),
                last_progress_at: Some(now - 12),
                next_cycle_at: Some(now + 48),
                interval_s: 60.0,
                stall_after_s: 180.0,
                ready_tasks: 2,
                waiting_since: Some(now - 250),
                gateway_pid: Some(4242),
                gateway_up: Some(true),
            },
            providers: vec![ProviderStatus {
                name: "xai-oauth".into(),
                state: HealthState::Unhealthy.into(),
                since: now - 60,
                until: None,
                class: Some("auth_expired".into()),
                reason: Some("xAI OAuth state is missing access_token".into()),
            }],
            parked: vec![ParkedStatus {
                task: "t_a".into(),
                board: "default".into(),
                kind: Kind::Held.into(),
                due_at: None,
                provider: Some("xai-oauth".into()),
                reason: "provider unhealthy".into(),
            }],
            restarts: (0..7)
                .map(|i| RestartStatus {
                    at: now - 600 + i,
                    result: ReadName::Unknown(format!("r{i}")),
                    detail: "d".into(),
                })
                .collect(),
            incidents: vec![IncidentStatus {
                key: "dispatcher_stalled".into(),
                severity: Severity::Warning.into(),
                since: now - 250,
                summary: "stalled".into(),
            }],
            counters: Default::default(),
        };
        let src = Source::Daemon {
            url: "http://127.0.0.1:9464".into(),
        };
        let out = render(&s, &src, now);
        for want in [
            "source: daemon at http://127.0.0.1:9464",
            "started 1h ago",
            "DISPATCHER  stalled",
            "last progress 12s ago",
            "in 48s (every 1m; stall after 3m)",
            "ready tasks    2 (waiting since 4m10s ago)",
            "gateway        pid 4242, up",
            "unhealthy (auth_expired), until re-auth",
            "when xai-oauth heals",
            "RESTARTS (last 5 of 7)",
            "INCIDENTS (1 open)",
            "alerts sent 0, failed 0",
        ] {
            assert!(out.contains(want), "missing {want:?} in:\n{out}");
        }
        assert!(!out.contains(" r1 "), "{out}");
        assert!(out.contains("r6"), "{out}");
    }

    #[test]
    fn a_refused_board_is_explained_whole_and_a_critical_incident_exits_2() {
        let now = 10_000;
        let missing: Vec<String> = (0..12).map(|i| format!("tasks.column_{i}")).collect();
        let why = format!(
            "board /h/kanban.db has a schema this build does not know: missing {}",
            missing.join(", ")
        );
        let mut s = Status {
            board: "/h/kanban.db".into(),
            board_problem: Some(why.clone()),
            incidents: vec![IncidentStatus {
                key: "board_unavailable".into(),
                severity: Severity::Critical.into(),
                since: now - 5,
                summary: format!("cannot use the board; no task will be rescued: {why}"),
            }],
            ..Status::default()
        };
        let src = Source::Daemon {
            url: "http://127.0.0.1:9464".into(),
        };
        let out = render(&s, &src, now);
        assert!(out.contains(&format!("UNAVAILABLE: {why}")), "{out}");
        assert!(
            out.contains(&format!("no task will be rescued: {why}")),
            "the incident is cut:\n{out}"
        );
        assert_eq!(exit_code(&s), ExitCode::from(2));
        s.incidents[0].severity = Severity::Warning.into();
        assert_eq!(exit_code(&s), ExitCode::SUCCESS);
        s.board_problem = None;
        s.board_info = Some(hermes_board::BoardInfo {
            journal_mode: "delete".into(),
            columns: vec!["tasks.provider_override".into()],
            features: hermes_board::HermesFeatures::hermes_0_22(
                "inferred from the board's columns",
            ),
        });
        let out = render(&s, &src, now);
        assert!(
            out.contains("journal delete; optional columns tasks.provider_override; Hermes features review_lane,exit_78,exit_trailer,archived_parent_done"),
            "{out}"
        );
    }

    #[test]
    fn an_idle_dispatcher_is_never_called_overdue_and_a_snapshot_a_check_old_is_due_now() {
        let now = 10_000;
        let mut s = Status::default();
        s.dispatcher.interval_s = 2.0;
        s.dispatcher.state = DispatchState::Idle.into();
        s.dispatcher.next_cycle_at = Some(now - 600);
        let src = Source::Daemon {
            url: "http://127.0.0.1:9464".into(),
        };
        let out = render(&s, &src, now);
        assert!(
            out.contains("next cycle     not observable while idle"),
            "{out}"
        );
        assert!(!out.contains("overdue"), "{out}");
        s.dispatcher.state = DispatchState::Ok.into();
        s.dispatcher.next_cycle_at = Some(now - 4);
        let out = render(&s, &src, now);
        assert!(out.contains("next cycle     due now"), "{out}");
        s.dispatcher.next_cycle_at = Some(now - 60);
        let out = render(&s, &src, now);
        assert!(out.contains("next cycle     overdue by 1m"), "{out}");
    }

    #[test]
    fn a_saved_source_says_why() {
        let src = Source::Saved {
            file: "/s/state.json".into(),
            saved_at: 940,
            why: "no /s/http.addr".into(),
        };
        let text = src.describe(1000);
        assert!(text.starts_with("saved state from "), "{text}");
        assert!(
            text.ends_with(", 1m ago, in /s/state.json (daemon not reachable: no /s/http.addr)"),
            "{text}"
        );
    }
}
