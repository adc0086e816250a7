//! The local time zone, for a short-lived process.
//!
//! `jiff::tz::TimeZone::system()` reads `/etc/localtime` and then looks the
//! zone's name up in jiff's zoneinfo database, which first walks the whole
//! of `/usr/share/zoneinfo` (~600 files): about a millisecond and 0.6 MiB
//! of the shim's memory (kw-bench row 1e), once per classified failure.
//! [`local_time_zone`] reads the zone the way the C library does when `TZ`
//! is unset: the TZif data of `/etc/localtime` itself. With `TZ` set (a
//! name, a path or a POSIX rule) it defers to jiff, which understands them
//! all.

use jiff::tz::TimeZone;

const LOCALTIME: &str = "/etc/localtime";

/// The local time zone: `/etc/localtime` read directly when `TZ` is unset,
/// else (or when that file cannot be read) jiff's system zone.
pub fn local_time_zone() -> TimeZone {
    if std::env::var_os("TZ").is_none()
        && let Some(tz) = read_localtime(std::path::Path::new(LOCALTIME))
    {
        return tz;
    }
    TimeZone::system()
}

/// Larger than any TZif file (the largest zone is a few KB): a path that
/// leads elsewhere (a link to `/dev/zero`) is not read without end.
const MAX_TZIF_BYTES: u64 = 1 << 20;

/// The TZif file at `path` as a zone named after its link target when that
/// points into a `zoneinfo` directory (`Europe/Warsaw`), else `localtime`.
fn read_localtime(path: &std::path::Path) -> Option<TimeZone> {
    use std::io::Read;
    let mut data = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_TZIF_BYTES)
        .read_to_end(&mut data)
        .ok()?;
    let target = std::fs::read_link(path).ok();
    let name = target
        .as_deref()
        .and_then(|t| t.to_str())
        .and_then(|t| t.rsplit_once("zoneinfo/"))
        .map_or("localtime", |(_, name)| name);
    TimeZone::tzif(name, &data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The zone read from the file gives the same offsets as jiff's
    /// database zone of the same name, across a year of transitions.
    #[test]
    fn a_zone_read_from_its_file_keeps_the_databases_offsets() {
        let zoneinfo = std::path::Path::new("/usr/share/zoneinfo");
        let (Ok(expected), true) = (
            TimeZone::get("Europe/Warsaw"),
            zoneinfo.join("Europe/Warsaw").is_file(),
        ) else {
            crate::prerequisite_missing("needs the system time zone database (tzdata)");
            return;
        };
        // A symlink into zoneinfo, as /etc/localtime is.
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("localtime");
        std::os::unix::fs::symlink(zoneinfo.join("Europe/Warsaw"), &link).unwrap();
        let tz = read_localtime(&link).expect("a TZif file");
        assert_eq!(tz.iana_name(), Some("Europe/Warsaw"));
        let start = jiff::Timestamp::from_second(1_767_225_600).unwrap(); // 2026-01-01
        for day in 0..366 {
            let t = start + jiff::SignedDuration::from_hours(24 * day);
            assert_eq!(tz.to_offset(t), expected.to_offset(t), "{t}");
        }
    }

    #[test]
    fn an_unreadable_file_gives_no_zone() {
        assert!(read_localtime(std::path::Path::new("/nonexistent/localtime")).is_none());
    }

    /// A link to an endless file is read up to the bound and refused.
    #[test]
    fn a_link_to_an_endless_file_gives_no_zone() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("localtime");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(read_localtime(&link).is_none());
    }
}
