"""The facts of the warning signals (围标串标 / 评标不公预警), read from a session's record, and
the warnings raised as supervisor-only events.

The same functions serve the server (events from the store, envelopes and content keys from the
blob store) and ``bidbridge signals --archive`` (the same from an exported archive), so a
recomputation from the archive gives the same warnings with the same ids.

What is read, and from where:

* an opening (:func:`lot_facts`): the opening table (``table_published``: the bids that count,
  their prices), each bidder's uploads, rehearsals, decryptions and hall sign-ins with the
  ``origin`` the server noted (address, machine fingerprint, certificate serial), and, from each
  bid's decrypted package (the stored envelope opened with the kept content key), the sealing
  machine in the signed manifest, every document's hash and metadata (``server.signals.docmeta``) and
  the odd errors of bills of quantities exported as CSV;
* an evaluation (:func:`evaluation_facts`): the criteria of the detailed review, every expert's
  last signed score sheet (``sheet_content``), the ranking (``ranking_computed``) and the bidders'
  names; earlier evaluations sharing an expert are the history of the favour signal.

Signals are computed once the opening table is published (again when the record is generated,
for late evidence) and once an evaluation's ranking is computed; a failure here is logged and
never stops the opening or the evaluation.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from crypto.bid import decrypt_with_key
from crypto.errors import BidBridgeError
from crypto.package import MANIFEST_NAME, SUMMARY_NAME, verify_package
from schemas.events import EventRecord
from schemas.signals import (
    BidFacts,
    CriterionFact,
    DocumentFact,
    EvaluationFacts,
    LotFacts,
    Observation,
    SheetFact,
    Signal,
)
from server.core import Hub
from server.domain import signals as S
from server.domain.sessions import MACHINES
from server.signals import docmeta

log = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
"""Documents larger than this are hashed but their metadata is not read (bounded work)."""
OPENING_TRIGGERS = frozenset({"table_published", "record_generated"})
EVALUATION_TRIGGERS = frozenset({"ranking_computed", "report_generated"})


@dataclass(frozen=True)
class Package:
    """A bid's decrypted package: the ZIP (a file) and its SHA-256."""

    path: Path
    sha256: str


# --- an opening ------------------------------------------------------------------------------------


def lot_due(events: Sequence[EventRecord]) -> bool:
    """Lot signals are computed once the opening table is out (before it there are no prices,
    and supervisors may not learn who bid before the deadline, rule 4)."""
    return any(e.type == "table_published" for e in events)


def _observation(e: EventRecord) -> Observation | None:
    origin = e.payload.get("origin")
    if not isinstance(origin, dict):
        return None
    return Observation(
        at=e.at,
        addr=origin.get("addr"),
        machine=origin.get("machine"),
        cert_serial=origin.get("cert_serial"),
        seq=e.seq,
    )


def _yuan(fen: Any) -> Decimal | None:
    return Decimal(fen) / 100 if isinstance(fen, int) and not isinstance(fen, bool) else None


def _session_info(events: Sequence[EventRecord]) -> dict[str, Any]:
    first = next((e for e in events if e.type == "session_created"), None)
    return dict(first.payload) if first is not None else {}


def table_envelopes(events: Sequence[EventRecord]) -> dict[str, str]:
    """bidder -> the envelope SHA-256 of the bid in the (last) opening table."""
    table = next((e for e in reversed(events) if e.type == "table_published"), None)
    if table is None:
        return {}
    return {
        row["bidder"]: row["envelope_sha256"]
        for row in table.payload["table"]["rows"]
        if isinstance(row.get("envelope_sha256"), str)
    }


def lot_facts(
    session_id: str, events: Sequence[EventRecord], packages: Mapping[str, Package]
) -> LotFacts | None:
    """The facts of one opening from its log and its bids' decrypted packages (by envelope
    SHA-256; a bid without one contributes no document facts). None before the table."""
    table = next((e for e in reversed(events) if e.type == "table_published"), None)
    if table is None:
        return None
    info = _session_info(events)
    lot_id = str(info.get("lot_id") or table.payload["table"].get("lot_id") or session_id)
    project = str(info.get("project_code") or lot_id.split("/")[0])
    rows = table.payload["table"]["rows"]
    seen: dict[str, dict[str, list[Observation]]] = {
        r["bidder"]: {"uploads": [], "rehearsals": [], "decryptions": [], "logins": []}
        for r in rows
    }
    upload_seq: dict[tuple[str, str], int] = {}
    kinds = {
        "bid_uploaded": "uploads",
        "rehearsal_reported": "rehearsals",
        "bid_decrypted": "decryptions",
        "decryption_failed": "decryptions",
        "bidder_signed_in": "logins",
    }
    for e in events:
        bidder = e.payload.get("bidder")
        if e.type == "bid_uploaded" and isinstance(bidder, str):
            upload_seq[(bidder, e.payload["receipt"]["envelope_sha256"])] = e.seq
        kind = kinds.get(e.type)
        if kind is None or bidder not in seen:
            continue
        obs = _observation(e)
        if obs is not None:
            seen[bidder][kind].append(obs)
    bids = []
    for row in rows:
        code = row["bidder"]
        envelope = row.get("envelope_sha256") or ""
        sealing_seq = upload_seq.get((code, envelope))
        package = packages.get(envelope)
        machine, documents, boq = None, [], []
        if package is not None:
            machine, documents, boq = _package_facts(package, sealing_seq)
        bids.append(
            BidFacts(
                bidder_id=code,
                bidder_name=str(row.get("bidder_name") or code)[:200],
                price=_yuan(row.get("price_fen")),
                price_seq=table.seq if row.get("price_fen") is not None else None,
                sealing_machine=machine,
                sealing_seq=sealing_seq,
                documents=documents,
                boq_errors=boq,
                boq_seq=sealing_seq if boq else None,
                **seen[code],
            )
        )
    return LotFacts(session_id=session_id, project_id=project, lot_id=lot_id, bids=bids)


def _package_facts(
    package: Package, seq: int | None
) -> tuple[str | None, list[DocumentFact], list[str]]:
    """The sealing machine, the documents and the bill-of-quantities errors of one package."""
    info = verify_package(package.path)  # checked again: names, manifest, summary
    documents: list[DocumentFact] = []
    boq: list[str] = []
    with zipfile.ZipFile(package.path) as zf:
        for entry in info.manifest.files:
            if entry.path in (SUMMARY_NAME, MANIFEST_NAME):
                continue
            if entry.size > MAX_DOCUMENT_BYTES:
                documents.append(
                    DocumentFact(
                        path=entry.path[:1000],
                        sha256=entry.sha256,
                        size=entry.size,
                        package_sha256=package.sha256,
                        seq=seq,
                    )
                )
                continue
            data = zf.read(entry.path)
            documents.append(
                docmeta.document_fact(entry.path, data, package_sha256=package.sha256, seq=seq)
            )
            if entry.path.lower().endswith(".csv"):
                boq += docmeta.boq_errors(data)
    return info.manifest.sealing_machine, documents, sorted(set(boq))[: docmeta.MAX_SIGNATURES]


def open_packages(
    events: Sequence[EventRecord],
    envelope_of: Callable[[str], Path | None],
    keys: Mapping[str, str],
    workdir: Path,
) -> dict[str, Package]:
    """Decrypt the table's bids with the kept content keys into ``workdir`` (tag and signature
    checked again); a bid that cannot be opened is logged and left out."""
    out: dict[str, Package] = {}
    for bidder, envelope in sorted(table_envelopes(events).items()):
        cek = keys.get(envelope)
        path = envelope_of(envelope)
        if cek is None or path is None:
            continue
        target = workdir / f"{envelope}.zip"
        try:
            decrypt_with_key(path, bytes.fromhex(cek), target)
        except (BidBridgeError, OSError, ValueError) as exc:
            log.warning("signals: the bid of %s could not be opened: %s", bidder, exc)
            continue
        h = hashlib.sha256()
        with target.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        out[envelope] = Package(target, h.hexdigest())
    return out


# --- an evaluation -----------------------------------------------------------------------------------


def evaluation_due(events: Sequence[EventRecord]) -> bool:
    """Evaluation signals are computed once the ranking is computed (every sheet is in)."""
    return any(e.type == "ranking_computed" for e in events)


def evaluation_facts(session_id: str, events: Sequence[EventRecord]) -> EvaluationFacts | None:
    """The facts of one evaluation: criteria, each expert's last detailed score sheet, the
    ranking. None when the method scores nothing (lowest price) or no sheet is in."""
    info = _session_info(events)
    method = (info.get("config") or {}).get("method") or {}
    criteria = [
        CriterionFact(id=c["id"], stage="detailed", max=Decimal(c["max_points_x100"]) / 100)
        for c in method.get("criteria") or []
    ]
    sheets: dict[str, SheetFact] = {}
    for e in events:
        if e.type != "sheet_content" or e.payload.get("stage") != "detailed":
            continue
        scores: dict[str, dict[str, Decimal]] = {}
        for entry in (e.payload.get("content") or {}).get("scores") or []:
            scores.setdefault(entry["bidder"], {})[entry["criterion"]] = (
                Decimal(entry["points_x100"]) / 100
            )
        sheets[e.payload["expert_id"]] = SheetFact(seq=e.seq, scores=scores)
    if not criteria or not sheets:
        return None
    ranking: list[str] = []
    winner = None
    computed = next((e for e in reversed(events) if e.type == "ranking_computed"), None)
    if computed is not None:
        doc = (computed.payload.get("ranking") or {}).get("ranking") or {}
        entries = sorted(doc.get("entries") or [], key=lambda r: r.get("position", 0))
        ranking = [r["bidder"] for r in entries]
        recommended = doc.get("recommended") or []
        winner = recommended[0] if recommended else None
    names = {code: str(bid.get("name") or code) for code, bid in (info.get("bids") or {}).items()}
    project = str(info.get("lot_id") or session_id).split("/")[0]
    return EvaluationFacts(
        session_id=session_id,
        project_id=project,
        experts=sorted(sheets),
        criteria=criteria,
        sheets=sheets,
        ranking=ranking,
        winner=winner,
        bidder_names=names,
    )


# --- both --------------------------------------------------------------------------------------------


def session_kind(events: Sequence[EventRecord]) -> str:
    return str(_session_info(events).get("kind") or "opening")


def compute(
    session_id: str,
    events: Sequence[EventRecord],
    packages: Mapping[str, Package],
    history: Sequence[EvaluationFacts] = (),
) -> list[Signal]:
    """The signals the record supports now (empty before they are due)."""
    if session_kind(events) == "evaluation":
        if not evaluation_due(events):
            return []
        facts = evaluation_facts(session_id, events)
        return S.evaluation_signals(facts, history) if facts is not None else []
    lot = lot_facts(session_id, events, packages)
    return S.lot_signals(lot) if lot is not None else []


def recorded(events: Sequence[EventRecord]) -> list[dict[str, Any]]:
    """The ``signal`` events' payloads, in log order."""
    return [dict(e.payload) for e in events if e.type == "signal"]


def _shares_expert(a: EvaluationFacts, b: EvaluationFacts) -> bool:
    return not set(a.experts).isdisjoint(b.experts)


def history_of(facts: EvaluationFacts, earlier: Sequence[EvaluationFacts]) -> list[EvaluationFacts]:
    """The earlier evaluations that share an expert with ``facts``."""
    return [h for h in earlier if h.session_id != facts.session_id and _shares_expert(facts, h)]


# --- the server's side ---------------------------------------------------------------------------


async def _evaluation_history(hub: Hub, session_id: str) -> list[EvaluationFacts]:
    """Facts of the other evaluations on this server created before this one."""
    mine = await hub.store.events_after(session_id, 0, limit=1)
    if not mine:
        return []
    out = []
    for row in await hub.store.list_sessions(kind="evaluation"):
        if row.id == session_id:
            continue
        events = await hub.store.events_after(row.id, 0)
        if not events or events[0].at >= mine[0].at:
            continue
        facts = evaluation_facts(row.id, events)
        if facts is not None:
            out.append(facts)
    return out


async def signals_now(hub: Hub, session_id: str) -> list[Signal]:
    """Compute the session's signals from the store (packages decrypted into a temporary folder
    under the data folder, removed afterwards)."""
    events = await hub.store.events_after(session_id, 0)
    if session_kind(events) == "evaluation":
        if not evaluation_due(events):
            return []
        facts = evaluation_facts(session_id, events)
        if facts is None:
            return []
        history = history_of(facts, await _evaluation_history(hub, session_id))
        return S.evaluation_signals(facts, history)
    if not lot_due(events):
        return []
    keys = await hub.store.bid_keys(session_id)

    def envelope_of(sha: str) -> Path | None:
        return hub.blobs.path(sha) if hub.blobs.has(sha) else None

    hub.settings.data_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="signals-", dir=hub.settings.data_dir))
    try:
        packages = await asyncio.to_thread(open_packages, events, envelope_of, keys, work)
        return await asyncio.to_thread(compute, session_id, events, packages)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def raise_signals(hub: Hub, session_id: str) -> int:
    """Record the session's new warnings as ``signal`` events; returns how many were new."""
    row = await hub.store.load_session(session_id)
    if row is None:
        return 0
    found = await signals_now(hub, session_id)
    if not found:
        return 0
    payloads = [s.model_dump(mode="json") for s in found]
    cmd = MACHINES[row.kind].raise_signals(payloads)
    return len(await hub.service.execute(session_id, cmd))


async def raise_signals_safe(hub: Hub, session_id: str) -> None:
    """:func:`raise_signals`, logged instead of raised: a warning never breaks the main path."""
    try:
        await raise_signals(hub, session_id)
    except Exception:
        log.exception("signals could not be raised on %s", session_id)


_TASKS: set[asyncio.Task[None]] = set()


def after_commit(hub: Hub, session_id: str, records: Sequence[EventRecord]) -> None:
    """Called with every committed batch: when it makes an evaluation's signals due, compute
    them in the background (the caller holds the session's lock)."""
    if not any(r.type in EVALUATION_TRIGGERS for r in records):
        return
    task = asyncio.get_running_loop().create_task(raise_signals_safe(hub, session_id))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
