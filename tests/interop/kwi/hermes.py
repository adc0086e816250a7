"""The real Hermes Agent (0.19.0, or the 0.22 fork: kwi/versions.py), driven
through its own CLI and read through its own board (sqlite3, read-only).  This
is the suite's primary oracle."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from .procs import Procs, wait_for

TERMINAL = ("done", "blocked", "archived")


class Hermes:
    """One throwaway Hermes root (``HERMES_HOME``) with its board."""

    def __init__(self, root: Path, venv: Path, procs: Procs, version: str = "0.19.0"):
        self.version = version
        self.root = root
        self.home = root / "hermes"
        self.home.mkdir(parents=True, exist_ok=True)
        self.venv = venv
        self.bin = venv / "bin" / "hermes"
        self.procs = procs
        self.db_path = self.home / "kanban.db"
        self.base_env = procs.env(
            HERMES_HOME=str(self.home),
            PATH=f"{venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            # Never let a test touch a developer's real ~/.hermes.
            HOME=str(root / "home"),
            PYTHONUNBUFFERED="1",
        )
        for k in ("HERMES_BIN", "HERMES_KANBAN_DB", "HERMES_KANBAN_HOME", "HERMES_KANBAN_BOARD",
                  "HERMES_KANBAN_TASK", "HERMES_KANBAN_RUN_ID", "HERMES_PROFILE", "WORKER_SHIM_TARGET",
                  "WORKER_SHIM_RECORD_DIR", "HERMES_INFERENCE_PROVIDER"):
            self.base_env.pop(k, None)
        (root / "home").mkdir(exist_ok=True)
        self.cli("kanban", "init")

    # -- configuration ---------------------------------------------------
    def write_config(self, dispatch_interval: float | None = None, extra: str = "") -> None:
        lines = []
        if dispatch_interval is not None:
            lines += ["kanban:", f"  dispatch_interval_seconds: {dispatch_interval}"]
        (self.home / "config.yaml").write_text("\n".join(lines) + "\n" + extra)

    def add_profile(self, name: str, base_url: str | None = None, model: str = "test-model",
                    api_max_retries: int = 1) -> Path:
        """A profile dir (what ``profile_exists`` checks); with ``base_url`` it
        points at a fake OpenAI-compatible provider (``provider: custom``)."""
        p = self.home / "profiles" / name
        p.mkdir(parents=True, exist_ok=True)
        text = ""
        if base_url:
            text = (f"model:\n  provider: custom\n  default: {model}\n  base_url: {base_url}\n"
                    f"  api_key: dummy\nagent:\n  api_max_retries: {api_max_retries}\n")
        (p / "config.yaml").write_text(text)
        return p

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(self.base_env)
        env.update(extra)
        return env

    # -- CLI ---------------------------------------------------------------
    def cli(self, *args: str, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess:
        r = subprocess.run([str(self.bin), *args], env=env or self.base_env, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"hermes {' '.join(args)} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
        return r

    def create_task(self, title: str, assignee: str = "coder", *extra: str, board: str | None = None) -> str:
        board = board or getattr(self, "board", None)
        r = self.cli("kanban", *self._board_args(board), "create", title, "--assignee", assignee, "--json", *extra)
        return json.loads(r.stdout)["id"]

    @staticmethod
    def _board_args(board: str | None) -> list[str]:
        return [] if board in (None, "default") else ["--board", board]

    def create_board(self, slug: str) -> Path:
        """`hermes kanban boards create SLUG`: <home>/kanban/boards/<slug>/kanban.db."""
        self.cli("kanban", "boards", "create", slug)
        return self.board_db(slug)

    def board_db(self, board: str | None = None) -> Path:
        if board in (None, "default"):
            return self.db_path
        return self.home / "kanban" / "boards" / board / "kanban.db"

    def on_board(self, board: str) -> "Hermes":
        """The same Hermes root, read and driven on another board of it."""
        other = object.__new__(Hermes)
        other.__dict__.update(self.__dict__)
        other.db_path = self.board_db(board)
        other.board = board
        return other

    def worker_log(self, task_id: str, board: str | None = None) -> Path:
        board = board or getattr(self, "board", None)
        if board in (None, "default"):
            return self.home / "kanban" / "logs" / f"{task_id}.log"
        return self.home / "kanban" / "boards" / board / "logs" / f"{task_id}.log"

    def journal_mode(self) -> str:
        """The board's journal mode as it is on disk (WAL or a rollback journal)."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        finally:
            conn.close()

    def columns(self, table: str) -> list[str]:
        return [r["name"] for r in self._q(f"SELECT name FROM pragma_table_info('{table}')")]

    def show_json(self, task_id: str) -> dict:
        b = self._board_args(getattr(self, "board", None))
        return json.loads(self.cli("kanban", *b, "show", task_id, "--json").stdout)

    def show_text(self, task_id: str) -> str:
        return self.cli("kanban", *self._board_args(getattr(self, "board", None)), "show", task_id).stdout

    def dispatch_once(self, env: dict[str, str] | None = None) -> dict:
        r = self.cli("kanban", *self._board_args(getattr(self, "board", None)), "dispatch", "--json", env=env)
        try:
            return json.loads(r.stdout)
        except ValueError:
            return {"raw": r.stdout}

    # -- board (read-only SQL) ---------------------------------------------
    def _q(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def task(self, task_id: str) -> dict:
        rows = self._q("SELECT * FROM tasks WHERE id = ?", (task_id,))
        assert rows, f"task {task_id} not on the board"
        return dict(rows[0])

    def status(self, task_id: str) -> str:
        return self._q("SELECT status FROM tasks WHERE id = ?", (task_id,))[0]["status"]

    def statuses(self) -> dict[str, str]:
        return {r["id"]: r["status"] for r in self._q("SELECT id, status FROM tasks")}

    def events(self, task_id: str | None = None) -> list[dict]:
        if task_id is None:
            rows = self._q("SELECT * FROM task_events ORDER BY id")
        else:
            rows = self._q("SELECT * FROM task_events WHERE task_id = ? ORDER BY id", (task_id,))
        out = []
        for r in rows:
            d = dict(r)
            try:
                d["payload"] = json.loads(d["payload"]) if d["payload"] else None
            except ValueError:
                pass
            out.append(d)
        return out

    def event_kinds(self, task_id: str) -> list[str]:
        return [e["kind"] for e in self.events(task_id)]

    def runs(self, task_id: str) -> list[dict]:
        return [dict(r) for r in self._q("SELECT * FROM task_runs WHERE task_id = ? ORDER BY id", (task_id,))]

    def attempts(self, task_id: str) -> int:
        """Worker launches = ``spawned`` events."""
        return sum(1 for k in self.event_kinds(task_id) if k == "spawned")

    def max_event_id(self) -> int:
        rows = self._q("SELECT COALESCE(MAX(id), 0) AS m FROM task_events")
        return rows[0]["m"]

    def events_since(self, event_id: int) -> list[dict]:
        return [e for e in self.events() if e["id"] > event_id]

    def describe(self, task_id: str) -> str:
        """Diagnostics for failure messages."""
        try:
            t = self.task(task_id)
            ev = [(e["kind"], e["payload"]) for e in self.events(task_id)]
            runs = [(r["id"], r["status"], r["outcome"], r["error"]) for r in self.runs(task_id)]
            return (f"task {task_id}: status={t['status']} failures={t.get('consecutive_failures')} "
                    f"last_error={t.get('last_failure_error')!r}\n events={ev}\n runs={runs}")
        except Exception as e:  # pragma: no cover
            return f"(cannot describe {task_id}: {e!r})"

    def wait_status(self, task_id: str, wanted: str | tuple[str, ...], timeout: float) -> str:
        wanted_t = (wanted,) if isinstance(wanted, str) else wanted
        return wait_for(lambda: (s := self.status(task_id)) in wanted_t and s, timeout,
                        f"task {task_id} status in {wanted_t}", on_timeout=lambda: self.describe(task_id))

    # -- gateway -----------------------------------------------------------
    @property
    def gateway_log(self) -> Path:
        return self.home / "logs" / "gateway.log"

    def gateway_pid(self) -> int | None:
        try:
            return int(json.loads((self.home / "gateway.pid").read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def start_gateway(self, env: dict[str, str], name: str = "gateway", replace: bool = False):
        argv = [str(self.bin), "gateway", "run"] + (["--replace"] if replace else [])
        p = self.procs.spawn(name, argv, env)
        return p

    def wait_dispatcher_up(self, timeout: float = 45) -> None:
        """The embedded dispatcher logs this once, after its 5 s start-up delay."""
        wait_for(lambda: self.gateway_log.exists() and "kanban dispatcher: embedded in gateway" in
                 self.gateway_log.read_text(errors="replace"), timeout, "gateway's embedded kanban dispatcher up",
                 on_timeout=lambda: self.gateway_log.read_text(errors="replace")[-3000:] if self.gateway_log.exists() else "no gateway.log")


class BoardSampler:
    """Polls task statuses all along a scenario, so a transient state (e.g. a
    short-lived ``blocked``) cannot hide between two assertions."""

    def __init__(self, hermes: Hermes, interval: float = 0.15):
        self.hermes = hermes
        self.interval = interval
        self.t0 = time.time()
        self.timeline: dict[str, list[tuple[float, str]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="board-sampler", daemon=True)

    def start(self) -> "BoardSampler":
        self._thread.start()
        return self

    def _sample(self) -> None:
        try:
            for tid, st in self.hermes.statuses().items():
                tl = self.timeline.setdefault(tid, [])
                if not tl or tl[-1][1] != st:
                    tl.append((time.time(), st))
        except sqlite3.Error:
            pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()  # the final state, whatever the last poll saw

    def seen(self, task_id: str) -> set[str]:
        return {s for _, s in self.timeline.get(task_id, [])}

    def first_time(self, task_id: str, status: str) -> float | None:
        for t, s in self.timeline.get(task_id, []):
            if s == status:
                return t
        return None

    def render(self, task_id: str) -> str:
        return " -> ".join(f"{s}@{t - self.t0:.1f}s" for t, s in self.timeline.get(task_id, []))
