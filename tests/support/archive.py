"""Tampering with archive zips: read the members, write them back, re-sign the manifest."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.canonical import canonical_json
from schemas.events import EventRecord
from server.audit.chain import GENESIS, event_hash


def zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.unlink(missing_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def resign(members: dict[str, bytes], sign: Callable[[bytes], bytes]) -> dict[str, bytes]:
    """What someone holding the platform's key could do: a fresh, validly signed manifest.

    ``sign`` makes the manifest's signature (manifest.p7s) from its bytes.
    """
    files = {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for name, data in members.items()
        if name not in ("manifest.json", "manifest.p7s")
    }
    manifest = canonical_json({"files": files})
    kept = {n: d for n, d in members.items() if n in files}
    return {**kept, "manifest.json": manifest, "manifest.p7s": sign(manifest)}


def rechain(events: list[dict[str, Any]]) -> list[EventRecord]:
    """Give plain event dicts their seq order's prev_hash and hash (what a forger would write)."""
    prev = GENESIS
    out = []
    for event in events:
        body = {k: v for k, v in event.items() if k not in ("prev_hash", "hash")}
        digest = event_hash(prev, body)
        out.append(EventRecord(**body, prev_hash=prev, hash=digest))
        prev = digest
    return out


def flip_in_members(archive: Path, out: Path, marker: str) -> Path:
    """A copy of ``archive`` at ``out`` with the middle byte of each member named with ``marker``
    flipped (the other members and every member's zip header stay as they are)."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if marker in info.filename:
                buf = bytearray(data)
                buf[len(buf) // 2] ^= 0x01
                data = bytes(buf)
            dst.writestr(info, data)
    return out
