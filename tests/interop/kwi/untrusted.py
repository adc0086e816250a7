"""Helpers for test_untrusted_output.py ("worker output is untrusted"): a stand-in
that reports its run and THEN prints a provider failure, a profile whose primary
provider is openai-codex, and observation windows counted in watchdog checks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from . import watchdog_api as wd
from .hermes import Hermes
from .procs import wait_for
from .scenario import Scenario

HERE = Path(__file__).resolve().parents[1]
STANDIN_REPORTER = HERE / "bin" / "standin-reporter"

# 2100-01-01T00:00:00Z: a usage limit that will not reset while anybody watches.
FAR_RESET = 4102444800


def use_reporter_standin(s: Scenario) -> None:
    """Run bin/standin-reporter behind the shim instead of bin/standin-worker. It
    takes the same control file (s.standin(...)) and hands every mode it does not
    know to standin-worker. Call before the dispatcher and the watchdog start."""
    assert s.rescued and s.worker == "standin", "the reporter stand-in is for rescued stand-in scenarios"
    assert s.gateway_proc is None and s.loop_proc is None and s.watchdog is None, "call before starting anything"
    s.env["WORKER_SHIM_TARGET"] = str(STANDIN_REPORTER)


def set_primary_provider(h: Hermes, profile: str, provider: str = "openai-codex",
                         model: str = "gpt-5-codex") -> Path:
    """The profile's config.yaml with `model.provider` = provider: the watchdog reads
    a profile's provider chain from it (primary first) to hold ready tasks of a
    profile whose provider is unhealthy. The stand-in never asks a provider."""
    p = h.home / "profiles" / profile
    p.mkdir(parents=True, exist_ok=True)
    cfg = p / "config.yaml"
    cfg.write_text(f"model:\n  provider: {provider}\n  default: {model}\n")
    return cfg


def wait_record_handled(record_dir: Path, task_id: str, timeout: float,
                        on_timeout: Callable[[], str] | None = None) -> dict:
    """The task's exit record, once the watchdog has handled it (moved to done/)."""
    def handled():
        recs = [r for r in wd.read_records(record_dir) if wd.record_task(r) == task_id]
        done = [r for r in recs if wd.record_handled(r)]
        return done[0] if done else None

    def diag():
        recs = [r for r in wd.read_records(record_dir) if wd.record_task(r) == task_id]
        text = "records for the task: " + repr([(r.get("_path"), r.get("exit"), r.get("failure"),
                                                  r.get("run_at_exit")) for r in recs])
        return text + ("\n" + on_timeout() if on_timeout else "")

    return wait_for(handled, timeout, f"the exit record of {task_id} handled (in records/done/)",
                    on_timeout=diag)


def observe_checks(watchdog: wd.Watchdog, checks: int, check_every: float,
                   broken: Callable[[dict], str | None], desc: str, since: float | None = None,
                   timeout: float = 20, interval: float = 0.2) -> tuple[dict, float]:
    """Assert that ``broken(status)`` stays None (no breakage) across at least
    ``checks`` watchdog checks from ``since`` (default: now).

    The daemon runs a full check every ``check_every`` while its loop runs, and
    /status's ``generated_at`` (epoch s, rounded down) only advances while it
    does. The window ends when /status was generated at or after
    since + (checks + 1) * check_every, so at least ``checks`` checks ran inside
    it even if one check started late. ``broken`` sees each /status polled (and
    may read the board), including the one that closes the window. Returns the
    last /status and how long the window lasted."""
    since = time.time() if since is None else since
    target = since + (checks + 1) * check_every
    deadline = time.monotonic() + timeout
    last_gen = None
    while True:
        status = watchdog.status()
        why = broken(status)
        if why:
            raise AssertionError(f"{desc}: broke {time.time() - since:.1f}s into the window: {why}")
        last_gen = wd.status_generated_at(status)
        if last_gen is not None and last_gen >= target:
            return status, time.time() - since
        if not watchdog.alive():
            raise AssertionError(f"{desc}: kanban-watchdog exited during the window\n{watchdog.log()[-2000:]}")
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{desc}: /status generated_at never reached {target:.1f} within {timeout:.0f}s "
                f"(last {last_gen}): the daemon loop is not running checks")
        time.sleep(interval)


def time_until(pred: Callable[[], object], timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until ``pred`` first holds (polled every ``interval``), or None
    when it did not within ``timeout``. For measuring, where wait_for asserts."""
    t0 = time.time()
    while True:
        if pred():
            return time.time() - t0
        if time.time() - t0 >= timeout:
            return None
        time.sleep(interval)
