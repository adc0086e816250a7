"""Collects, per incident and setup, what the control run and the rescued run
did, and renders the side-by-side table printed at the end of the session."""

from __future__ import annotations

from dataclasses import dataclass, field

ARMS = ("control", "rescued")


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
        rows = [("incident", "setup", "control (no tools)", "rescued (shim+watchdog)")]
        for inc, setup in self.order:
            rows.append((inc, setup,
                         self.cells[(inc, setup, "control")].text() if (inc, setup, "control") in self.cells else "not run",
                         self.cells[(inc, setup, "rescued")].text() if (inc, setup, "rescued") in self.cells else "not run"))
        out = []
        for i, r in enumerate(rows):
            out.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in r) + " |")
            if i == 0:
                out.append("|---|---|---|---|")
        return "\n".join(out)
