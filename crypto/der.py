"""Streaming DER/BER reading and DER header writing for CMS structures too large for memory.

asn1crypto parses every small part of an envelope (recipient infos, algorithms, certificates,
signer infos). Only the few wrappers around the bid's bytes, which can be gigabytes, are read and
written here, header by header, so that a sealed bid is processed in constant memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from asn1crypto import core

from crypto.errors import EnvelopeMalformed

CLASS_UNIVERSAL = 0
CLASS_CONTEXT = 2

TAG_INTEGER = 2
TAG_OCTET_STRING = 4
TAG_OID = 6
TAG_SEQUENCE = 16
TAG_SET = 17

MAX_SMALL_ELEMENT = 32 * 1024 * 1024
"""Largest element read whole into memory (certificates, recipient infos, signer infos)."""

CHUNK = 1024 * 1024

MAX_DEPTH = 32
"""Deepest nesting of BER indefinite or constructed forms accepted (CMS needs fewer than 10)."""


def check_depth(depth: int) -> None:
    if depth > MAX_DEPTH:
        raise EnvelopeMalformed(f"elements nested deeper than {MAX_DEPTH} levels")


class ByteSource(Protocol):
    def read(self, n: int, /) -> bytes: ...


@dataclass(frozen=True)
class Header:
    """One element's identifier and length; ``length`` is None for BER indefinite length."""

    cls: int
    constructed: bool
    tag: int
    length: int | None
    raw: bytes

    def is_universal(self, tag: int) -> bool:
        return self.cls == CLASS_UNIVERSAL and self.tag == tag

    def is_context(self, tag: int) -> bool:
        return self.cls == CLASS_CONTEXT and self.tag == tag

    @property
    def is_end_of_contents(self) -> bool:
        return self.cls == 0 and self.tag == 0 and not self.constructed and self.length == 0


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode_header(identifier: int, length: int) -> bytes:
    """A definite-length header; ``identifier`` is the whole first octet (e.g. 0x30, 0xA0)."""
    return bytes([identifier]) + encode_length(length)


class Reader:
    """Reads DER/BER elements from a byte source, counting the bytes consumed."""

    def __init__(self, source: ByteSource) -> None:
        self._src = source
        self.consumed = 0

    def read_exact(self, n: int) -> bytes:
        data = self._src.read(n)
        while len(data) < n:
            more = self._src.read(n - len(data))
            if not more:
                raise EnvelopeMalformed("truncated: the data ends inside an element")
            data += more
        self.consumed += n
        return data

    def read_some(self, n: int) -> bytes:
        """Up to ``n`` bytes (at least one), for streaming large contents."""
        data = self._src.read(n)
        if not data:
            raise EnvelopeMalformed("truncated: the data ends inside an element")
        self.consumed += len(data)
        return data

    def at_eof(self) -> bool:
        data = self._src.read(1)
        if data:
            raise EnvelopeMalformed("unexpected data after the end of the structure")
        return True

    def read_header(self) -> Header:
        first = self.read_exact(1)
        ident = first[0]
        cls = ident >> 6
        constructed = bool(ident & 0x20)
        tag = ident & 0x1F
        raw = bytearray(first)
        if tag == 0x1F:
            tag = 0
            while True:
                b = self.read_exact(1)[0]
                raw.append(b)
                tag = (tag << 7) | (b & 0x7F)
                if not b & 0x80:
                    break
                if tag > 1 << 28:
                    raise EnvelopeMalformed("tag number too large")
        lb = self.read_exact(1)[0]
        raw.append(lb)
        length: int | None
        if lb < 0x80:
            length = lb
        elif lb == 0x80:
            if not constructed:
                raise EnvelopeMalformed("indefinite length on a primitive element")
            length = None
        else:
            n = lb & 0x7F
            if n > 8:
                raise EnvelopeMalformed("length field too long")
            body = self.read_exact(n)
            raw += body
            length = int.from_bytes(body, "big")
        return Header(cls, constructed, tag, length, bytes(raw))

    def expect(self, cls: int, tag: int, constructed: bool | None = None, what: str = "") -> Header:
        h = self.read_header()
        if (
            h.cls != cls
            or h.tag != tag
            or (constructed is not None and h.constructed != constructed)
        ):
            raise EnvelopeMalformed(f"unexpected element where {what or 'an element'} belongs")
        return h

    def read_body(self, header: Header, limit: int = MAX_SMALL_ELEMENT, depth: int = 0) -> bytes:
        """The content octets of a small element (indefinite forms included, raw)."""
        if header.length is not None:
            if header.length > limit:
                raise EnvelopeMalformed("element too large")
            return self.read_exact(header.length)
        check_depth(depth)
        parts = bytearray()
        while True:
            h = self.read_header()
            if h.is_end_of_contents:
                return bytes(parts)
            parts += h.raw + self.read_body(h, limit - len(parts), depth + 1)
            if len(parts) > limit:
                raise EnvelopeMalformed("element too large")

    def read_element(self, header: Header | None = None, limit: int = MAX_SMALL_ELEMENT) -> bytes:
        """A whole small element, header included, as bytes asn1crypto can load."""
        h = header or self.read_header()
        body = self.read_body(h, limit)
        if h.length is None:
            return h.raw + body + b"\x00\x00"
        return h.raw + body

    def skip_body(self, header: Header) -> None:
        """Skip an element's contents of any size without holding them."""
        for _ in self.iter_octets(header, raw=True):
            pass

    def end_of(self, header: Header) -> None:
        """Consume the end-of-contents octets that close an indefinite-length element."""
        if header.length is None:
            h = self.read_header()
            if not h.is_end_of_contents:
                raise EnvelopeMalformed("missing end-of-contents")

    def iter_octets(self, header: Header, *, raw: bool = False, depth: int = 0) -> Iterator[bytes]:
        """The content of an OCTET STRING in chunks, primitive or (BER) constructed.

        With ``raw`` the element's contents are streamed as they are, whatever their type.
        """
        if not header.constructed or (raw and header.length is not None):
            remaining = header.length or 0
            while remaining:
                chunk = self.read_some(min(remaining, CHUNK))
                remaining -= len(chunk)
                yield chunk
            return
        check_depth(depth)
        if header.length is None:
            while True:
                h = self.read_header()
                if h.is_end_of_contents:
                    return
                if not raw and not h.is_universal(TAG_OCTET_STRING):
                    raise EnvelopeMalformed("a constructed OCTET STRING holds another type")
                yield from self.iter_octets(h, raw=raw, depth=depth + 1)
        else:
            end = self.consumed + header.length
            while self.consumed < end:
                h = self.read_header()
                if not h.is_universal(TAG_OCTET_STRING):
                    raise EnvelopeMalformed("a constructed OCTET STRING holds another type")
                yield from self.iter_octets(h, depth=depth + 1)
            if self.consumed != end:
                raise EnvelopeMalformed("constructed OCTET STRING length mismatch")


class ChunkStream:
    """A file-like ``read`` over an iterator of byte chunks (for example a decryptor's output).

    ``read(n)`` returns at most ``n`` bytes from the current chunk; ``Reader`` loops when it
    needs an exact count.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._it = chunks
        self._buf = b""
        self._pos = 0

    def read(self, n: int, /) -> bytes:
        if self._pos >= len(self._buf):
            for chunk in self._it:
                if chunk:
                    self._buf, self._pos = chunk, 0
                    break
            else:
                return b""
        if self._pos == 0 and n >= len(self._buf):
            data, self._buf = self._buf, b""
            return data
        data = self._buf[self._pos : self._pos + n]
        self._pos += len(data)
        return data


def load_asn1(cls: type[core.Asn1Value], raw: bytes, what: str) -> Any:
    """Parse ``raw`` as ``cls`` completely, so that a malformed input fails here, typed."""
    try:
        value = cls.load(raw)
        value.native  # noqa: B018  (asn1crypto parses lazily; force every child now)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        raise EnvelopeMalformed(f"{what}: {exc}") from None
    return value
