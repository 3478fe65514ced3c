"""The record of revocations (吊销记录): an append-only, hash-chained, server-signed journal.

A revocation is not an event of one session: a company's certificate may be in use in several
sessions, or in none yet. So the server keeps one journal for the whole platform, in the data
folder (``trust-state/revocations.jsonl``, shared by the processes that share the folder, who
append under a file lock). Each line is one entry:

- ``certificate_revoked``: a newly loaded CRL names a certificate the platform knows (registered
  to a company or an account, or used to sign in since the start),
- ``token_refused``: a token of a revoked certificate was refused (the first time per
  certificate),

with ``seq``, ``at`` (server time), the certificate's SHA-256, subject, issuer, serial,
revocation time and reason, ``prev_hash`` and ``hash`` (SHA-256 of the canonical JSON of the
entry without ``hash`` and ``signature``), and ``signature``: the server's signed document over
the same canonical JSON with the hash (``crypto.attest``). :func:`verify_journal` checks the chain.
Each (kind, certificate) is recorded once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from schemas.canonical import canonical_json

GENESIS = "0" * 64


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k not in ("hash", "signature")}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def read_journal(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def verify_journal(path: Path) -> list[dict[str, Any]]:
    """The entries, after checking the hash chain (raises ValueError on a broken link)."""
    entries = read_journal(path)
    prev = GENESIS
    for n, entry in enumerate(entries, start=1):
        if entry.get("seq") != n or entry.get("prev_hash") != prev:
            raise ValueError(f"entry {n}: out of sequence / 序号或前一哈希不符")
        if entry_hash(entry) != entry.get("hash"):
            raise ValueError(f"entry {n}: hash does not match / 哈希不符")
        prev = entry["hash"]
    return entries


def append_once(path: Path, entry: dict[str, Any], sign: Any) -> dict[str, Any] | None:
    """Append ``entry`` (chained, signed by ``sign(bytes) -> str``) unless one of the same
    ``kind`` and ``cert_sha256`` is there already; the appended entry or None. Blocking: run it
    in a worker thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0)
            entries = [json.loads(line) for line in f.read().splitlines() if line.strip()]
            for old in entries:
                if old.get("kind") == entry["kind"] and old.get("cert_sha256") == entry.get(
                    "cert_sha256"
                ):
                    return None
            full = {
                **entry,
                "seq": len(entries) + 1,
                "prev_hash": entries[-1]["hash"] if entries else GENESIS,
            }
            full["hash"] = entry_hash(full)
            full["signature"] = sign(canonical_json(full))
            f.seek(0, os.SEEK_END)
            f.write(json.dumps(full, ensure_ascii=False, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
            return full
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
