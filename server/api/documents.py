"""The expert desk: the bids' documents for the committee, the forms, and the signature relay."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from aiohttp import web

from crypto.bid import decrypt_with_key
from crypto.errors import PackageError
from crypto.package import MANIFEST_NAME, check_member_name, verify_package
from schemas import evaluation as EV
from server.api.routing import Ctx, Invalid, Route, get
from server.api.shared import load_evaluation
from server.core import Hub
from server.domain import errors as E
from server.domain import evaluation as ev
from server.store import NotFound

DocumentPathInvalid = E.refusal(
    "DocumentPathInvalid",
    "DOCUMENT_PATH_INVALID",
    422,
    "文件路径无效：须为投标文件包清单中的文件",
    "the document path is not valid: give a file listed in the bid package's manifest",
)


# How a document is served: never as something the browser would run (HTML, SVG, scripts are
# text or a download), and always sandboxed (Content-Security-Policy: sandbox), so a hostile
# document cannot script the desk.
SAFE_TYPES = {
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".txt": "text/plain; charset=utf-8",
    ".json": "text/plain; charset=utf-8",
    ".csv": "text/plain; charset=utf-8",
    ".xml": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".html": "text/plain; charset=utf-8",
    ".htm": "text/plain; charset=utf-8",
}


DOCUMENT_CSP = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"


DOC_CHUNK = 256 * 1024


# envelope SHA-256 -> (package SHA-256, manifest): the same envelope always opens to the same
# package, so this is a cache, never a source of truth.
_PACKAGES: dict[str, tuple[str, Any]] = {}


def content_type_of(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    return SAFE_TYPES.get(suffix, "application/octet-stream")


async def _member_view(ctx: Ctx) -> ev.EvaluationState:
    loaded = await load_evaluation(ctx)
    state: ev.EvaluationState = loaded.state
    ev.documents_open(state, ctx.who.role, ctx.who.party_id)
    return state


async def _package(hub: Hub, state: ev.EvaluationState, bidder: str) -> tuple[Path, Any]:
    """The decrypted package of ``bidder``'s bid (a blob) and its checked manifest.

    The opening stored the package when it decrypted the bid and kept the content key; the
    package's own hash is not in the opening's log, so it is found again by opening the stored
    envelope with the kept key (the tag and the bidder's signature are checked once more)."""
    bid = state.bids.get(bidder)
    if bid is None:
        raise NotFound(f"bid {bidder}")
    cached = _PACKAGES.get(bid.envelope_sha256)
    if cached is not None and hub.blobs.has(cached[0]):
        return hub.blobs.path(cached[0]), cached[1]
    keys = await hub.store.bid_keys(state.opening_session_id)
    cek = keys.get(bid.envelope_sha256)
    if cek is None:
        raise E.NotAllowedInState("the bid's content key is not on record / 未找到该投标的解密记录")
    work = Path(tempfile.mkdtemp(prefix="desk-", dir=hub.settings.data_dir))
    try:
        out = work / "package.zip"
        envelope = hub.blobs.path(bid.envelope_sha256)
        await asyncio.to_thread(decrypt_with_key, envelope, bytes.fromhex(cek), out)
        blob = await hub.blobs.put_file(out)  # stored by the opening already: the same blob
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = hub.blobs.path(blob.sha256)
    info = await asyncio.to_thread(verify_package, path)
    _PACKAGES[bid.envelope_sha256] = (blob.sha256, info.manifest)
    return path, info.manifest


async def list_bids(ctx: Ctx) -> EV.BidsOut:
    """The bids under evaluation with their documents (committee members, once started)"""
    state = await _member_view(ctx)
    out = []
    for bidder in sorted(state.bids):
        bid = state.bids[bidder]
        path, manifest = await _package(ctx.hub, state, bidder)
        out.append(
            EV.BidDocuments(
                bidder=bidder,
                name=bid.name,
                price_fen=bid.price_fen,
                envelope_sha256=bid.envelope_sha256,
                package_sha256=path.name,
                documents=[
                    EV.BidDocument(
                        path=f.path,
                        size=f.size,
                        sha256=f.sha256,
                        content_type=content_type_of(f.path),
                    )
                    for f in manifest.files
                ],
            )
        )
    return EV.BidsOut(bids=out)


async def get_document(ctx: Ctx) -> web.StreamResponse:
    """One document of a bid (?bidder=CODE&path=FILE), served inline, sandboxed and not sniffed"""
    query = ctx.request.query
    name, bidder = query.get("path", ""), query.get("bidder", "")
    try:
        check_member_name(name)
    except PackageError:
        raise DocumentPathInvalid(repr(name)[:200]) from None
    if name == MANIFEST_NAME:
        raise DocumentPathInvalid(name)
    state = await _member_view(ctx)
    if not bidder:
        raise Invalid("bidder: the bidder's credit code / 须给出投标人代码")
    path, manifest = await _package(ctx.hub, state, bidder)
    entry = next((f for f in manifest.files if f.path == name), None)
    if entry is None:
        raise NotFound(f"document {name}")
    filename = quote(PurePosixPath(name).name, safe="")
    response = web.StreamResponse(
        headers={
            "Content-Type": content_type_of(name),
            "Content-Disposition": f"inline; filename*=UTF-8''{filename}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": DOCUMENT_CSP,
            "Cache-Control": "private, no-store",
            "X-Document-SHA256": entry.sha256,
            "Content-Length": str(entry.size),
        }
    )
    await response.prepare(ctx.request)
    with zipfile.ZipFile(path) as zf, zf.open(name) as member:
        while chunk := await asyncio.to_thread(member.read, DOC_CHUNK):
            await response.write(chunk)
    await response.write_eof()
    return response


# fmt: off
ROUTES: list[Route] = [
    get("/api/evaluations/{session_id}/bids", list_bids, ("expert",), response=EV.BidsOut, tag="committee"),
    get("/api/evaluations/{session_id}/document", get_document, ("expert",), raw="application/octet-stream", tag="committee"),
]
# fmt: on
