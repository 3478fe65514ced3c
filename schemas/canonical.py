"""The one canonical JSON encoding: what hashes and signatures are computed over."""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no insignificant whitespace.

    Every hash in the event log, every signed document (receipt, checkpoint, opening table,
    record) is computed over these bytes, so the same value always gives the same bytes.
    Money is integer fen and instants are ISO-8601 strings, never floats.
    """
    return json.dumps(
        value,
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
        default=_refuse,
    ).encode("utf-8")


def signed_document(purpose: str, **fields: Any) -> bytes:
    """The canonical bytes of a document to sign: its ``fields`` and the ``purpose`` it is signed
    for, so that a signature for one purpose never passes for another."""
    return canonical_json({"purpose": purpose, **fields})


def _refuse(value: Any) -> Any:
    raise TypeError(f"not canonical JSON: {type(value).__name__}")
