"""How the verifier names a failure: the problem (Chinese / English) and where in the archive."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from crypto.errors import BidBridgeError
from server.audit.archive.format import HEX64, ArchiveInvalid


class Problem(Exception):
    """A check failed: why, in Chinese and English (the caller adds where)."""

    def __init__(self, zh: str, en: str, cause: BaseException | None = None) -> None:
        super().__init__(en)
        self.zh = zh
        self.en = en
        self.cause = cause


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BidBridgeError):
        return exc.line()
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def invalid(where: str, zh: str, en: str, cause: BaseException | None = None) -> ArchiveInvalid:
    detail = f"{where}: {zh} / {en}"
    if cause is not None:
        detail += f" [{_describe(cause)}]"
    return ArchiveInvalid(detail)


@contextlib.contextmanager
def problems_at(
    where: str, zh: str = "内容无法解析", en: str = "the content cannot be parsed"
) -> Iterator[None]:
    """Turn any failure inside into an ``ArchiveInvalid`` that names ``where``."""
    try:
        yield
    except ArchiveInvalid:
        raise
    except Problem as p:
        raise invalid(where, p.zh, p.en, p.cause) from None
    except Exception as exc:
        raise invalid(where, zh, en, exc) from None


def typed_field(
    mapping: Any, key: str, kind: type | tuple[type, ...], what: str = "payload"
) -> Any:
    """``mapping[key]``, which must be there and of type ``kind`` (``what`` names the mapping)."""
    if not isinstance(mapping, dict) or key not in mapping:
        raise Problem(f"{what} 缺少字段 {key}", f"{what} lacks the field {key!r}")
    value = mapping[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Problem(f"{what} 字段 {key} 类型错误", f"{what} field {key!r} has the wrong type")
    return value


def hex64_field(mapping: Any, key: str, what: str = "payload") -> str:
    """``mapping[key]``, which must be a SHA-256 in lowercase hex."""
    value = typed_field(mapping, key, str, what)
    if not HEX64.match(value):
        raise Problem(
            f"{what} 字段 {key} 不是 SHA-256", f"{what} field {key!r} is not a SHA-256 hex"
        )
    return str(value)


def parse_json(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"))
