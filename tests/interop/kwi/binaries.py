"""Where the Rust binaries under test are found: ``$KW_BIN_DIR``, else
``<repo>/target/debug`` (``tests/interop/run`` builds them with
``cargo build --workspace --bins`` first)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SHIM = "worker-shim"
WATCHDOG = "kanban-watchdog"


def bin_dir() -> Path:
    return Path(os.environ.get("KW_BIN_DIR") or REPO / "target" / "debug")


def require(name: str) -> Path:
    """The binary's path; fails the test (never skips) when it is missing."""
    p = bin_dir() / name
    build = os.environ.get("KW_BUILD_STATUS", "")
    if "FAILED" in build and os.environ.get("KW_ALLOW_STALE_BINARIES") != "1":
        pytest.fail(
            f"RESCUED RUN NEEDS THE RUST BINARIES: {build}; whatever is in {bin_dir()} is stale "
            f"(KW_ALLOW_STALE_BINARIES=1 runs against it anyway).", pytrace=False)
    if p.is_file() and os.access(p, os.X_OK):
        return p
    hint = f" The entry point's build said: {build}." if build else ""
    pytest.fail(
        f"RESCUED RUN NEEDS THE RUST BINARIES: `{name}` not found in {bin_dir()} "
        f"(set KW_BIN_DIR, or run `cargo build --workspace --bins`).{hint}",
        pytrace=False,
    )
