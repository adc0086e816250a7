//! Hermes' dispatcher settings, read from its own `config.yaml` as Hermes
//! reads them.

use std::path::Path;
use std::time::Duration;

/// The longest dispatcher interval taken from Hermes' config. Hermes itself
/// accepts any float, but with more than a day between ticks its
/// dispatcher is as good as stopped; a larger value (1e300, `.inf`) is
/// taken as this, with a warning, so that every later `now + 3 x interval`
/// stays in range and a stall is still reported within days.
pub const MAX_HERMES_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// `kanban.dispatch_interval_seconds` from `<root>/config.yaml`, read as
/// Hermes 0.19 reads it (`gateway/kanban_watchers.py`:
/// `max(float(v or 60), 1.0)`, 60 when `float()` fails), range-checked:
/// never a panic, whatever the file holds.
pub fn dispatch_interval(root: &Path) -> Option<Duration> {
    let file = root.join("config.yaml");
    let text = std::fs::read_to_string(&file).ok()?;
    let v: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    let raw = v.get("kanban")?.get("dispatch_interval_seconds")?;
    let secs = hermes_float(raw);
    let warn = |what: &str, using: Duration| {
        tracing::warn!(
            file = %file.display(),
            "kanban.dispatch_interval_seconds: {what}; using {}s",
            using.as_secs_f64()
        );
    };
    match secs {
        // `v or 60`: absent, null, 0 and false all mean Hermes' default.
        None => {
            if !(raw.is_null()
                || raw.as_f64() == Some(0.0)
                || raw.as_bool() == Some(false)
                || raw.as_str() == Some(""))
            {
                warn("not a number (Hermes uses 60s)", Duration::from_secs(60));
            }
            None
        }
        Some(s) if s.is_nan() => {
            // Hermes' `max(nan, 1.0)` is nan: its loop then never sleeps.
            warn(
                "NaN (Hermes then ticks without pause)",
                Duration::from_secs(1),
            );
            Some(Duration::from_secs(1))
        }
        Some(s) if s < 1.0 => Some(Duration::from_secs(1)),
        Some(s) => match Duration::try_from_secs_f64(s) {
            Ok(d) if d <= MAX_HERMES_INTERVAL => Some(d),
            _ => {
                warn(&format!("{s} is longer than a day"), MAX_HERMES_INTERVAL);
                Some(MAX_HERMES_INTERVAL)
            }
        },
    }
}

/// Python's `float(v or 60)` on a YAML value: `None` where Hermes falls
/// back to 60 (a falsy value, or one `float()` refuses).
fn hermes_float(v: &serde_yaml::Value) -> Option<f64> {
    use serde_yaml::Value;
    match v {
        Value::Number(n) => n.as_f64().filter(|f| *f != 0.0),
        Value::Bool(true) => Some(1.0),
        Value::String(s) if !s.is_empty() => {
            let t = s.trim().to_ascii_lowercase();
            match t.trim_start_matches(['+', '-']) {
                "inf" | "infinity" => Some(if t.starts_with('-') {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                }),
                "nan" => Some(f64::NAN),
                _ => t.replace('_', "").parse::<f64>().ok(),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_read_as_hermes_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(dispatch_interval(dir.path()), None, "no config.yaml");
        let s = Duration::from_secs(1);
        for (text, want) in [
            ("45", Some(45 * s)),
            ("'45'", Some(45 * s)),
            ("0", None),
            ("null", None),
            ("abc", None),
            ("0.2", Some(s)),
            (".nan", Some(s)),
            ("1e300", Some(MAX_HERMES_INTERVAL)),
        ] {
            std::fs::write(
                dir.path().join("config.yaml"),
                format!("kanban:\n  dispatch_interval_seconds: {text}\n"),
            )
            .unwrap();
            assert_eq!(dispatch_interval(dir.path()), want, "{text}");
        }
    }
}
