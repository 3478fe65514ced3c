"""What every warning is built with (围标串标、评标不公预警): the signal and its evidence."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from schemas.canonical import canonical_json
from schemas.signals import (
    FAMILY,
    Evidence,
    Signal,
    SignalKind,
)

MAX_EVIDENCE = 24
"""Evidence items kept per signal: enough to look at, bounded for a hostile record."""


# --- building signals ----------------------------------------------------------------------------


def build_signal(
    kind: SignalKind,
    score: float,
    subjects: Iterable[str],
    zh: str,
    en: str,
    evidence: Iterable[Evidence],
    related: Iterable[str] = (),
) -> Signal:
    subjects_sorted = sorted(set(subjects))
    ev = sorted(
        {
            (e.session_id, e.seq if e.seq is not None else -1, e.ref, e.note): e for e in evidence
        }.values(),
        key=lambda e: (e.session_id, e.seq if e.seq is not None else -1, e.ref, e.note),
    )[:MAX_EVIDENCE]
    ident = hashlib.sha256(
        canonical_json(
            {
                "kind": kind,
                "subjects": subjects_sorted,
                "evidence": [e.model_dump(mode="json") for e in ev],
            }
        )
    ).hexdigest()
    return Signal(
        id=ident,
        kind=kind,
        family=FAMILY[kind],
        score=round(min(1.0, max(0.0, score)), 3),
        subjects=subjects_sorted,
        related=sorted(set(related)),
        explanation_zh=zh,
        explanation_en=en,
        evidence=ev,
    )


def event_evidence(session_id: str, seq: int | None, note: str) -> Evidence:
    ref = f"event:{seq}" if seq is not None else f"session:{session_id}"
    return Evidence(session_id=session_id, seq=seq, ref=ref, note=note[:500])
