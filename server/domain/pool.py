"""Importing the expert pool (评标专家库): every row checked, all errors reported, nothing half-done.

Theory of operation: :func:`parse_pool` takes the bytes of a CSV or JSON file and returns the
experts, or raises one :class:`PoolInvalid` refusal that lists *every* problem it found, each with
its row, field, a stable code and a message in Chinese and English. A file with one bad row
imports nothing, so a centre fixes the file and imports it again; there is never a pool that is
half old and half new. Pure: no I/O, the caller reads the file.

Formats:

- **CSV**: UTF-8, with or without a byte-order mark; a header row naming the columns (English
  names below, or their Chinese aliases, in any order); one expert per row. ``categories`` holds
  one or more three-level codes separated by ``;`` (``A08.01.03;A08.02.01``). Blank lines are
  skipped. ``employer_credit_code`` may be left empty or the column left out.
- **JSON**: UTF-8 (BOM allowed), an array of objects with the same keys; ``categories`` is an
  array of strings (a ``;``-separated string is accepted too); ``employer_credit_code`` may be
  ``null`` or absent.

Fields: ``id`` (pool id, letters/digits/``_.-``, up to 64), ``name`` (up to 50 characters),
``categories``, ``city`` (GB/T 2260 six-digit code), ``employer`` (up to 200 characters),
``employer_credit_code`` (18 characters with a correct check character), ``status`` (``active``,
``suspended``, ``retired``, ``removed``; or 在库/正常, 暂停, 退出/退休, 清退), ``contact`` (mobile,
landline or e-mail). Row numbers count data rows from 1 (the CSV header is not counted; JSON: the
array index + 1); row 0 means the file or its header.

Category codes are dotted, three levels (see ``schemas.experts``); :func:`parent` walks up.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import ValidationError

from schemas.common import hidden_characters, is_valid_uscc
from schemas.experts import (
    CATEGORIES_MAX,
    CITY_RE,
    CONTACT_MAX,
    EMPLOYER_MAX,
    EXPERT_STATUSES,
    ID_RE,
    NAME_MAX,
    Expert,
    ExpertStatus,
    PoolRowError,
    is_category,
    is_category3,
    is_contact,
)
from server.domain.errors import Refusal

FIELDS = (
    "id",
    "name",
    "categories",
    "city",
    "employer",
    "employer_credit_code",
    "status",
    "contact",
)
REQUIRED = frozenset(FIELDS) - {"employer_credit_code"}

HEADER_ALIASES: dict[str, str] = {
    "专家编号": "id",
    "编号": "id",
    "姓名": "name",
    "专业类别": "categories",
    "专业": "categories",
    "城市": "city",
    "所在城市": "city",
    "城市代码": "city",
    "工作单位": "employer",
    "单位": "employer",
    "统一社会信用代码": "employer_credit_code",
    "单位信用代码": "employer_credit_code",
    "状态": "status",
    "联系方式": "contact",
    "电话": "contact",
}

STATUS_ALIASES: dict[str, ExpertStatus] = {
    "在库": "active",
    "正常": "active",
    "暂停": "suspended",
    "退出": "retired",
    "退休": "retired",
    "清退": "removed",
}


class PoolInvalid(Refusal):
    """The pool file has errors; ``errors`` lists every one of them. Nothing was imported."""

    code = "POOL_INVALID"
    status = 422
    zh = "专家库文件有误，未导入任何专家"
    en = "the pool file has errors; no expert was imported"

    def __init__(self, errors: list[PoolRowError]) -> None:
        self.errors = errors
        first = errors[0]
        where = f"row {first.row}" + (f", {first.field}" if first.field else "")
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{len(errors)} error(s); {where}: {first.code} {first.en}{more}")


# --- category codes ---------------------------------------------------------------------------------


def parent(code: str) -> str | None:
    """The parent category: ``A08.01.03`` -> ``A08.01`` -> ``A08`` -> None."""
    if not is_category(code):
        raise ValueError(f"not a category code: {code!r}")
    head, dot, _ = code.rpartition(".")
    return head if dot else None


def within(code: str, ancestor: str) -> bool:
    """True when ``code`` is ``ancestor`` or one of its descendants."""
    return code == ancestor or code.startswith(ancestor + ".")


def level(code: str) -> int:
    """1 for ``A08``, 2 for ``A08.01``, 3 for ``A08.01.03``."""
    return code.count(".") + 1


# --- parsing -----------------------------------------------------------------------------------------


def parse_pool(data: bytes, fmt: Literal["csv", "json"]) -> list[Expert]:
    """The experts of a pool file, in file order; raises :class:`PoolInvalid` listing all errors."""
    errors: list[PoolRowError] = []
    text = _decode(data, errors)
    rows: list[tuple[int, dict[str, Any]]] = []
    if text is not None:
        if fmt == "csv":
            rows = list(_csv_rows(text, errors))
        elif fmt == "json":
            rows = list(_json_rows(text, errors))
        else:
            errors.append(_err(0, None, "FORMAT", "不支持的文件格式", "unsupported format", fmt))
    experts: list[Expert] = []
    first_row: dict[str, int] = {}
    for row, record in rows:
        expert = _expert(row, record, errors)
        if expert is None:
            continue
        seen = first_row.setdefault(expert.id, row)
        if seen != row:
            errors.append(
                _err(
                    row,
                    "id",
                    "DUPLICATE_ID",
                    f"专家编号重复（与第 {seen} 行相同）",
                    f"duplicate expert id (same as row {seen})",
                    expert.id,
                )
            )
            continue
        experts.append(expert)
    if not errors and not experts:
        errors.append(_err(0, None, "EMPTY", "文件中没有专家", "the file lists no experts"))
    if errors:
        raise PoolInvalid(errors)
    return experts


def _err(
    row: int, field: str | None, code: str, zh: str, en: str, value: object = None
) -> PoolRowError:
    shown = None if value is None else str(value)
    if shown is not None and len(shown) > 80:
        shown = shown[:77] + "..."
    return PoolRowError(row=row, field=field, code=code, zh=zh, en=en, value=shown)


def _decode(data: bytes, errors: list[PoolRowError]) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        errors.append(
            _err(
                0,
                None,
                "ENCODING",
                f"文件不是 UTF-8 编码（第 {exc.start} 字节），请另存为 UTF-8 后重新导入",
                f"the file is not UTF-8 (byte {exc.start}); save it as UTF-8 and import again",
            )
        )
        return None
    return text.removeprefix("\ufeff")


def _csv_rows(text: str, errors: list[PoolRowError]) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header: list[str] | None = None
        row = 0
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if header is None:
                header = _header(cells, errors)
                if header is None:
                    return
                continue
            row += 1
            if len(cells) != len(header):
                errors.append(
                    _err(
                        row,
                        None,
                        "ROW_SHAPE",
                        f"本行有 {len(cells)} 列，表头有 {len(header)} 列",
                        f"the row has {len(cells)} cells, the header {len(header)}",
                    )
                )
                continue
            yield row, {k: v.strip() for k, v in zip(header, cells, strict=True)}
        if header is None:
            errors.append(_err(0, None, "EMPTY", "文件为空（缺少表头）", "the file is empty"))
    except csv.Error as exc:
        errors.append(
            _err(
                0,
                None,
                "CSV_SYNTAX",
                f"CSV 格式错误（第 {reader.line_num} 行）",
                f"malformed CSV (line {reader.line_num}): {exc}",
            )
        )


def _header(cells: list[str], errors: list[PoolRowError]) -> list[str] | None:
    names: list[str] = []
    ok = True
    for cell in cells:
        name = cell.strip()
        name = HEADER_ALIASES.get(name, name)
        if name not in FIELDS:
            errors.append(
                _err(0, name, "UNKNOWN_COLUMN", "未知的列", "unknown column", cell.strip())
            )
            ok = False
        elif name in names:
            errors.append(_err(0, name, "DUPLICATE_COLUMN", "列重复", "duplicate column"))
            ok = False
        names.append(name)
    for missing in sorted(REQUIRED - set(names)):
        errors.append(
            _err(0, missing, "MISSING_COLUMN", "缺少必需的列", "a required column is missing")
        )
        ok = False
    return names if ok else None


_DECODER = json.JSONDecoder()
_SPACE = " \t\n\r"


def load_json(text: str) -> Any:
    """``json.loads(text)``, the same value and the same errors, but a top-level array is read
    one item at a time: one ``json.loads`` of a 24 MB pool holds the interpreter (and every hall
    of the server) for over half a second, while this lets other threads run between items."""
    i = len(text) - len(text.lstrip(_SPACE))
    if not text.startswith("[", i):
        return json.loads(text)
    items: list[Any] = []
    i = _skip(text, i + 1)
    if text.startswith("]", i):
        end = i + 1
    else:
        while True:
            item, i = _DECODER.raw_decode(text, _skip(text, i))
            items.append(item)
            i = _skip(text, i)
            if text.startswith(",", i):
                i += 1
            elif text.startswith("]", i):
                end = i + 1
                break
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
    if _skip(text, end) != len(text):
        raise json.JSONDecodeError("Extra data", text, _skip(text, end))
    return items


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _SPACE:
        i += 1
    return i


def _json_rows(text: str, errors: list[PoolRowError]) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        value = load_json(text)
    except RecursionError:  # nesting deeper than the interpreter's stack (an outsider's file)
        errors.append(_err(0, None, "JSON_DEPTH", "JSON 嵌套过深", "the JSON is nested too deeply"))
        return
    except json.JSONDecodeError as exc:
        errors.append(
            _err(
                0,
                None,
                "JSON_SYNTAX",
                f"JSON 格式错误（第 {exc.lineno} 行第 {exc.colno} 列）",
                f"malformed JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}",
            )
        )
        return
    if not isinstance(value, list):
        errors.append(
            _err(0, None, "JSON_SHAPE", "JSON 顶层应为数组", "the JSON top level must be an array")
        )
        return
    for index, item in enumerate(value):
        row = index + 1
        if not isinstance(item, dict):
            errors.append(
                _err(row, None, "ROW_SHAPE", "每一项应为对象", "each item must be an object")
            )
            continue
        unknown = sorted(str(k) for k in item if k not in FIELDS)
        for key in unknown:
            errors.append(_err(row, key, "UNKNOWN_FIELD", "未知的字段", "unknown field"))
        if unknown:
            continue
        yield row, item


# --- one row -------------------------------------------------------------------------------------------


def _text(row: int, record: dict[str, Any], field: str, errors: list[PoolRowError]) -> str | None:
    """The field as a stripped string; '' when absent or empty; None (with an error) otherwise."""
    value = record.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        errors.append(_err(row, field, "NOT_TEXT", "应为文本", "must be text", value))
        return None
    return value.strip()


def _expert(row: int, record: dict[str, Any], errors: list[PoolRowError]) -> Expert | None:
    before = len(errors)

    def bad(field: str, code: str, zh: str, en: str, value: object = None) -> None:
        errors.append(_err(row, field, code, zh, en, value))

    values: dict[str, Any] = {}
    for field in ("id", "name", "city", "employer", "employer_credit_code", "status", "contact"):
        text = _text(row, record, field, errors)
        if text is None:
            continue
        if text == "" and field in REQUIRED:
            bad(field, "MISSING", "必填项为空", "a required field is empty")
            continue
        values[field] = text

    if "id" in values and ID_RE.fullmatch(values["id"]) is None:
        bad(
            "id",
            "INVALID_ID",
            "专家编号只能由字母、数字和 _ . - 组成，最长 64 位",
            "an expert id is letters, digits and _ . - only, up to 64 characters",
            values["id"],
        )
    for field in ("name", "employer"):
        hidden = hidden_characters(values.get(field, ""))
        if hidden:
            bad(
                field,
                "HIDDEN_CHARACTERS",
                f"含有不可见或改变文字方向的字符 {', '.join(sorted(set(hidden))[:5])}，请删除",
                "contains invisible or direction-changing characters: remove them",
            )
            values.pop(field)
    if "name" in values and len(values["name"]) > NAME_MAX:
        bad("name", "TOO_LONG", f"姓名超过 {NAME_MAX} 个字符", f"longer than {NAME_MAX} characters")
    if "employer" in values and len(values["employer"]) > EMPLOYER_MAX:
        bad(
            "employer",
            "TOO_LONG",
            f"工作单位超过 {EMPLOYER_MAX} 个字符",
            f"longer than {EMPLOYER_MAX} characters",
        )
    if "city" in values and CITY_RE.fullmatch(values["city"]) is None:
        bad(
            "city",
            "INVALID_CITY",
            "城市应为 GB/T 2260 六位行政区划代码（如 150700）",
            "the city must be a six-digit GB/T 2260 code (e.g. 150700)",
            values["city"],
        )
    code = values.pop("employer_credit_code", "")
    if code:
        if is_valid_uscc(code):
            values["employer_credit_code"] = code
        else:
            bad(
                "employer_credit_code",
                "INVALID_CREDIT_CODE",
                "统一社会信用代码无效（应为 18 位且校验位正确）",
                "not a valid unified social credit code (18 characters, correct check character)",
                code,
            )
    if "status" in values:
        status = STATUS_ALIASES.get(values["status"], values["status"].lower())
        if status in EXPERT_STATUSES:
            values["status"] = status
        else:
            bad(
                "status",
                "INVALID_STATUS",
                "状态应为 active、suspended、retired 或 removed（在库、暂停、退出、清退）",
                "the status must be active, suspended, retired or removed",
                values["status"],
            )
    if "contact" in values and (
        len(values["contact"]) > CONTACT_MAX or not is_contact(values["contact"])
    ):
        bad(
            "contact",
            "INVALID_CONTACT",
            "联系方式应为手机号、座机号或电子邮箱",
            "the contact must be a mobile number, a landline number or an e-mail address",
            values["contact"],
        )
    categories = _categories(row, record.get("categories"), errors)
    if categories is not None:
        values["categories"] = categories

    if len(errors) > before:
        return None
    try:
        return Expert.model_validate(values)
    except ValidationError as exc:  # a rule of the model the checks above do not mirror
        for e in exc.errors():
            where = str(e["loc"][0]) if e["loc"] else None
            errors.append(_err(row, where, "INVALID", "字段无效", e["msg"]))
        return None


def _categories(row: int, raw: Any, errors: list[PoolRowError]) -> list[str] | None:
    def bad(code: str, zh: str, en: str, value: object = None) -> None:
        errors.append(_err(row, "categories", code, zh, en, value))

    if raw is None:
        raw = ""
    if isinstance(raw, str):
        items = [c.strip() for c in raw.split(";")]
        items = [c for c in items if c]
    elif isinstance(raw, list) and all(isinstance(c, str) for c in raw):
        items = [c.strip() for c in raw]
    else:
        bad("NOT_TEXT", "专业类别应为文本或文本数组", "categories must be text or a list of text")
        return None
    if not items:
        bad("MISSING", "至少需要一个专业类别", "at least one category is required")
        return None
    ok = True
    for c in items:
        if not is_category3(c):
            ok = False
            hint_zh = "应为三级代码" if is_category(c) else "格式应为 A08.01.03"
            hint_en = "must be a three-level code" if is_category(c) else "format A08.01.03"
            bad(
                "INVALID_CATEGORY",
                f"专业类别代码无效（{hint_zh}）",
                f"not a valid category code ({hint_en})",
                c,
            )
    if len(set(items)) != len(items):
        ok = False
        bad("DUPLICATE_CATEGORY", "专业类别重复", "a category is listed twice", ";".join(items))
    if len(items) > CATEGORIES_MAX:
        ok = False
        bad(
            "TOO_MANY",
            f"专业类别最多 {CATEGORIES_MAX} 个",
            f"at most {CATEGORIES_MAX} categories",
        )
    return items if ok else None
