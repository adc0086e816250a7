//! The watchdog's configuration: YAML (serde_yaml), every key optional with a
//! default that fits a stock Hermes install. `config/watchdog.yaml` documents
//! every key; a test keeps it equal to these defaults.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a config was refused. Every variant names the file and, where it can,
/// the line and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        file: String,
        line: Option<usize>,
        message: String,
    },
    #[error("{file}{}: {key}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        file: String,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

/// The longest duration any key accepts: 100 years (`36500d`). Longer ones
/// (`1e300`, `18446744073709551615`) are refused where the file is parsed,
/// naming the file, line and key, so that no later `now + d` (in seconds
/// since the epoch, in `Instant`s, in doublings of a backoff) can overflow,
/// wrap (to -1: a cooldown silently off) or panic. A value meant as "never"
/// fits: 100 years is never enough.
pub const MAX_DURATION: Duration = Duration::from_secs(36_500 * 24 * 3600);

fn in_range(d: Duration, text: &dyn fmt::Display) -> Result<Dur, String> {
    if d > MAX_DURATION {
        Err(format!(
            "duration {text} is out of range (at most 36500d, 100 years)"
        ))
    } else {
        Ok(Dur(d))
    }
}

/// A duration written as `300s`, `15m`, `1h 30m`, `24h` or a bare number of
/// seconds, at most [`MAX_DURATION`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
    pub fn as_secs_f64(&self) -> f64 {
        self.0.as_secs_f64()
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        if self.0.subsec_nanos() % 1_000_000 != 0 {
            write!(f, "{}ns", self.0.as_nanos())
        } else if self.0.subsec_millis() != 0 {
            write!(f, "{}ms", self.0.as_millis())
        } else if s != 0 && s % 3600 == 0 {
            write!(f, "{}h", s / 3600)
        } else if s != 0 && s % 60 == 0 {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Float(f64),
            Text(String),
        }
        // Range-checked here, at the boundary: `Duration::from_secs_f64`
        // panics on 1e300, and a u64 of seconds wraps when later made i64.
        match Raw::deserialize(d)? {
            Raw::Secs(s) => in_range(Duration::from_secs(s), &format_args!("{s}s")),
            Raw::Float(f) if f.is_nan() => Err("duration must be a number, got NaN".into()),
            Raw::Float(f) if f < 0.0 => Err(format!("duration must not be negative, got {f}")),
            Raw::Float(f) => Duration::try_from_secs_f64(f)
                .map_err(|_| format!("duration {f:e}s is out of range (at most 36500d, 100 years)"))
                .and_then(|d| in_range(d, &format_args!("{f:e}s"))),
            Raw::Text(t) => parse_duration(&t),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// Parses `300s`, `15m`, `1h30m`, `2 days`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Dur, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return in_range(Duration::from_secs(secs), &format_args!("{text:?}"));
    }
    // Days and weeks count as 24 h and 7 x 24 h (no calendar involved).
    let parsed = t
        .parse::<jiff::Span>()
        .and_then(|span| span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()))
        .map_err(|e| {
            format!("invalid duration {text:?} (expected e.g. 300s, 15m, 1h30m, 7d): {e}")
        })?;
    if parsed.is_negative() {
        return Err(format!("duration must be positive, got {text:?}"));
    }
    Duration::try_from(parsed)
        .map_err(|e| format!("invalid duration {text:?}: {e}"))
        .and_then(|d| in_range(d, &format_args!("{text:?}")))
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Hermes root (`$HERMES_HOME`, else `~/.hermes`). The board, gateway log,
    /// auth store and profiles are found from it.
    pub hermes_home: Option<PathBuf>,
    /// One board slug to watch: `default` is `<root>/kanban.db`, others
    /// `<root>/kanban/boards/<slug>/kanban.db`. Unset (and no `board_db`):
    /// every board of the Hermes home, new ones picked up while running.
    pub board: Option<String>,
    /// Explicit board database path (like `HERMES_KANBAN_DB`).
    pub board_db: Option<PathBuf>,
    /// Where worker-shim writes exit records (default: the shim's default).
    pub record_dir: Option<PathBuf>,
    /// Where the watchdog keeps its own state and audit log
    /// (default `$XDG_STATE_HOME/kanban-watchdog`).
    pub state_dir: Option<PathBuf>,
    pub providers: ProvidersConfig,
    pub retry: RetryConfig,
    pub dispatcher: DispatcherConfig,
    pub restart: RestartConfig,
    pub alerts: AlertsConfig,
    pub http: HttpConfig,
    pub records: RecordsConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersConfig {
    /// Cooldown for a rate limit or quota without a reset time.
    pub default_cooldown: Dur,
    /// Never keep a provider unhealthy for longer than this on a reset time.
    pub max_cooldown: Dur,
    /// The Hermes root credential store watched for re-auth (default
    /// `<root>/auth.json`); each profile's `<root>/profiles/<name>/auth.json`
    /// is watched too. A re-auth of a provider is a new credential value
    /// under that provider's own entry in any of them (see
    /// `crate::credentials`), not any change of the file.
    pub auth_store: Option<PathBuf>,
    /// Per-profile overrides of the provider chain when the profile's
    /// `config.yaml` cannot be read: `profile: [primary, fallback...]`.
    pub chains: std::collections::BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Added to a provider's reset time before a parked task returns.
    pub margin: Dur,
    /// Random extra delay (0..jitter) so a team does not stampede at the reset second.
    pub jitter: Dur,
    /// First delay when the failure gave no reset time; doubles per repeat.
    pub default_delay: Dur,
    /// Cap for the doubling delay.
    pub max_delay: Dur,
    /// Delayed retries allowed per task within `retry_window`.
    pub max_delayed_retries: u32,
    pub retry_window: Dur,
    /// Steer a retry to a healthy fallback provider when the profile has one.
    pub steer_to_fallback: bool,
    /// Hold ready tasks whose provider is unhealthy (no healthy fallback) in `scheduled`.
    pub hold_ready_for_unhealthy: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatcherConfig {
    /// The dispatcher's tick (`kanban.dispatch_interval_seconds`); read from
    /// `<root>/config.yaml` when not set here (Hermes' default is 60 s).
    pub interval: Option<Dur>,
    /// Ready work waiting this long with no progress is a stall
    /// (default: 3 x interval, at least 90 s).
    pub stall_after: Option<Dur>,
    /// Default `<root>/logs/gateway.log`.
    pub gateway_log: Option<PathBuf>,
    /// Default `<root>/gateway.pid`.
    pub pid_file: Option<PathBuf>,
    /// How often the watchdog checks the board and the gateway.
    pub check_every: Dur,
    /// Log-line patterns (regexes) mapped to events.
    pub patterns: LogPatterns,
}

/// The gateway-log patterns (Hermes' log format: [`hermes_board::gateway_log`]).
pub use hermes_board::gateway_log::LogPatterns;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartConfig {
    /// argv of the restart action, run detached. Never a shell string.
    pub command: Vec<String>,
    /// Restarts allowed per `interval` (systemd's StartLimitBurst/IntervalSec).
    pub burst: u32,
    pub interval: Dur,
    /// Delay before the first retry after a failed recovery; doubles per try.
    pub backoff_initial: Dur,
    pub backoff_max: Dur,
    /// Progress must resume within this after a restart, or it escalates.
    pub recovery_grace: Dur,
    /// Set false to only detect and alert.
    pub enabled: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// A reminder for a still-open incident every this long.
    pub repeat_interval: Dur,
    pub webhook: Option<WebhookConfig>,
    /// argv run with the alert as JSON on stdin.
    pub command: Option<Vec<String>>,
    /// Alertmanager to post alerts to (its v2 API): `url` is its base URL,
    /// e.g. `http://127.0.0.1:9093`; `timeout` and `retries` as for the webhook.
    pub alertmanager: Option<WebhookConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    pub timeout: Dur,
    pub retries: u32,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            timeout: Dur::secs(5),
            retries: 3,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port`; loopback by default. Empty string disables the endpoint.
    pub listen: String,
}

/// The largest `records.max_bytes` accepted (each record is read whole).
pub const MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordsConfig {
    /// Larger record files are quarantined.
    pub max_bytes: u64,
    /// Keep handled records in `done/` this long.
    pub keep_done: Dur,
}

impl Default for ProvidersConfig {
    fn default() -> Self {
        ProvidersConfig {
            default_cooldown: Dur::secs(300),
            max_cooldown: Dur::secs(24 * 3600),
            auth_store: None,
            chains: Default::default(),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            margin: Dur::secs(15),
            jitter: Dur::secs(30),
            default_delay: Dur::secs(300),
            max_delay: Dur::secs(3600),
            max_delayed_retries: 5,
            retry_window: Dur::secs(24 * 3600),
            steer_to_fallback: true,
            hold_ready_for_unhealthy: true,
        }
    }
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            interval: None,
            stall_after: None,
            gateway_log: None,
            pid_file: None,
            check_every: Dur::secs(5),
            patterns: LogPatterns::default(),
        }
    }
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            command: vec![
                "hermes".into(),
                "gateway".into(),
                "run".into(),
                "--replace".into(),
            ],
            burst: 3,
            interval: Dur::secs(15 * 60),
            backoff_initial: Dur::secs(10),
            backoff_max: Dur::secs(160),
            recovery_grace: Dur::secs(120),
            enabled: true,
        }
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            repeat_interval: Dur::secs(3600),
            webhook: None,
            command: None,
            alertmanager: None,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

impl Default for RecordsConfig {
    fn default() -> Self {
        RecordsConfig {
            max_bytes: 1024 * 1024,
            keep_done: Dur::secs(7 * 24 * 3600),
        }
    }
}

impl Config {
    /// Parses and validates YAML text; `file` names the source in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<Config, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| {
                let (line, message) = pinpoint(text, &e);
                ConfigError::Parse {
                    file: file.to_string(),
                    line,
                    message: redact_message(&message),
                }
            })?
        };
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                file: file.to_string(),
                line: locate_key(text, &key),
                key,
                message: redact_message(&message),
            })?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::from_yaml(&text, &file)
    }

    /// Semantic checks serde cannot express. Returns (dotted key, reason).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let fail = |k: &str, m: String| Err((k.to_string(), m));
        if let Some(board) = &self.board
            && !hermes_board::home::valid_board_slug(board)
        {
            return fail(
                "board",
                format!(
                    "invalid board slug {board:?} (Hermes slugs: 1-64 of a-z, 0-9, '-', '_', \
                     not starting with '-' or '_')"
                ),
            );
        }
        if self.providers.default_cooldown.0.is_zero() {
            return fail(
                "providers.default_cooldown",
                "must be greater than 0".into(),
            );
        }
        if self.providers.max_cooldown < self.providers.default_cooldown {
            return fail(
                "providers.max_cooldown",
                format!(
                    "{} is shorter than providers.default_cooldown ({})",
                    self.providers.max_cooldown, self.providers.default_cooldown
                ),
            );
        }
        if self.retry.default_delay.0.is_zero() {
            return fail("retry.default_delay", "must be greater than 0".into());
        }
        if self.retry.max_delay < self.retry.default_delay {
            return fail(
                "retry.max_delay",
                "must not be shorter than retry.default_delay".into(),
            );
        }
        if self.restart.enabled && self.restart.command.is_empty() {
            return fail(
                "restart.command",
                "must name a program (an argv list), or set restart.enabled: false".into(),
            );
        }
        if self.restart.burst == 0 {
            return fail("restart.burst", "must be at least 1".into());
        }
        // Foot-guns a range check catches: a margin or jitter of days parks
        // every task that long (they add to the reset time), a zero
        // stall_after restarts the dispatcher at every check with ready work,
        // a zero repeat_interval repeats an alert at every check.
        for (key, d) in [
            ("retry.margin", self.retry.margin),
            ("retry.jitter", self.retry.jitter),
        ] {
            if d.0 > Duration::from_secs(3600) {
                return fail(
                    key,
                    format!("{d} is out of range (at most 1h: it is added to every park)"),
                );
            }
        }
        if let Some(d) = self.dispatcher.stall_after
            && d.0 < Duration::from_secs(1)
        {
            return fail(
                "dispatcher.stall_after",
                format!(
                    "{d} is out of range (at least 1s: below, every check with ready work is a stall)"
                ),
            );
        }
        if self.alerts.repeat_interval.0 < Duration::from_secs(1) {
            return fail(
                "alerts.repeat_interval",
                format!(
                    "{} is out of range (at least 1s)",
                    self.alerts.repeat_interval
                ),
            );
        }
        if self.dispatcher.check_every.0 < Duration::from_millis(50)
            || self.dispatcher.check_every.0 > Duration::from_secs(60)
        {
            // At most 1m: the systemd keep-alive stops when the check loop has
            // not turned for 120 s, and releases and stall checks wait for it.
            return fail(
                "dispatcher.check_every",
                format!(
                    "{} is out of range (50ms to 1m: releases, stall checks and the systemd keep-alive wait for it)",
                    self.dispatcher.check_every
                ),
            );
        }
        if let Some(i) = self.dispatcher.interval
            && (i.0.is_zero() || i.0 > crate::heartbeat::MAX_HERMES_INTERVAL)
        {
            return fail(
                "dispatcher.interval",
                format!("{i} is out of range (more than 0, at most 24h)"),
            );
        }
        if !(1024..=MAX_RECORD_BYTES).contains(&self.records.max_bytes) {
            return fail(
                "records.max_bytes",
                format!(
                    "{} is out of range (1024 to {MAX_RECORD_BYTES}; a record is ~150 KiB at most)",
                    self.records.max_bytes
                ),
            );
        }
        for (key, sink) in [
            ("alerts.webhook", &self.alerts.webhook),
            ("alerts.alertmanager", &self.alerts.alertmanager),
        ] {
            let Some(w) = sink else { continue };
            if w.retries > 10 {
                return fail(
                    &format!("{key}.retries"),
                    format!("{} is out of range (at most 10)", w.retries),
                );
            }
            if w.timeout.0.is_zero() || w.timeout.0 > Duration::from_secs(600) {
                return fail(
                    &format!("{key}.timeout"),
                    format!("{} is out of range (more than 0, at most 10m)", w.timeout),
                );
            }
        }
        for (name, list) in [
            ("activity", &self.dispatcher.patterns.activity),
            ("stuck", &self.dispatcher.patterns.stuck),
            ("tick_error", &self.dispatcher.patterns.tick_error),
            ("shutdown", &self.dispatcher.patterns.shutdown),
            (
                "provider_failure",
                &self.dispatcher.patterns.provider_failure,
            ),
        ] {
            for (i, p) in list.iter().enumerate() {
                if let Err(e) = regex::Regex::new(p) {
                    return fail(
                        &format!("dispatcher.patterns.{name}"),
                        format!("pattern #{} is not a valid regex: {e}", i + 1),
                    );
                }
            }
        }
        if let Some(w) = &self.alerts.webhook
            && !(w.url.starts_with("http://") || w.url.starts_with("https://"))
        {
            return fail(
                "alerts.webhook.url",
                "must be an http:// or https:// URL".into(),
            );
        }
        if let Some(am) = &self.alerts.alertmanager
            && !(am.url.starts_with("http://") || am.url.starts_with("https://"))
        {
            return fail(
                "alerts.alertmanager.url",
                "must be an http:// or https:// URL (Alertmanager's base URL)".into(),
            );
        }
        if let Some(cmd) = &self.alerts.command
            && cmd.is_empty()
        {
            return fail(
                "alerts.command",
                "must name a program (an argv list)".into(),
            );
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return fail(
                "http.listen",
                format!("{:?} is not a host:port address", self.http.listen),
            );
        }
        Ok(())
    }

    /// The config as YAML (for `check-config`).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// serde_yaml names only the mapping whose value was refused by a custom
/// deserializer (a [`Dur`] out of range is reported as `providers: …` at
/// the mapping's first line). Find the key: the one entry of that mapping
/// that fails on its own, and report it with its own line.
fn pinpoint(text: &str, e: &serde_yaml::Error) -> (Option<usize>, String) {
    let line = e.location().map(|l| l.line());
    let message = e.to_string();
    let found = (|| {
        let (path, rest) = message.split_once(": ")?;
        if path.contains(' ') {
            return None;
        }
        let doc: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
        let mut node = &doc;
        for part in path.split('.') {
            node = node.get(part)?;
        }
        let culprit = node.as_mapping()?.iter().find_map(|(k, v)| {
            let key = k.as_str()?;
            let mut one =
                serde_yaml::Value::Mapping([(k.clone(), v.clone())].into_iter().collect());
            for part in path.rsplit('.') {
                one = serde_yaml::Value::Mapping(
                    [(serde_yaml::Value::from(part), one)].into_iter().collect(),
                );
            }
            serde_yaml::from_value::<Config>(one)
                .is_err()
                .then(|| key.to_string())
        })?;
        if !v_is_leaf(node.get(culprit.as_str())?) {
            return None;
        }
        let dotted = format!("{path}.{culprit}");
        // Drop serde_yaml's position of the mapping: ours is the key's.
        let rest = match rest.rfind(" at line ") {
            Some(i) => &rest[..i],
            None => rest,
        };
        Some((
            locate_key(text, &dotted).or(line),
            format!("{dotted}: {rest}"),
        ))
    })();
    found.unwrap_or((line, message))
}

fn v_is_leaf(v: &serde_yaml::Value) -> bool {
    !(v.is_mapping() || v.is_sequence())
}

/// A config error may quote the value it refused (serde's `invalid type:
/// string "https://user:pw@host/hook?token=…"` for a webhook written as a
/// string): redact it as every other text we log. Every URL keeps only its
/// scheme and host ([`crate::alerts::redact_url`]: user info, path and
/// query of a webhook are its credentials), then the usual secret shapes
/// go ([`failure_signatures::redact`]: keys, bearer tokens, `password=`).
pub fn redact_message(message: &str) -> String {
    static URL: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let url = URL.get_or_init(|| {
        regex::Regex::new(r#"(?i)\b[a-z][a-z0-9+.-]*://[^\s"'`<>]+"#).expect("static regex")
    });
    let urls = url.replace_all(message, |c: &regex::Captures<'_>| {
        crate::alerts::redact_url(&c[0])
    });
    failure_signatures::redact(&urls).into_owned()
}

/// Finds the line (1-based) of a dotted key in YAML text by indentation, for
/// error messages about values that parsed but are not acceptable.
pub fn locate_key(text: &str, dotted: &str) -> Option<usize> {
    let mut parts = dotted.split('.').peekable();
    let mut want = parts.next()?;
    let mut min_indent = 0usize;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if indent < min_indent {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix(want)
            && rest.trim_start().starts_with(':')
        {
            match parts.next() {
                None => return Some(i + 1),
                Some(next) => {
                    want = next;
                    min_indent = indent + 1;
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_the_documented_forms() {
        assert_eq!(parse_duration("300").unwrap(), Dur::secs(300));
        assert_eq!(parse_duration("300s").unwrap(), Dur::secs(300));
        assert_eq!(parse_duration("15m").unwrap(), Dur::secs(900));
        assert_eq!(parse_duration("1h30m").unwrap(), Dur::secs(5400));
        assert_eq!(parse_duration("24h").unwrap(), Dur::secs(86400));
        assert_eq!(parse_duration("7d").unwrap(), Dur::secs(7 * 86400));
        assert_eq!(
            parse_duration("500ms").unwrap(),
            Dur(Duration::from_millis(500))
        );
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn foot_guns_are_refused_naming_the_key() {
        for (yaml, key) in [
            ("retry:\n  margin: 36500d\n", "retry.margin"),
            ("retry:\n  jitter: 2h\n", "retry.jitter"),
            ("dispatcher:\n  stall_after: 0s\n", "dispatcher.stall_after"),
            ("alerts:\n  repeat_interval: 0s\n", "alerts.repeat_interval"),
            ("dispatcher:\n  check_every: 2m\n", "dispatcher.check_every"),
        ] {
            let err = Config::from_yaml(yaml, "w.yaml").unwrap_err().to_string();
            assert!(
                err.starts_with("w.yaml") && err.contains(key),
                "{yaml}: {err}"
            );
        }
        assert!(
            Config::from_yaml("retry:\n  margin: 1h\n  max_delayed_retries: 0\n", "w.yaml").is_ok()
        );
    }

    #[test]
    fn durations_past_a_hundred_years_are_refused_not_wrapped_or_panicking() {
        for text in [
            "1e300",
            "1e19",
            "18446744073709551615",
            "36501d",
            ".inf",
            ".nan",
            "-5",
            "'99999999999999999999h'",
        ] {
            let err = Config::from_yaml(&format!("providers:\n  max_cooldown: {text}\n"), "w.yaml")
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("w.yaml:2") && err.contains("providers.max_cooldown"),
                "{text}: {err}"
            );
        }
        let ok = Config::from_yaml("providers:\n  max_cooldown: 36500d\n", "w.yaml").unwrap();
        assert_eq!(ok.providers.max_cooldown.0, MAX_DURATION);
        // Sub-millisecond values render so that they parse back.
        let c = Config::from_yaml("retry:\n  jitter: 1.0000001\n", "w.yaml").unwrap();
        assert_eq!(Config::from_yaml(&c.to_yaml(), "x").unwrap(), c);
    }

    #[test]
    fn config_errors_do_not_echo_credentials() {
        let err = Config::from_yaml(
            "alerts:\n  webhook: \"https://u:hunter2@hooks.slack.com/services/T0/B0/XyZsecret?token=abc\"\n",
            "w.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("alerts.webhook") && err.contains("hooks.slack.com"),
            "{err}"
        );
        for s in ["hunter2", "XyZsecret", "abc", "u:"] {
            assert!(!err.contains(s), "{s}: {err}");
        }
        let err = Config::from_yaml(
            "alerts:\n  webhook: sk-proj-AbCdEf0123456789AbCdEf01\n",
            "w.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("AbCdEf0123456789"), "{err}");
    }

    #[test]
    fn empty_text_is_the_default() {
        assert_eq!(Config::from_yaml("", "x").unwrap(), Config::default());
        assert_eq!(
            Config::from_yaml("# only comments\n", "x").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_file_and_line() {
        let err = Config::from_yaml("board: default\nretry:\n  margni: 5s\n", "w.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("w.yaml:3"), "{err}");
        assert!(err.contains("margni"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key_and_line() {
        let err = Config::from_yaml("restart:\n  burst: 0\n", "w.yaml")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "w.yaml:2: restart.burst: must be at least 1");
        let err = Config::from_yaml("retry:\n  margin: soon\n", "w.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("w.yaml:2"), "{err}");
        assert!(err.contains("invalid duration"), "{err}");
        let err = Config::from_yaml("dispatcher:\n  patterns:\n    stuck: ['(']\n", "w.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dispatcher.patterns.stuck"), "{err}");
        assert!(err.starts_with("w.yaml:3"), "{err}");
    }

    #[test]
    fn the_documented_example_is_exactly_the_defaults() {
        let text = include_str!("../../../config/watchdog.yaml");
        let parsed = Config::from_yaml(text, "config/watchdog.yaml").unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn the_rendered_config_parses_back_to_itself() {
        let c = Config::default();
        assert_eq!(Config::from_yaml(&c.to_yaml(), "x").unwrap(), c);
    }
}
