"""Process handling and polling: every process the suite starts is tracked and
killed (whole process group) in fixture finalizers, and every process that
inherited this test's marker variable is swept up too (workers spawned by a
gateway, a gateway started by the watchdog's restart command, ...)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

MARKER_VAR = "KW_INTEROP_TOKEN"


class WaitTimeout(AssertionError):
    pass


def wait_for(pred: Callable[[], T], timeout: float, desc: str, interval: float = 0.2,
             on_timeout: Callable[[], str] | None = None) -> T:
    """Poll ``pred`` until it returns a truthy value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        last = pred()
        if last:
            return last  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            extra = ""
            if on_timeout is not None:
                try:
                    extra = "\n" + on_timeout()
                except Exception as e:  # pragma: no cover - diagnostics only
                    extra = f"\n(diagnostics failed: {e!r})"
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for: {desc} (last value: {last!r}){extra}")
        time.sleep(interval)


def hold_for(pred: Callable[[], bool], seconds: float, desc: str, interval: float = 0.2) -> None:
    """Assert ``pred`` stays true for ``seconds`` (a bounded observation window)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pred():
            raise AssertionError(f"condition broke within the {seconds:.0f}s window: {desc}")
        time.sleep(interval)


def _pids_with_marker(token: str) -> list[int]:
    want = f"{MARKER_VAR}={token}".encode()
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if want in env:
            out.append(pid)
    return out


def _signal(pid: int, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def pid_alive(pid: int) -> bool:
    """True when pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def pid_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


class Procs:
    """Starts processes in their own session (so a process group can be killed)
    with the per-test marker in their environment, and kills them all at the end."""

    def __init__(self, token: str, logdir: Path):
        self.token = token
        self.logdir = logdir
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.started: list[tuple[str, subprocess.Popen]] = []

    def env(self, base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env[MARKER_VAR] = self.token
        env.update(extra)
        return env

    def spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: str | Path | None = None) -> subprocess.Popen:
        env = dict(env)
        env[MARKER_VAR] = self.token
        log = open(self.logdir / f"{name}.log", "ab")
        p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        log.close()
        self.started.append((name, p))
        # Reap promptly, as a service manager would: a zombie still looks alive to
        # `kill -0`, which would confuse `--replace` logic and liveness checks.
        threading.Thread(target=p.wait, name=f"reap-{name}", daemon=True).start()
        return p

    def log_text(self, name: str) -> str:
        try:
            return (self.logdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, p: subprocess.Popen, timeout: float = 5.0) -> None:
        if p.poll() is not None:
            return
        _signal(p.pid, signal.SIGCONT, True)
        _signal(p.pid, signal.SIGTERM, True)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal(p.pid, signal.SIGKILL, True)
            p.wait(5)

    def cleanup(self) -> list[str]:
        """Kill everything; return a description of what had to be killed by the sweep."""
        for _, p in reversed(self.started):
            if p.poll() is None:
                if pid_state(p.pid) in ("T", "t"):
                    # A stopped dispatcher would run one more tick if continued: kill it as it is.
                    _signal(p.pid, signal.SIGKILL, True)
                    continue
                _signal(p.pid, signal.SIGCONT, True)
                _signal(p.pid, signal.SIGTERM, True)
        deadline = time.monotonic() + 5
        for _, p in self.started:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(p.pid, signal.SIGKILL, True)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        swept: list[str] = []
        for _ in range(10):
            pids = _pids_with_marker(self.token)
            pids = [pid for pid in pids if pid_alive(pid)]
            if not pids:
                break
            for pid in pids:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    cmd = "?"
                swept.append(f"{pid}: {cmd[:120]}")
                _signal(pid, signal.SIGCONT, False)
                _signal(pid, signal.SIGKILL, False)
            time.sleep(0.2)
        return swept


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def sigstop(pid: int, timeout: float = 5) -> None:
    """SIGSTOP one process (not its group) and wait until the kernel shows it stopped."""
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: pid_state(pid) in ("T", "t"), timeout, f"pid {pid} stopped")
