"""The kinds of session the server runs: one line per kind (its module declares the machine)."""

from __future__ import annotations

from server.domain import evaluation, opening
from server.domain.machine import Machine

MACHINES: dict[str, Machine] = {
    "opening": opening.MACHINE,
    "evaluation": evaluation.MACHINE,
}
