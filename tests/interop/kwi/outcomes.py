"""Collects, per incident and setup, what the control run and the rescued run
did, and renders the side-by-side table printed at the end of the session."""

from __future__ import annotations

from dataclasses import dataclass, field

ARMS = ("control", "shim_only", "rescued")
HEADERS = {"control": "control (no tools)", "shim_only": "shim only (no watchdog)",
           "rescued": "rescued (shim+watchdog)"}


@dataclass
class Cell:
    incident: str
    setup: str
    arm: str
    notes: list[str] = field(default_factory=list)
    verdict: str = "not run"

    def note(self, text: str) -> None:
        self.notes.append(text)

    def text(self) -> str:
        body = "; ".join(self.notes) if self.notes else "-"
        return f"{self.verdict}: {body}"


class Outcomes:
    def __init__(self):
        self.cells: dict[tuple[str, str, str], Cell] = {}
        self.order: list[tuple[str, str]] = []

    def cell(self, incident: str, setup: str, arm: str) -> Cell:
        assert arm in ARMS, arm
        key = (incident, setup, arm)
        if (incident, setup) not in self.order:
            self.order.append((incident, setup))
        if key not in self.cells:
            self.cells[key] = Cell(incident, setup, arm)
        return self.cells[key]

    def table(self) -> str:
        arms = [a for a in ARMS if a != "shim_only" or any(k[2] == a for k in self.cells)]
        rows = [("incident", "setup", *(HEADERS[a] for a in arms))]
        for inc, setup in self.order:
            rows.append((inc, setup, *(self.cells[(inc, setup, a)].text() if (inc, setup, a) in self.cells
                                       else "not run" for a in arms)))
        out = []
        for i, r in enumerate(rows):
            out.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in r) + " |")
            if i == 0:
                out.append("|" + "---|" * len(r))
        return "\n".join(out)
