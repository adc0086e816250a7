//! A small tmpfs mounted for one test, to fill up.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::prerequisite_missing;

/// A tmpfs mounted over a directory, lazily unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it, e.g. `64k`)
    /// over `dir`, creating `dir`. Needs root or CAP_SYS_ADMIN: without it,
    /// `None` after [`prerequisite_missing`] (a failure under CI).
    ///
    /// # Panics
    /// When `dir` cannot be created, or under CI when mounting fails.
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("create the mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir)
            .output();
        let why = match out {
            Ok(o) if o.status.success() => return Some(Tmpfs(dir.to_path_buf())),
            Ok(o) => format!(
                "cannot mount a tmpfs at {} (needs root or CAP_SYS_ADMIN): {}",
                dir.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("cannot run mount: {e}"),
        };
        prerequisite_missing(&why);
        None
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a filler file until the filesystem is full (ENOSPC), then
    /// checks that not even a small file fits.
    ///
    /// # Panics
    /// When a write fails with anything but ENOSPC, or space is left.
    pub fn fill(&self) {
        let mut f = std::fs::File::create(self.0.join("filler")).expect("create the filler");
        let chunk = [0x55u8; 1024];
        loop {
            if let Err(e) = f.write_all(&chunk) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
        // Whatever fits in a partial page is gone too.
        let _ = f.write_all(b"x");
        let probe = std::fs::write(self.0.join("probe"), [0u8; 512]);
        assert!(probe.is_err(), "the filesystem is full");
        let _ = std::fs::remove_file(self.0.join("probe"));
    }

    /// Removes the filler: the space is free again.
    ///
    /// # Panics
    /// When there is no filler to remove.
    pub fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).expect("remove the filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
