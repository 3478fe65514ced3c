"""``bidbridge export-archive``: gather a session's record from the store into an archive."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import datetime
from pathlib import Path

from cryptography import x509

from crypto.keys import parse_certificate
from crypto.trust import TrustStore
from server.audit.archive import ArchiveContent, write_archive
from server.clock import SystemClock
from server.domain import opening as op
from server.identity import ServerIdentity, cert_sha256, load_trust
from server.store import BlobStore, NotFound, Store, open_store


async def export_session(
    store: Store,
    blobs: BlobStore,
    trust: TrustStore,
    identity: ServerIdentity,
    session_id: str,
    out: Path,
    at: datetime,
) -> Path:
    """Write ``session_id``'s archive to ``out`` (events, envelopes, keys, certificates, record)."""
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
    state = op.OpeningState.model_validate(row.snapshot["state"])
    record_json = record_text = None
    if state.record_sha256 is not None:
        record_json = blobs.path(state.record_sha256).read_bytes()
        record_text = op.record_text(json.loads(record_json)).encode("utf-8")
    content = ArchiveContent(
        session_id=session_id,
        events=events,
        envelopes=envelopes,
        keys=await store.bid_keys(session_id),
        trust_roots=trust.roots,
        trust_intermediates=trust.intermediates,
        crls=trust.crls,
        certificates=list(certs.values()),
        record_json=record_json,
        record_text=record_text,
    )
    return await asyncio.to_thread(
        write_archive,
        content,
        out,
        signer_key=identity.key,
        signer_cert=identity.certificate,
        chain=identity.chain,
        at=at,
    )


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
                store, blobs, trust, identity, args.session, Path(args.out), SystemClock().now()
            )
        finally:
            await store.close()

    out = asyncio.run(run())
    print(f"已导出档案 / archive written: {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "export-archive",
        help="export a session's archive (events, envelopes, receipts, certificates, CRLs, record)",
    )
    p.add_argument("--data", required=True, help="the server's data folder")
    p.add_argument("--database-url", help="PostgreSQL URL (default: $DATABASE_URL, else SQLite)")
    p.add_argument("--session", required=True, help="session id")
    p.add_argument("--out", required=True, help="archive file to write (never overwritten)")
    p.add_argument(
        "--identity", help="folder with server.key and server.pem (default DATA/identity)"
    )
    p.add_argument("--trust", help="trust folder (default DATA/trust)")
    p.set_defaults(handler=cmd_export)
