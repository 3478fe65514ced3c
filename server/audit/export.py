"""``bidbridge export-archive``: gather a session's record from the store into an archive."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from crypto.attest import b64decode, read_document
from crypto.keys import parse_certificate
from crypto.trust import TrustStore
from schemas.events import EventRecord
from server.audit.archive import ArchiveContent, ArchiveExportFailed, blob_references, write_archive
from server.clock import SystemClock
from server.domain import evaluation as ev
from server.domain import opening as op
from server.identity import ServerIdentity, cert_sha256, load_trust
from server.store import BlobStore, NotFound, Store, open_store

DEFAULT_SERVER_ID = "bidbridge"
"""``Settings.server_id``'s default (``bidbridge serve --server-id``)."""


async def export_session(
    store: Store,
    blobs: BlobStore,
    trust: TrustStore,
    identity: ServerIdentity,
    session_id: str,
    out: Path,
    at: datetime,
    *,
    server_id: str = DEFAULT_SERVER_ID,
) -> Path:
    """Write ``session_id``'s archive to ``out``: an opening's events, envelopes, keys,
    certificates and record, or an evaluation's events, draw input, report and recordings
    (:mod:`server.audit.archive` describes the layout). ``server_id`` is the server's
    ``Settings.server_id``: the experts' sign-in signatures name it."""
    content = await collect_session(store, blobs, trust, identity, session_id, server_id=server_id)
    return await asyncio.to_thread(
        write_archive,
        content,
        out,
        signer_key=identity.key,
        signer_cert=identity.certificate,
        chain=identity.chain,
        at=at,
    )


async def collect_session(
    store: Store,
    blobs: BlobStore,
    trust: TrustStore,
    identity: ServerIdentity,
    session_id: str,
    *,
    server_id: str = DEFAULT_SERVER_ID,
) -> ArchiveContent:
    """What ``session_id``'s archive holds, gathered from the store (the input of
    :func:`server.audit.archive.write_archive`); ``server_id`` as for :func:`export_session`."""
    row = await store.load_session(session_id)
    if row is None:
        raise NotFound(session_id)
    events = await store.events_after(session_id, 0)
    envelopes: dict[str, Path] = {}
    certs: dict[str, x509.Certificate] = {}

    def keep(cert: x509.Certificate) -> None:
        certs[cert_sha256(cert)] = cert

    for cert in (identity.certificate, *identity.chain):
        keep(cert)
    bidders: set[str] = set()
    accounts: set[str] = set()
    for e in events:
        if e.type == "bid_uploaded":
            sha = e.payload["receipt"]["envelope_sha256"]
            envelopes[sha] = blobs.path(sha)
        role, _, who = e.actor.partition(":")
        if role == "bidder":
            bidders.add(who)
        elif role in op.STAFF_ROLES:
            accounts.add(who)
    for code in sorted(bidders):
        company = await store.get_company(code)
        if company is not None:
            for pem in (company.signing_cert_pem, company.encryption_cert_pem):
                keep(parse_certificate(pem.encode("ascii")))
    for account in sorted(accounts):
        acc = await store.get_account(account)
        if acc is not None:
            keep(parse_certificate(acc.cert_pem.encode("ascii")))
    parts = await PARTS[row.kind](store, blobs, row.snapshot["state"], events)
    for cert in parts.pop("certificates", []):
        keep(cert)
    return ArchiveContent(
        session_id=session_id,
        events=events,
        envelopes=envelopes,
        trust_roots=trust.roots,
        trust_intermediates=trust.intermediates,
        crls=trust.crls,
        certificates=list(certs.values()),
        server_id=server_id,
        **parts,
    )


async def _opening_parts(
    store: Store, blobs: BlobStore, state: dict[str, Any], events: list[EventRecord]
) -> dict[str, Any]:
    """An opening's own members: the bids' content keys and the signed record (rule 12)."""
    opening = op.OpeningState.model_validate(state)
    record_json = record_text = None
    if opening.record_sha256 is not None:
        record_json = blobs.path(opening.record_sha256).read_bytes()
        record_text = op.record_text(json.loads(record_json)).encode("utf-8")
    keys = await store.bid_keys(opening.session_id)
    return {"keys": keys, "record_json": record_json, "record_text": record_text}


async def _evaluation_parts(
    store: Store, blobs: BlobStore, state: dict[str, Any], events: list[EventRecord]
) -> dict[str, Any]:
    """An evaluation's own members: the members' certificates, the report and its files."""
    files, report_text = _evaluation_files(blobs, events)
    return {
        "certificates": _member_certificates(events),
        "files": files,
        "report_text": report_text,
    }


PARTS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "opening": _opening_parts,
    "evaluation": _evaluation_parts,
}
"""What each kind of session adds to its archive (one line per kind of session)."""


def _member_certificates(events: list[EventRecord]) -> list[x509.Certificate]:
    """The certificates committee members signed in with and signed their sheets and report
    responses with (the signatures carry them): a member who signed in but never signed
    anything else is still archived with the certificate of the sign-in."""
    found = []
    for e in events:
        signature = e.payload.get("signature")
        if (
            e.type in ("member_signed_in", "sheet_content", "report_signed")
            and isinstance(signature, str)
            and signature
        ):
            found.append(read_document(b64decode(signature)).signer)
    return found


def _evaluation_files(
    blobs: BlobStore, events: list[EventRecord]
) -> tuple[dict[str, Path], bytes | None]:
    """The draw input, the report and the recording segments by SHA-256, and the report's
    readable text (with the members' responses as the log has them)."""
    files: dict[str, Path] = {}
    for ref in blob_references(events):
        if ref.required:
            try:
                files[ref.sha256] = blobs.path(ref.sha256)
            except NotFound:
                raise ArchiveExportFailed(
                    f"events seq {ref.seq}: 文件缺失 / {ref.label} {ref.sha256} is not stored"
                ) from None
        elif blobs.has(ref.sha256):  # a failed segment's file, if any was kept
            files[ref.sha256] = blobs.path(ref.sha256)
    report_sha = None
    responses: dict[str, dict[str, object]] = {}
    for e in events:
        if e.type == "report_generated":
            report_sha, responses = e.payload["sha256"], {}
        elif e.type == "report_signed":
            responses[e.payload["expert_id"]] = dict(e.payload)
    if report_sha is None:
        return files, None
    report = json.loads(files[report_sha].read_bytes())
    return files, ev.report_text(report, responses).encode("utf-8")


def cmd_export(args: argparse.Namespace) -> int:
    data = Path(args.data)
    identity = ServerIdentity.from_directory(
        Path(args.identity) if args.identity else data / "identity"
    )
    trust = load_trust(Path(args.trust) if args.trust else data / "trust")

    async def run() -> Path:
        store = await open_store(args.database_url or os.environ.get("DATABASE_URL"), data)
        try:
            blobs = BlobStore(data / "blobs")
            return await export_session(
                store,
                blobs,
                trust,
                identity,
                args.session,
                Path(args.out),
                SystemClock().now(),
                server_id=args.server_id,
            )
        finally:
            await store.close()

    out = asyncio.run(run())
    print(f"已导出档案 / archive written: {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "export-archive",
        help=(
            "导出会话存档 / export a session's archive (an opening: events, envelopes, receipts, "
            "certificates, CRLs, record; an evaluation: events, draw input, report, recordings, "
            "certificates, CRLs)"
        ),
    )
    p.add_argument("--data", required=True, help="the server's data folder")
    p.add_argument("--database-url", help="PostgreSQL URL (default: $DATABASE_URL, else SQLite)")
    p.add_argument("--session", required=True, help="session id")
    p.add_argument("--out", required=True, help="archive file to write (never overwritten)")
    p.add_argument(
        "--identity", help="folder with server.key and server.pem (default DATA/identity)"
    )
    p.add_argument("--trust", help="trust folder (default DATA/trust)")
    p.add_argument(
        "--server-id",
        default=DEFAULT_SERVER_ID,
        help="the server's id, as given to 'bidbridge serve --server-id' (default: bidbridge)",
    )
    p.set_defaults(handler=cmd_export)
