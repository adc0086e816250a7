//! `kanban-watchdog wire hermes` against the real binary, on a temporary
//! HERMES_HOME with stand-in `hermes` and `worker-shim` executables; and one
//! end-to-end run of the wired `hermes` through the real worker-shim.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kanban_watchdog::wire::{BLOCK_BEGIN, BLOCK_END, find_block, parse_env_value, split_lines};

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    bin: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let home = root.join("hermes-home");
        let bin = root.join("bin");
        std::fs::create_dir_all(&home).expect("mkdir home");
        std::fs::create_dir_all(&bin).expect("mkdir bin");
        write_exec(
            &bin.join("hermes"),
            "#!/bin/sh\necho \"real-hermes $*\"\nexit 0\n",
        );
        write_exec(&bin.join("worker-shim"), "#!/bin/sh\nexit 99\n");
        Fixture {
            _tmp: tmp,
            root,
            home,
            bin,
        }
    }

    fn env_file(&self) -> PathBuf {
        self.home.join(".env")
    }

    fn link(&self) -> PathBuf {
        self.home.join("kanban-watchdog/bin/hermes")
    }

    fn fake_hermes(&self) -> PathBuf {
        self.bin.join("hermes")
    }

    fn fake_shim(&self) -> PathBuf {
        self.bin.join("worker-shim")
    }

    /// `wire hermes --hermes-home <home> ARGS`, with only our bin dir and
    /// the system dirs on PATH.
    fn wire(&self, args: &[&str]) -> Output {
        self.wire_with_path(args, &format!("{}:/usr/bin:/bin", self.bin.display()))
    }

    fn wire_with_path(&self, args: &[&str], path: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kanban-watchdog"))
            .args(["wire", "hermes", "--hermes-home"])
            .arg(&self.home)
            .args(args)
            .env("PATH", path)
            .env_remove("HERMES_HOME")
            .env("RUST_LOG", "warn")
            .output()
            .expect("run kanban-watchdog wire")
    }

    fn read_env(&self) -> Vec<u8> {
        std::fs::read(self.env_file()).expect("read .env")
    }
}

fn write_exec(path: &Path, body: &str) {
    std::fs::write(path, body).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn expected_block(f: &Fixture, record_dir: Option<&Path>) -> String {
    let mut s = format!(
        "{BLOCK_BEGIN}\nHERMES_BIN={}\nWORKER_SHIM_TARGET={}\n",
        f.link().display(),
        f.fake_hermes().display()
    );
    if let Some(r) = record_dir {
        s.push_str(&format!("WORKER_SHIM_RECORD_DIR={}\n", r.display()));
    }
    s.push_str(BLOCK_END);
    s.push('\n');
    s
}

/// KEY=value pairs inside the managed block.
fn block_values(env: &[u8]) -> Vec<(String, String)> {
    let lines = split_lines(env);
    let (a, b) = find_block(&lines).expect("valid").expect("a block");
    lines[a + 1..b]
        .iter()
        .filter_map(|l| {
            let text = String::from_utf8_lossy(l).trim().to_string();
            let (k, v) = text.split_once('=')?;
            Some((k.to_string(), parse_env_value(v)))
        })
        .collect()
}

const ORIGINAL: &[u8] = b"# my Hermes secrets\nOPENAI_API_KEY=sk-test-123\r\nexport XAI_BASE='https://x.example/v1' # trailing\n\nLAST=no-newline";

#[test]
fn install_adds_one_block_and_keeps_everything_else() {
    let f = Fixture::new();
    std::fs::write(f.env_file(), ORIGINAL).expect("write .env");
    std::fs::set_permissions(f.env_file(), std::fs::Permissions::from_mode(0o640)).expect("chmod");

    let out = ok(&f.wire(&["--shim", f.fake_shim().to_str().expect("utf8")]));
    assert!(out.contains("Restart the Hermes gateway"), "{out}");
    assert!(out.contains("(created)"), "{out}");
    assert!(out.contains("wiring block added"), "{out}");

    let env = f.read_env();
    let mut want = ORIGINAL.to_vec();
    want.push(b'\n');
    want.extend_from_slice(expected_block(&f, None).as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&env),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(mode(&f.env_file()), 0o640, "mode kept");
    assert_eq!(
        std::fs::read_link(f.link()).expect("symlink"),
        f.fake_shim()
    );
}

#[test]
fn reinstall_gives_identical_bytes() {
    let f = Fixture::new();
    std::fs::write(f.env_file(), ORIGINAL).expect("write .env");
    let shim = f.fake_shim();
    let args = ["--shim", shim.to_str().expect("utf8")];
    ok(&f.wire(&args));
    let first = f.read_env();
    let out = ok(&f.wire(&args));
    assert!(out.contains("Already wired; nothing changed"), "{out}");
    assert_eq!(f.read_env(), first);

    // A changed option rewrites the block in place, nothing else.
    let records = f.root.join("records");
    ok(&f.wire(&[
        "--shim",
        shim.to_str().expect("utf8"),
        "--record-dir",
        records.to_str().expect("utf8"),
    ]));
    let env = f.read_env();
    assert!(env.starts_with(ORIGINAL));
    assert!(
        String::from_utf8_lossy(&env).ends_with(&expected_block(&f, Some(&records))),
        "{}",
        String::from_utf8_lossy(&env)
    );
}

#[test]
fn a_new_env_file_is_private() {
    let f = Fixture::new();
    let out = ok(&f.wire(&["--shim", f.fake_shim().to_str().expect("utf8")]));
    assert!(out.contains("created (mode 0600)"), "{out}");
    assert_eq!(mode(&f.env_file()), 0o600);
    assert_eq!(
        String::from_utf8_lossy(&f.read_env()),
        expected_block(&f, None)
    );
}

#[test]
fn an_unmanaged_hermes_bin_is_a_conflict() {
    let f = Fixture::new();
    let before = b"A=1\nHERMES_BIN=/opt/other/hermes\n".to_vec();
    std::fs::write(f.env_file(), &before).expect("write .env");
    let out = f.wire(&["--shim", f.fake_shim().to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(".env:2: HERMES_BIN=/opt/other/hermes"),
        "{err}"
    );
    assert!(err.contains("Remove or comment out"), "{err}");
    assert_eq!(f.read_env(), before, ".env untouched");
    assert!(
        std::fs::symlink_metadata(f.link()).is_err(),
        "nothing created on a conflict"
    );

    // One that already points at our link is fine.
    let ours = format!("A=1\nHERMES_BIN={}\n", f.link().display());
    std::fs::write(f.env_file(), &ours).expect("write .env");
    let out = ok(&f.wire(&["--shim", f.fake_shim().to_str().expect("utf8")]));
    assert!(out.contains("already has this value"), "{out}");
}

#[test]
fn undo_restores_the_original_and_is_idempotent() {
    let f = Fixture::new();
    let original = b"A=1\n# comment\nB=2\n";
    std::fs::write(f.env_file(), original).expect("write .env");
    std::fs::set_permissions(f.env_file(), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    ok(&f.wire(&["--shim", f.fake_shim().to_str().expect("utf8")]));
    assert_ne!(f.read_env(), original);

    let out = ok(&f.wire(&["--undo"]));
    assert!(out.contains("wiring block removed"), "{out}");
    assert!(out.contains("Restart the Hermes gateway"), "{out}");
    assert_eq!(f.read_env(), original);
    assert_eq!(mode(&f.env_file()), 0o644);
    assert!(!f.home.join("kanban-watchdog").exists(), "link dir removed");

    let out = ok(&f.wire(&["--undo"]));
    assert!(out.contains("Nothing to undo"), "{out}");
    assert_eq!(f.read_env(), original);
}

#[test]
fn undo_leaves_foreign_files_in_the_link_dir() {
    let f = Fixture::new();
    ok(&f.wire(&["--shim", f.fake_shim().to_str().expect("utf8")]));
    let other = f.home.join("kanban-watchdog/notes.txt");
    std::fs::write(&other, "mine").expect("write");
    let out = ok(&f.wire(&["--undo"]));
    assert!(out.contains("is not empty; left in place"), "{out}");
    assert!(other.exists());
    assert!(!f.home.join("kanban-watchdog/bin").exists());
}

#[test]
fn a_missing_real_hermes_or_shim_is_explained() {
    let f = Fixture::new();
    let only_shim = f.root.join("only-shim");
    std::fs::create_dir_all(&only_shim).expect("mkdir");
    write_exec(&only_shim.join("worker-shim"), "#!/bin/sh\n");
    let out = f.wire_with_path(&[], &format!("{}:/usr/bin:/bin", only_shim.display()));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no real `hermes`"), "{err}");
    assert!(err.contains("--hermes"), "{err}");

    let out = f.wire(&["--shim", "/nonexistent/worker-shim"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/worker-shim"), "{err}");

    // --hermes naming the shim would loop forever.
    let shim = f.fake_shim();
    let shim = shim.to_str().expect("utf8");
    let out = f.wire(&["--shim", shim, "--hermes", shim]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is worker-shim itself"));
    assert!(!f.env_file().exists());
}

#[test]
fn the_real_hermes_is_found_past_the_shim_on_path() {
    let f = Fixture::new();
    // Our own link dir first on PATH (as if exported): it must be skipped.
    ok(&f.wire(&["--shim", f.fake_shim().to_str().expect("utf8")]));
    let link_dir = f.link().parent().expect("dir").to_path_buf();
    let path = format!("{}:{}:/usr/bin:/bin", link_dir.display(), f.bin.display());
    ok(&f.wire_with_path(&["--shim", f.fake_shim().to_str().expect("utf8")], &path));
    let values = block_values(&f.read_env());
    assert!(values.contains(&(
        "WORKER_SHIM_TARGET".into(),
        f.fake_hermes().display().to_string()
    )));
}

// ----- end to end with the real worker-shim ---------------------------------

/// The worker-shim binary of this workspace build: beside this test's
/// target dir, else `$CARGO_TARGET_DIR`, else `<workspace>/target`; built
/// with cargo when missing.
fn real_shim() -> Option<PathBuf> {
    let profile_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(Path::to_path_buf));
    let mut candidates: Vec<PathBuf> = profile_dir.iter().map(|d| d.join("worker-shim")).collect();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("debug/worker-shim"));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    candidates.push(workspace.join("target/debug/worker-shim"));
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Some(found.clone());
    }
    // Not built yet: build it into this test's own target dir.
    let target_dir = profile_dir.as_deref()?.parent()?.to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building worker-shim into {}", target_dir.display());
    let mut child = Command::new(cargo)
        .args(["build", "--quiet", "-p", "worker-shim"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(&workspace)
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => break,
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    candidates.into_iter().find(|p| p.is_file())
}

#[test]
fn the_wired_hermes_runs_the_real_one_through_the_real_shim() {
    let Some(shim) = real_shim() else {
        let why = "the end-to-end assertion: no worker-shim binary found or built \
                   (run `cargo build -p worker-shim` first)";
        // Under CI the test command builds every binary first: never a silent pass.
        test_support::prerequisite_missing(why);
        return;
    };
    let f = Fixture::new();
    let records = f.root.join("records");
    ok(&f.wire(&[
        "--shim",
        shim.to_str().expect("utf8"),
        "--record-dir",
        records.to_str().expect("utf8"),
    ]));
    let values = block_values(&f.read_env());
    let get = |k: &str| {
        values
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k} not in the block: {values:?}"))
    };
    let hermes_bin = get("HERMES_BIN");
    assert_eq!(PathBuf::from(&hermes_bin), f.link());

    // As the dispatcher does it: exec $HERMES_BIN with the gateway's env
    // (which .env filled). PATH holds no `hermes`, so only
    // WORKER_SHIM_TARGET can lead to the real one.
    let out = Command::new(&hermes_bin)
        .args(["chat", "-q", "work kanban task t_1"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &f.root)
        .env("WORKER_SHIM_TARGET", get("WORKER_SHIM_TARGET"))
        .env("WORKER_SHIM_RECORD_DIR", get("WORKER_SHIM_RECORD_DIR"))
        .output()
        .expect("run the wired hermes");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "real-hermes chat -q work kanban task t_1\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));

    // The shim wrote its exit record for that run.
    let record = std::fs::read_dir(&records)
        .expect("record dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("an exit record");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).expect("read record")).expect("JSON");
    assert_eq!(
        doc["argv"][0].as_str(),
        Some(f.fake_hermes().to_str().expect("utf8"))
    );
    assert_eq!(doc["exit"]["code"], 0);
}
