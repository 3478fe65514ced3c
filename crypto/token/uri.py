"""RFC 7512 ``pkcs11:`` URIs: parsing, printing and resolving a token's module and PIN.

Keys are named by PKCS#11 URIs::

    pkcs11:token=bidder;object=sign-key;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234

The module comes from ``module-path`` or else from the ``BIDBRIDGE_PKCS11_MODULE`` environment
variable; the PIN from the ``pin`` argument, ``pin-value`` or ``pin-source`` (a file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote, unquote_to_bytes, urlparse

from crypto.errors import TokenError, TokenNotFound

MODULE_ENV = "BIDBRIDGE_PKCS11_MODULE"
"""Environment variable naming the default PKCS#11 module (shared library)."""

ObjectType = Literal["public", "private", "cert", "secret-key", "data"]

_OBJECT_TYPES: tuple[ObjectType, ...] = ("public", "private", "cert", "secret-key", "data")
_PATH_ATTRS = ("token", "manufacturer", "serial", "model", "object", "id", "type", "slot-id")
_QUERY_ATTRS = ("module-path", "pin-value", "pin-source")
# Path attributes RFC 7512 defines that we accept but do not use to select anything.
_IGNORED_PATH_ATTRS = (
    "library-manufacturer",
    "library-description",
    "library-version",
    "slot-manufacturer",
    "slot-description",
)


def _invalid_uri(uri: str, why: str) -> TokenError:
    return TokenError(f"PKCS#11 URI 无效 / invalid PKCS#11 URI {_redact(uri)!r}: {why}")


def _redact(uri: str) -> str:
    """``uri`` with any ``pin-value`` hidden, for messages and logs."""
    head, sep, query = uri.partition("?")
    if not sep:
        return uri
    parts = ["pin-value=***" if p.lower().startswith("pin-value=") else p for p in query.split("&")]
    return head + "?" + "&".join(parts)


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed ``pkcs11:`` URI. Unset attributes are ``None`` (match anything)."""

    token: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    model: str | None = None
    slot_id: int | None = None
    object: str | None = None
    id: bytes | None = None
    type: ObjectType | None = None
    module_path: str | None = None
    pin_value: str | None = field(default=None, repr=False)
    pin_source: str | None = None

    @classmethod
    def parse(cls, uri: str) -> Pkcs11Uri:
        """Parse an RFC 7512 URI; raise ``TokenError`` if it is malformed."""
        scheme, colon, rest = uri.strip().partition(":")
        if not colon or scheme.lower() != "pkcs11":
            raise _invalid_uri(uri, "it must start with 'pkcs11:'")
        path, _, query = rest.partition("?")
        if "#" in query:
            raise _invalid_uri(uri, "a fragment ('#') is not allowed")
        values: dict[str, Any] = {}
        for part in path.split(";") if path else []:
            name, value = _split_attr(uri, part)
            if name in _IGNORED_PATH_ATTRS:
                continue
            if name not in _PATH_ATTRS:
                raise _invalid_uri(uri, f"unknown path attribute {name!r}")
            key = name.replace("-", "_")
            if key in values:
                raise _invalid_uri(uri, f"attribute {name!r} given twice")
            values[key] = _path_value(uri, name, value)
        for part in query.split("&") if query else []:
            name, value = _split_attr(uri, part)
            if name not in _QUERY_ATTRS:
                continue  # RFC 7512: unknown query attributes may be ignored
            key = name.replace("-", "_")
            if key in values:
                raise _invalid_uri(uri, f"attribute {name!r} given twice")
            values[key] = _decode_text(uri, value)
        return cls(**values)

    def __str__(self) -> str:
        """The URI text (percent-encoded as RFC 7512 asks); includes ``pin-value`` if set."""
        path: list[str] = []
        for name, value in (
            ("model", self.model),
            ("manufacturer", self.manufacturer),
            ("serial", self.serial),
            ("token", self.token),
            ("object", self.object),
            ("type", self.type),
        ):
            if value is not None:
                path.append(f"{name}={_encode(value.encode())}")
        if self.id is not None:
            path.append("id=" + "".join(f"%{b:02X}" for b in self.id))
        if self.slot_id is not None:
            path.append(f"slot-id={self.slot_id}")
        query = [
            f"{name}={_encode(value.encode(), query=True)}"
            for name, value in (
                ("module-path", self.module_path),
                ("pin-source", self.pin_source),
                ("pin-value", self.pin_value),
            )
            if value is not None
        ]
        text = "pkcs11:" + ";".join(path)
        return text + ("?" + "&".join(query) if query else "")

    def redacted(self) -> str:
        """The URI text without the PIN, safe for logs and messages."""
        return str(replace(self, pin_value=None))

    def resolve_module(self) -> str:
        """The module path from the URI, else from ``BIDBRIDGE_PKCS11_MODULE``."""
        module = self.module_path or os.environ.get(MODULE_ENV)
        if not module:
            raise TokenNotFound(
                "未指定 PKCS#11 模块 / no PKCS#11 module: give module-path in the URI "
                f"or set {MODULE_ENV}"
            )
        return module

    def resolve_pin(self, pin: str | None = None) -> str | None:
        """``pin`` if given, else ``pin-value``, else the contents of ``pin-source``."""
        if pin is not None:
            return pin
        if self.pin_value is not None:
            return self.pin_value
        if self.pin_source is None:
            return None
        source = self.pin_source
        if source.lower().startswith("file:"):
            source = unquote(urlparse(source).path)
        elif ":" in source.split("/", 1)[0]:
            raise TokenError(f"不支持的 pin-source / unsupported pin-source {source!r}")
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(
                f"无法读取 PIN 文件 / cannot read the PIN file {source}: {exc}"
            ) from None
        return text.rstrip("\r\n")


def parse_uri(uri: str) -> Pkcs11Uri:
    """Parse an RFC 7512 ``pkcs11:`` URI (see ``Pkcs11Uri``)."""
    return Pkcs11Uri.parse(uri)


def _split_attr(uri: str, part: str) -> tuple[str, str]:
    name, eq, value = part.partition("=")
    if not eq or not name:
        raise _invalid_uri(uri, f"{part!r} is not name=value")
    return name.lower(), value


def _decode_text(uri: str, value: str) -> str:
    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid_uri(uri, f"{value!r} is not UTF-8 after percent-decoding") from None


def _path_value(uri: str, name: str, value: str) -> Any:
    if name == "id":
        return unquote_to_bytes(value)
    if name == "slot-id":
        if not value.isdigit():
            raise _invalid_uri(uri, f"slot-id {value!r} is not a number")
        return int(value)
    text = _decode_text(uri, value)
    if name == "type" and text not in _OBJECT_TYPES:
        raise _invalid_uri(uri, f"type {text!r} is not one of {', '.join(_OBJECT_TYPES)}")
    return text


def _encode(value: bytes, *, query: bool = False) -> str:
    # RFC 7512 pchar / qchar: unreserved plus a few sub-delims stay literal.
    return quote(value, safe="-._~:[]@!$'()*+,=&" if not query else "-._~:[]@!$'()*+,=/?|")


def _as_uri(uri_or_params: str | Pkcs11Uri) -> Pkcs11Uri:
    """``uri_or_params`` parsed, unless it is a ``Pkcs11Uri`` already."""
    return uri_or_params if isinstance(uri_or_params, Pkcs11Uri) else Pkcs11Uri.parse(uri_or_params)
