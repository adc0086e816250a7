"""Fixtures for the interop suite against the REAL hermes-agent==0.19.0.

Each test gets a throwaway HERMES_HOME (and everything else) under
$KW_INTEROP_OUT/<test>/, a process registry whose finalizer kills every
process group it started plus every process carrying the test's marker
variable, and an outcome cell for the control-vs-rescued table.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kwi.fake_provider import FakeProvider  # noqa: E402
from kwi.outcomes import Outcomes  # noqa: E402
from kwi.procs import Procs  # noqa: E402
from kwi.scenario import Scenario  # noqa: E402
from kwi.webhook import WebhookReceiver  # noqa: E402

OUTCOMES = Outcomes()
HERMES_VERSION = "0.19.0"


def _default_venv() -> Path:
    cache = os.environ.get("KW_CACHE_DIR") or os.path.expanduser("~/.cache/kanban-watchdog")
    return Path(cache) / f"hermes-{HERMES_VERSION}-venv"


@pytest.fixture(scope="session")
def venv() -> Path:
    v = Path(os.environ.get("KW_HERMES_VENV") or _default_venv())
    hermes = v / "bin" / "hermes"
    if not hermes.exists():
        pytest.exit(f"no Hermes venv at {v}: run tests/interop/run (it creates it)", returncode=3)
    r = subprocess.run([str(v / "bin" / "python"), "-c",
                        "import importlib.metadata as m; print(m.version('hermes-agent'))"],
                       capture_output=True, text=True)
    got = r.stdout.strip()
    if got != HERMES_VERSION:
        pytest.exit(f"{v} has hermes-agent {got!r}, the suite needs {HERMES_VERSION}", returncode=3)
    return v


@pytest.fixture(scope="session")
def outdir() -> Path:
    d = Path(os.environ.get("KW_INTEROP_OUT") or f"/tmp/kw-interop-{time.strftime('%Y%m%d-%H%M%S')}")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def root(request, outdir) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    d = outdir / name
    if d.exists():
        d = outdir / f"{name}-{uuid.uuid4().hex[:6]}"
    d.mkdir(parents=True)
    return d


@pytest.fixture
def procs(root):
    p = Procs(uuid.uuid4().hex, root / "proc-logs")
    yield p
    swept = p.cleanup()
    if swept:
        # Not an error: workers spawned by a gateway, gateways started by the
        # watchdog's restart command, etc. are expected here.
        (root / "swept-processes.txt").write_text("\n".join(swept) + "\n")


@pytest.fixture
def fake_provider():
    fp = FakeProvider().start()
    yield fp
    fp.stop()


@pytest.fixture
def webhook(root):
    w = WebhookReceiver().start()
    yield w
    w.dump(root / "webhook-posts.json")
    w.stop()


@pytest.fixture
def make_scenario(request, root, venv, procs):
    made: list[Scenario] = []
    request.node._kwi_scenarios = made

    def make(**kw) -> Scenario:
        s = Scenario(root, venv, procs, **kw)
        made.append(s)
        return s

    return make


@pytest.fixture
def outcome(request):
    def cell(incident: str, setup: str, arm: str):
        c = OUTCOMES.cell(incident, setup, arm)
        c.notes.clear()
        c.verdict = "running"
        request.node._kwi_cell = c
        return c

    return cell


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    cell = getattr(item, "_kwi_cell", None)
    if rep.failed:
        for s in getattr(item, "_kwi_scenarios", []):
            try:
                rep.sections.append(("interop diagnostics", s.diagnostics()))
            except Exception as e:  # pragma: no cover
                rep.sections.append(("interop diagnostics", f"failed: {e!r}"))
    if cell is None:
        return
    if rep.when == "call":
        if rep.passed:
            cell.verdict = "PASS"
        elif rep.failed:
            msg = str(getattr(rep, "longreprtext", "") or rep.longrepr)
            first = next((ln.strip() for ln in msg.splitlines() if ln.strip().startswith("E ")), "")
            if not first:
                first = msg.strip().splitlines()[-1] if msg.strip() else "failed"
            cell.verdict = "FAIL (" + first.lstrip("E ").strip()[:160] + ")"
        elif rep.skipped:
            cell.verdict = "SKIPPED"
    elif rep.failed:
        cell.verdict = f"ERROR in {rep.when}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not OUTCOMES.order:
        return
    table = OUTCOMES.table()
    terminalreporter.write_sep("=", "interop: control vs rescued")
    terminalreporter.write_line(table)
    out = os.environ.get("KW_INTEROP_OUT")
    if out:
        try:
            Path(out, "summary.md").write_text(table + "\n")
            terminalreporter.write_line(f"(table written to {out}/summary.md)")
        except OSError:
            pass
