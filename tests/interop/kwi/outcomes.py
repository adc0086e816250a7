"""Collects, per incident, setup and Hermes version, what the control run and the
rescued run did, and renders the side-by-side table printed at the end of the
session (and written to $KW_INTEROP_OUT/summary.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

ARMS = ("control", "shim_only", "rescued")
HEADERS = {"control": "control (Hermes alone)", "shim_only": "shim only (no watchdog)",
           "rescued": "rescued (shim+watchdog)"}


@dataclass
class Cell:
    incident: str
    setup: str
    arm: str
    version: str = ""
    notes: list[str] = field(default_factory=list)
    verdict: str = "not run"
    seconds: float | None = None

    def note(self, text: str) -> None:
        self.notes.append(text)

    def text(self) -> str:
        body = "; ".join(self.notes) if self.notes else "-"
        took = f" [{self.seconds:.0f} s]" if self.seconds is not None else ""
        return f"{self.verdict}{took}: {body}"


class Outcomes:
    def __init__(self):
        self.cells: dict[tuple[str, str, str, str], Cell] = {}
        self.order: list[tuple[str, str]] = []
        self.versions: list[str] = []

    def cell(self, incident: str, setup: str, arm: str, version: str = "") -> Cell:
        assert arm in ARMS, arm
        key = (incident, setup, arm, version)
        if (incident, setup) not in self.order:
            self.order.append((incident, setup))
        if version not in self.versions:
            self.versions.append(version)
        if key not in self.cells:
            self.cells[key] = Cell(incident, setup, arm, version)
        return self.cells[key]

    def table(self) -> str:
        arms = [a for a in ARMS if a != "shim_only" or any(k[2] == a for k in self.cells)]
        rows = [("incident", "setup", "Hermes", *(HEADERS[a] for a in arms))]
        for inc, setup in sorted(self.order, key=lambda k: _incident_key(k[0])):
            for v in sorted(self.versions, key=_version_key):
                if not any(k[:2] == (inc, setup) and k[3] == v for k in self.cells):
                    continue
                rows.append((inc, setup, v, *(self.cells[(inc, setup, a, v)].text()
                                              if (inc, setup, a, v) in self.cells else "not run" for a in arms)))
        out = []
        for i, r in enumerate(rows):
            out.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in r) + " |")
            if i == 0:
                out.append("|" + "---|" * len(r))
        return "\n".join(out)


def _incident_key(incident: str) -> int:
    """Rows by incident number ("0: ...", "1: ..."); setups keep their order (stable sort)."""
    head = incident.split(":", 1)[0].strip()
    return int(head) if head.isdigit() else 999


def _version_key(v: str) -> tuple:
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (999, v)
