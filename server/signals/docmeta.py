"""Facts read from the documents inside bid packages, for the same-hands signals (同一人编制).

Two readers, both for hostile input (a bid package is written by whoever bids): they never
raise, never expand XML entities, never read more than a bounded number of bytes, and return
whatever could be read.

* :func:`document_facts` - author, producing application and last editor from OOXML files
  (docx/xlsx/pptx and their macro/template variants: ``docProps/core.xml`` and
  ``docProps/app.xml``), OpenDocument files (``meta.xml``) and PDF files (the document
  information dictionary, when it is stored uncompressed, as most producers write it; an Info
  dictionary inside a compressed object stream is not read). Legacy binary formats (.doc, .xls,
  .wps, .et) are not read.
* :func:`boq_errors` - odd errors in a bill of quantities (工程量清单) exported as CSV, each as a
  normalized signature, so that two bids carrying the same copied slip give the same string.

Not in ``server.domain`` because it parses files; it does no network or database I/O.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from xml.parsers import expat

from schemas.signals import DocumentFact

MAX_XML_BYTES = 1 << 20
"""docProps parts are a few hundred bytes; a megabyte is generous and bounds a zip bomb."""
MAX_ZIP_MEMBERS = 20_000
MAX_VALUE_CHARS = 500
MAX_PDF_SCAN = 8 << 20
"""The Info dictionary sits near the end (or, linearized, near the start) of a PDF."""
MAX_CSV_BYTES = 16 << 20
MAX_BOQ_ROWS = 100_000
MAX_SIGNATURES = 200
BOQ_TOLERANCE = Decimal("0.01")
"""A total may differ from quantity x unit price by rounding to the fen, no more."""

_OOXML_CORE = "docProps/core.xml"
_OOXML_APP = "docProps/app.xml"
_ODF_META = "meta.xml"


@dataclass(frozen=True)
class DocumentMeta:
    """What a document says about who made it. ``creator`` is the producing application."""

    author: str | None = None
    creator: str | None = None
    last_modified_by: str | None = None


class _Hostile(Exception):
    """A DTD, an entity declaration or an external reference: refused, not expanded."""


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    text = "".join(c for c in value if c.isprintable() or c == " ")
    text = " ".join(text.split())[:MAX_VALUE_CHARS]
    return text or None


def _refuse(*_args: object) -> None:
    raise _Hostile()


def _refuse_external(*_args: object) -> int:
    raise _Hostile()


def _xml_fields(data: bytes, wanted: frozenset[str]) -> dict[str, str]:
    """The text of the first element with each wanted local name, from a small XML part.

    Uses expat directly with every DTD hook refusing, so that no entity (internal or external)
    is ever declared or expanded: like defusedxml's ``forbid_dtd``, without the dependency."""
    if len(data) > MAX_XML_BYTES:
        return {}
    found: dict[str, str] = {}
    stack: list[str] = []
    parts: dict[int, list[str]] = {}

    def start(name: str, _attrs: object) -> None:
        local = name.rsplit("}", 1)[-1]
        stack.append(local)
        if local in wanted and local not in found:
            parts[len(stack)] = []

    def end(_name: str) -> None:
        depth = len(stack)
        local = stack.pop()
        if depth in parts:
            text = "".join(parts.pop(depth))
            found.setdefault(local, text)

    def chars(text: str) -> None:
        for buf in parts.values():
            if sum(map(len, buf)) < 4 * MAX_VALUE_CHARS:
                buf.append(text)

    parser = expat.ParserCreate(namespace_separator="}")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse_external
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except (_Hostile, expat.ExpatError, ValueError, RecursionError):
        return {}
    return found


def _zip_part(zf: zipfile.ZipFile, name: str) -> bytes | None:
    try:
        info = zf.getinfo(name)
    except KeyError:
        return None
    if info.file_size > MAX_XML_BYTES:
        return None
    try:
        with zf.open(info) as fh:
            data = fh.read(MAX_XML_BYTES + 1)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError, ValueError):
        return None
    # The declared size can lie; what was actually inflated is what counts.
    return data if len(data) <= MAX_XML_BYTES else None


def _office_zip(data: bytes) -> DocumentMeta:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError):
        return DocumentMeta()
    with zf:
        if len(zf.infolist()) > MAX_ZIP_MEMBERS:
            return DocumentMeta()
        core = _zip_part(zf, _OOXML_CORE)
        if core is not None:
            fields = _xml_fields(core, frozenset({"creator", "lastModifiedBy"}))
            app_part = _zip_part(zf, _OOXML_APP)
            app = (
                _xml_fields(app_part, frozenset({"Application", "AppVersion"}))
                if app_part is not None
                else {}
            )
            application = app.get("Application")
            if application and app.get("AppVersion"):
                application = f"{application} {app['AppVersion']}"
            return DocumentMeta(
                author=_clean(fields.get("creator")),
                creator=_clean(application),
                last_modified_by=_clean(fields.get("lastModifiedBy")),
            )
        meta = _zip_part(zf, _ODF_META)
        if meta is not None:
            fields = _xml_fields(meta, frozenset({"initial-creator", "creator", "generator"}))
            return DocumentMeta(
                author=_clean(fields.get("initial-creator")),
                creator=_clean(fields.get("generator")),
                last_modified_by=_clean(fields.get("creator")),
            )
    return DocumentMeta()


_PDF_KEY = re.compile(rb"/(Author|Creator)\s*([(<])")


def _pdf_literal(data: bytes, start: int) -> bytes | None:
    """A PDF literal string starting after its ``(``: balanced parentheses, backslash escapes."""
    out = bytearray()
    depth = 1
    i = start
    end = min(len(data), start + 4 * MAX_VALUE_CHARS)
    escapes = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("f"): 12}
    while i < end:
        c = data[i]
        if c == 0x5C:  # backslash
            i += 1
            if i >= end:
                return None
            e = data[i]
            if e in escapes:
                out.append(escapes[e])
            elif 0x30 <= e <= 0x37:
                digits = data[i : i + 3]
                m = re.match(rb"[0-7]{1,3}", digits)
                assert m is not None
                out.append(int(m.group(), 8) & 0xFF)
                i += len(m.group()) - 1
            elif e in (0x0A, 0x0D):
                pass
            else:
                out.append(e)
        elif c == 0x28:
            depth += 1
            out.append(c)
        elif c == 0x29:
            depth -= 1
            if depth == 0:
                return bytes(out)
            out.append(c)
        else:
            out.append(c)
        i += 1
    return None


def _pdf_hex(data: bytes, start: int) -> bytes | None:
    close = data.find(b">", start, start + 8 * MAX_VALUE_CHARS)
    if close < 0:
        return None
    digits = re.sub(rb"\s+", b"", data[start:close])
    if not re.fullmatch(rb"[0-9A-Fa-f]*", digits):
        return None
    if len(digits) % 2:
        digits += b"0"
    return bytes.fromhex(digits.decode("ascii"))


def _pdf_text(raw: bytes) -> str | None:
    if raw.startswith(b"\xfe\xff"):
        return raw[2:].decode("utf-16-be", errors="replace")
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8", errors="replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _pdf(data: bytes) -> DocumentMeta:
    if len(data) > 2 * MAX_PDF_SCAN:
        windows = [data[:MAX_PDF_SCAN], data[-MAX_PDF_SCAN:]]
    else:
        windows = [data]
    found: dict[bytes, str] = {}
    for window in windows:
        # The last occurrence wins: incremental updates append a newer Info dictionary.
        for m in _PDF_KEY.finditer(window):
            raw = _pdf_literal(window, m.end()) if m.group(2) == b"(" else _pdf_hex(window, m.end())
            if raw is not None:
                text = _clean(_pdf_text(raw))
                if text:
                    found[m.group(1)] = text
    return DocumentMeta(author=found.get(b"Author"), creator=found.get(b"Creator"))


def document_facts(path: str, data: bytes) -> DocumentMeta:
    """Author, producing application and last editor of one document; empty when unreadable."""
    try:
        if data.startswith(b"PK"):
            return _office_zip(data)
        if b"%PDF-" in data[:1024] or path.lower().endswith(".pdf"):
            return _pdf(data)
    except Exception:  # hostile input must never take the caller down
        return DocumentMeta()
    return DocumentMeta()


def document_fact(
    path: str, data: bytes, *, package_sha256: str | None = None, seq: int | None = None
) -> DocumentFact:
    """The :class:`~schemas.signals.DocumentFact` of one document inside a bid package."""
    meta = document_facts(path, data)
    return DocumentFact(
        path=path[:1000] or "?",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        author=meta.author,
        creator=meta.creator,
        last_modified_by=meta.last_modified_by,
        package_sha256=package_sha256,
        seq=seq,
    )


# --- bills of quantities -------------------------------------------------------------------------

_HEADERS: dict[str, tuple[str, ...]] = {
    "code": ("项目编码", "编码", "序号", "item code", "code", "item", "no", "no."),
    "name": ("项目名称", "名称", "name", "item name", "description"),
    "unit": ("计量单位", "单位", "unit"),
    "qty": ("工程量", "数量", "quantity", "qty"),
    "price": ("综合单价", "单价", "unit price", "rate", "price"),
    "total": ("合价", "金额", "总价", "total", "amount"),
}

KNOWN_UNITS = frozenset(
    [
        "m",
        "m2",
        "m3",
        "m²",
        "m³",
        "km",
        "t",
        "kg",
        "g",
        "l",
        "米",
        "平方米",
        "立方米",
        "千米",
        "公里",
        "延长米",
        "吨",
        "千克",
        "公斤",
        "升",
        "个",
        "只",
        "台",
        "套",
        "项",
        "樘",
        "扇",
        "组",
        "根",
        "块",
        "片",
        "张",
        "处",
        "座",
        "株",
        "棵",
        "丛",
        "付",
        "副",
        "把",
        "支",
        "盏",
        "具",
        "节",
        "条",
        "段",
        "点",
        "孔",
        "口",
        "眼",
        "户",
        "间",
        "系统",
        "工日",
        "台班",
        "元",
        "总价",
        "宗",
        "次",
        "批",
        "面",
        "榀",
        "部",
        "对",
        "件",
        "卷",
        "桶",
        "袋",
        "m/s",
    ]
)
"""Units the national measurement rules (GB 50500 / GB 50854 and the like) and English BOQs
use; anything else is a misspelling or a private habit worth matching across bids."""

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _header_map(row: list[str]) -> dict[str, int] | None:
    cells = [" ".join(c.split()).casefold() for c in row]
    found: dict[str, int] = {}
    for key, names in _HEADERS.items():
        for i, cell in enumerate(cells):
            if cell in names and i not in found.values():
                found[key] = i
                break
    if {"qty", "price", "total"} <= found.keys():
        return found
    return None


def _number(text: str) -> Decimal | None:
    cleaned = text.strip().replace(",", "").replace("，", "").replace("¥", "").replace("￥", "")
    if not _NUMBER.match(cleaned):
        return None
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def _short(text: str) -> str:
    return " ".join(text.split())[:40]


def boq_errors(data: bytes) -> list[str]:
    """Odd errors in a bill of quantities CSV, as normalized signatures, in row order:

    * ``row 3.2 qty*price-total=+0.10`` - quantity x unit price differs from the total beyond
      rounding to the fen (the difference, quantity x price minus total, to the fen);
    * ``row 3.2 unit=立米`` - a unit outside the usual measurement units;
    * ``row 3.2 qty=abc`` (or ``price=`` / ``total=``) - a number column that is not a number.

    A row is named by its item code (项目编码), or by its line number when it has none. Columns
    are found by their headers, Chinese (项目编码, 项目名称, 计量单位, 工程量, 综合单价, 合价) or
    English; without recognizable headers there is nothing to check and the list is empty."""
    out: list[str] = []
    try:
        text = _decode(data[:MAX_CSV_BYTES])
        reader = csv.reader(io.StringIO(text, newline=""))
        columns: dict[str, int] | None = None
        for line_no, row in enumerate(reader, start=1):
            if line_no > MAX_BOQ_ROWS or len(out) >= MAX_SIGNATURES:
                break
            if columns is None:
                if line_no <= 20:
                    columns = _header_map(row)
                continue
            if not any(c.strip() for c in row):
                continue
            cols = columns

            def cell(key: str, row: list[str] = row, cols: dict[str, int] = cols) -> str:
                i = cols.get(key)
                return row[i].strip() if i is not None and i < len(row) else ""

            code = _short(cell("code")) or f"#{line_no}"
            values: dict[str, Decimal] = {}
            for key in ("qty", "price", "total"):
                raw = cell(key)
                if not raw:
                    continue
                number = _number(raw)
                if number is None:
                    out.append(f"row {code} {key}={_short(raw)}")
                else:
                    values[key] = number
            unit = cell("unit")
            if unit and " ".join(unit.split()).casefold() not in KNOWN_UNITS:
                out.append(f"row {code} unit={_short(unit)}")
            if len(values) == 3:
                diff = values["qty"] * values["price"] - values["total"]
                if abs(diff) > BOQ_TOLERANCE:
                    rounded = diff.quantize(Decimal("0.01"))
                    out.append(f"row {code} qty*price-total={rounded:+f}")
    except Exception:  # hostile input: keep what was read
        return out[:MAX_SIGNATURES]
    return out[:MAX_SIGNATURES]
