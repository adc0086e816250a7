"""EVERYTHING the suite assumes about kanban-watchdog's own interfaces lives
here (config keys, CLI, /status and /metrics, alert JSON, exit-record JSON,
board event kinds), so a rename on the Rust side is a one-line change.

The Hermes board stays the primary oracle; these helpers only add evidence.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .procs import Procs, wait_for

# -- board events the watchdog writes (kinds prefixed "watchdog_") -----------
PARKED_KINDS = ("watchdog_parked",)
RELEASED_KINDS = ("watchdog_released",)


def is_watchdog_event(kind: str) -> bool:
    return kind.startswith("watchdog_")


def is_parked_event(kind: str) -> bool:
    return kind in PARKED_KINDS


def is_released_event(kind: str) -> bool:
    return kind in RELEASED_KINDS


# -- exit records written by worker-shim ----------------------------------------
def read_records(record_dir: Path) -> list[dict]:
    """All records under the dir, including ones the watchdog moved (e.g. done/)."""
    out = []
    if not record_dir.exists():
        return out
    for p in sorted(record_dir.rglob("*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and "exit" in rec:
            rec["_path"] = str(p)
            out.append(rec)
    return out


def record_task(rec: dict) -> str | None:
    return (rec.get("task") or {}).get("id")


def record_failure(rec: dict) -> dict:
    return rec.get("failure") or {}


def record_failure_class(rec: dict) -> str | None:
    return record_failure(rec).get("class")


def record_resets_at(rec: dict) -> int | None:
    """failure.resets_at: epoch seconds (an int), or an RFC 3339 string."""
    v = record_failure(rec).get("resets_at")
    if v is None or isinstance(v, (int, float)):
        return None if v is None else int(v)
    try:
        from datetime import datetime
        return int(datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def record_reported_code(rec: dict) -> int | None:
    return (rec.get("exit") or {}).get("reported_code")


def is_rate_limit_class(cls: str | None) -> bool:
    return bool(cls) and any(w in cls.lower() for w in ("rate", "quota", "usage", "limit"))


# -- alerts (JSON POST to alerts.webhook.url) ------------------------------------
def alert_status(body) -> str | None:
    """"firing" / "resolved"."""
    return body.get("status") if isinstance(body, dict) else None


def alert_text(body) -> str:
    return str(body.get("text", "")) if isinstance(body, dict) else str(body)


def alert_event(body) -> str:
    """The incident key.  The brief said `event`; kanban-watchdog sends it as
    `alert` (e.g. "dispatcher_stalled", "provider_unhealthy:<provider>")."""
    if not isinstance(body, dict):
        return ""
    return str(body.get("event") or body.get("alert") or "")


def alert_is_repeat(body) -> bool:
    """A reminder of an incident already reported (sent every alerts.repeat_interval)."""
    return bool(body.get("repeat")) if isinstance(body, dict) else False


def is_stall_alert(body) -> bool:
    key = alert_event(body).lower()
    if key:
        return "stall" in key or key.startswith("dispatcher")
    return "stall" in alert_text(body).lower()


def status_stalled(status) -> bool | None:
    """/status: dispatcher.stalled (None when /status has no such field)."""
    try:
        return bool(status["dispatcher"]["stalled"])
    except (KeyError, TypeError):
        return None


def status_restart_count(status) -> int | None:
    """/status: how many restart commands the watchdog ran (counters.restarts;
    the `restarts` list also holds "recovered"/"not_recovered" entries)."""
    try:
        return int(status["counters"]["restarts"])
    except (KeyError, TypeError, ValueError):
        return None


# -- process, config, HTTP ----------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_config(*, hermes_home: Path, record_dir: Path, state_dir: Path, listen: str,
                restart_command: list[str], webhook_url: str | None, interval: str = "1s",
                stall_after: str = "8s", check_every: str = "500ms", margin: str = "1s") -> dict:
    cfg = {
        "hermes_home": str(hermes_home),
        "record_dir": str(record_dir),
        "state_dir": str(state_dir),
        "retry": {"margin": margin, "jitter": "0s"},
        "dispatcher": {"interval": interval, "stall_after": stall_after, "check_every": check_every},
        "restart": {"command": restart_command, "burst": 3, "interval": "15m", "backoff_initial": "1s",
                    "recovery_grace": "30s"},
        "http": {"listen": listen},
    }
    if webhook_url:
        cfg["alerts"] = {"webhook": {"url": webhook_url}}
    return cfg


class Watchdog:
    """``kanban-watchdog run --config FILE --hermes-home DIR --record-dir DIR``."""

    def __init__(self, binary: Path, procs: Procs, workdir: Path, cfg: dict, env: dict[str, str]):
        self.binary = binary
        self.procs = procs
        self.workdir = workdir
        self.cfg = cfg
        self.env = env
        self.config_path = workdir / "watchdog.yaml"
        self.listen = cfg["http"]["listen"]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> "Watchdog":
        # JSON is YAML: no YAML library needed on the driver side.
        self.config_path.write_text(json.dumps(self.cfg, indent=2) + "\n")
        argv = [str(self.binary), "run", "--config", str(self.config_path),
                "--hermes-home", self.cfg["hermes_home"], "--record-dir", self.cfg["record_dir"]]
        self.proc = self.procs.spawn("watchdog", argv, self.env)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"kanban-watchdog exited with code {self.proc.returncode} before serving /status "
                    f"(not implemented yet, or refused the config).\nargv: {argv}\nconfig:\n"
                    f"{self.config_path.read_text()}\nlog:\n{self.log()[-4000:]}")
            try:
                return self.status()
            except (OSError, ValueError):
                return None

        wait_for(up, timeout, "kanban-watchdog serving GET /status", interval=0.25,
                 on_timeout=lambda: self.log()[-4000:])
        return self

    def log(self) -> str:
        return self.procs.log_text("watchdog")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str, timeout: float = 3) -> bytes:
        with urllib.request.urlopen(f"http://{self.listen}{path}", timeout=timeout) as r:
            return r.read()

    def status(self) -> dict:
        return json.loads(self.get("/status"))

    def metrics(self) -> str:
        return self.get("/metrics").decode(errors="replace")

    def status_or_error(self) -> object:
        try:
            return self.status()
        except (OSError, ValueError, urllib.error.URLError) as e:
            return f"(no /status: {e!r})"


def status_mentions(status: object, word: str) -> bool:
    """Loose check that /status says something about ``word`` (e.g. "stall")."""
    return word.lower() in json.dumps(status).lower()


def shim_masquerade_dir(root: Path, shim_binary: Path) -> Path:
    """The operator wiring: a dir holding ``hermes -> worker-shim``; HERMES_BIN points at it."""
    d = root / "shimbin"
    d.mkdir(exist_ok=True)
    link = d / "hermes"
    if not link.exists():
        os.symlink(shim_binary, link)
    return link


def shim_env(link: Path, target: Path, record_dir: Path) -> dict[str, str]:
    return {"HERMES_BIN": str(link), "WORKER_SHIM_TARGET": str(target), "WORKER_SHIM_RECORD_DIR": str(record_dir)}


# -- added for test_untrusted_output.py ("worker output is untrusted") ----------------
# New functions only; nothing above changes.

# A ready task held (before any run) for an unhealthy provider gets this event
# instead of watchdog_parked (hermes-board's Kind::Held).
HELD_KINDS = ("watchdog_held",)


def is_held_event(kind: str) -> bool:
    return kind in HELD_KINDS


def is_waiting_event(kind: str) -> bool:
    """The watchdog put the task in scheduled: parked after a run, or held before one."""
    return is_parked_event(kind) or is_held_event(kind)

def record_exit_code(rec: dict) -> int | None:
    """exit.code: the worker's own exit code (None when killed by a signal)."""
    return (rec.get("exit") or {}).get("code")


def record_run_at_exit(rec: dict) -> dict | None:
    """run_at_exit {open, outcome}: the record's kanban run as the shim read it
    (read-only) from the board after the worker exited; only present when the
    shim classified a failure and could ask the board."""
    v = rec.get("run_at_exit")
    return v if isinstance(v, dict) else None


def record_reported_by_worker(rec: dict) -> bool:
    """The worker ended its run itself (`kanban complete` / `kanban block`)."""
    r = record_run_at_exit(rec)
    return bool(r) and not r.get("open") and r.get("outcome") in ("completed", "blocked")


def record_handled(rec: dict) -> bool:
    """The watchdog handled the record: it moved it to <record_dir>/done/."""
    return Path(rec.get("_path", "")).parent.name == "done"


def status_generated_at(status) -> int | None:
    """/status: generated_at (epoch s), refreshed at every check and between
    checks at most every 100 ms. It only advances while the daemon loop runs."""
    try:
        return int(status["generated_at"])
    except (KeyError, TypeError, ValueError):
        return None


def status_provider(status, name: str) -> dict | None:
    """/status: the providers[] entry {name, state, since, until, class, reason}."""
    try:
        return next((p for p in status["providers"] if p.get("name") == name), None)
    except (KeyError, TypeError):
        return None


def status_provider_unhealthy(status, name: str) -> bool:
    p = status_provider(status, name)
    return bool(p) and p.get("state") == "unhealthy"


def status_parked_tasks(status) -> list[str]:
    """/status: ids of the tasks the watchdog holds in scheduled (parked[].task)."""
    try:
        return [p["task"] for p in status["parked"]]
    except (KeyError, TypeError):
        return []


def watchdog_cli(watchdog: "Watchdog", *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """`kanban-watchdog ARGS --config <the running daemon's config>` (operator CLI)."""
    argv = [str(watchdog.binary), *args, "--config", str(watchdog.config_path)]
    return subprocess.run(argv, env=watchdog.env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def provider_reset(watchdog: "Watchdog", name: str) -> subprocess.CompletedProcess:
    """`kanban-watchdog provider reset --config FILE NAME`: drops a request file in
    <state_dir>/requests/, which the running daemon picks up (inotify)."""
    r = watchdog_cli(watchdog, "provider", "reset", name)
    if r.returncode != 0:
        raise AssertionError(f"kanban-watchdog provider reset {name} exited {r.returncode}\n"
                             f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def status_cli_json(watchdog: "Watchdog") -> dict:
    """`kanban-watchdog status --json` (from the running daemon, or its saved state)."""
    r = watchdog_cli(watchdog, "status", "--json")
    if r.returncode != 0:
        raise AssertionError(f"kanban-watchdog status --json exited {r.returncode}\n{r.stderr}")
    return json.loads(r.stdout)


# -- added for the version matrix (issue 16) -------------------------------------------

def released_to(event: dict) -> str | None:
    """A watchdog_released event: the status the watchdog put the task back in
    (payload `status`: `ready`, `todo`, or on 0.22 `review` for a review run)."""
    p = event.get("payload")
    return p.get("status") if isinstance(p, dict) else None
