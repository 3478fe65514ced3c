"""Importing the expert pool (``server.domain.pool``): every row checked, nothing half-imported."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.common import uscc_check_char
from schemas.experts import Expert
from server.demo.experts_gen import generate_pool
from server.domain.pool import PoolInvalid, load_json, parent, parse_pool

FIRST17 = "91150700MA0BD0001"
GOOD_CODE = FIRST17 + uscc_check_char(FIRST17)
WRONG_CHECK = FIRST17 + ("0" if GOOD_CODE[-1] != "0" else "1")
HEADER = [
    "id",
    "name",
    "categories",
    "city",
    "employer",
    "employer_credit_code",
    "status",
    "contact",
]


def row(n: int, **changes: str) -> dict[str, str]:
    base = {
        "id": f"E{n:05d}",
        "name": f"专家{n:05d}",
        "categories": "A08.01.03;A08.02.01",
        "city": "150700",
        "employer": "呼伦贝尔学院",
        "employer_credit_code": GOOD_CODE,
        "status": "active",
        "contact": f"139{n:08d}",
    }
    base.update(changes)
    return base


def to_csv(rows: list[dict[str, str]], header: list[str] | None = None, bom: bool = False) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    cols = header or HEADER
    writer.writerow(cols)
    for r in rows:
        writer.writerow([r.get(c, "") for c in cols])
    return (("\ufeff" if bom else "") + out.getvalue()).encode("utf-8")


def errors_of(data: bytes, fmt: Any = "csv") -> list[tuple[int, str | None, str]]:
    with pytest.raises(PoolInvalid) as caught:
        parse_pool(data, fmt)
    refusal = caught.value
    assert refusal.code == "POOL_INVALID" and refusal.status == 422
    for e in refusal.errors:
        assert e.zh and e.en
    return [(e.row, e.field, e.code) for e in refusal.errors]


def test_csv_pool_imports_every_field() -> None:
    experts = parse_pool(
        to_csv([row(1), row(2, employer_credit_code="", status="suspended")]), "csv"
    )
    assert [e.id for e in experts] == ["E00001", "E00002"]
    first = experts[0]
    assert first.categories == ["A08.01.03", "A08.02.01"]  # ';'-separated in CSV
    assert (first.city, first.employer, first.employer_credit_code) == (
        "150700",
        "呼伦贝尔学院",
        GOOD_CODE,
    )
    assert experts[1].employer_credit_code is None and experts[1].status == "suspended"


def test_csv_with_bom_imports() -> None:
    data = to_csv([row(1)], bom=True)
    assert data.startswith(b"\xef\xbb\xbf")
    assert parse_pool(data, "csv") == parse_pool(to_csv([row(1)]), "csv")


def test_csv_columns_in_any_order_with_chinese_headers_and_status_words() -> None:
    header = ["联系方式", "专家编号", "姓名", "专业类别", "城市", "工作单位", "状态"]
    keys = ["contact", "id", "name", "categories", "city", "employer", "status"]
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(header)
    w.writerow([row(1, status="暂停")[k] for k in keys])
    w.writerow([row(2, status="在库")[k] for k in keys])
    experts = parse_pool(out.getvalue().encode(), "csv")
    assert [e.status for e in experts] == ["suspended", "active"]
    assert experts[0].employer_credit_code is None  # the optional column may be left out


def test_json_pool_imports() -> None:
    items: list[dict[str, Any]] = [row(1), row(2)]
    items[0]["categories"] = ["A08.01.03", "B01.01.01"]
    items[1]["employer_credit_code"] = None
    experts = parse_pool(json.dumps(items, ensure_ascii=False).encode(), "json")
    assert experts[0].categories == ["A08.01.03", "B01.01.01"]
    assert experts[1].employer_credit_code is None


def test_every_bad_row_is_reported_and_nothing_is_imported() -> None:
    rows = [
        row(1),
        row(2, city="呼伦贝尔"),  # a name, not a GB/T 2260 code
        row(3, employer_credit_code=WRONG_CHECK),
        row(4),
        row(5, categories="A08.01", contact="not a phone"),  # two errors in one row
        row(6, name=""),
        row(7, status="on leave"),
    ]
    found = errors_of(to_csv(rows))
    assert found == [
        (2, "city", "INVALID_CITY"),
        (3, "employer_credit_code", "INVALID_CREDIT_CODE"),
        (5, "contact", "INVALID_CONTACT"),
        (5, "categories", "INVALID_CATEGORY"),
        (6, "name", "MISSING"),
        (7, "status", "INVALID_STATUS"),
    ]


def test_names_with_hidden_or_direction_changing_characters_are_refused() -> None:
    rows = [row(1, name="张\u202e三"), row(2, employer="某\u200b设计院"), row(3)]
    assert errors_of(to_csv(rows)) == [
        (1, "name", "HIDDEN_CHARACTERS"),
        (2, "employer", "HIDDEN_CHARACTERS"),
    ]


def test_error_messages_are_chinese_and_english_and_name_the_value() -> None:
    with pytest.raises(PoolInvalid) as caught:
        parse_pool(to_csv([row(1, city="Hulunbuir")]), "csv")
    [err] = caught.value.errors
    assert "GB/T 2260" in err.zh and "GB/T 2260" in err.en and err.value == "Hulunbuir"
    assert "row 1" in caught.value.detail


def test_duplicate_ids_are_refused() -> None:
    found = errors_of(to_csv([row(1), row(2), row(1, name="另一位")]))
    assert found == [(3, "id", "DUPLICATE_ID")]
    with pytest.raises(PoolInvalid) as caught:
        parse_pool(to_csv([row(1), row(2), row(1, name="另一位")]), "csv")
    assert "1" in caught.value.errors[0].zh  # names the first row with that id


@pytest.mark.parametrize(
    "bad",
    [
        "91150700MA0BD0001",  # 17 characters
        "91150700MA0BD000100",  # 19 characters
        GOOD_CODE.lower(),  # lower case is not in the alphabet
        WRONG_CHECK,
        "91150700MA0BD000I" + "0",  # I is not in the alphabet
    ],
)
def test_bad_credit_codes_are_refused(bad: str) -> None:
    assert errors_of(to_csv([row(1, employer_credit_code=bad)])) == [
        (1, "employer_credit_code", "INVALID_CREDIT_CODE")
    ]


def test_categories_must_be_three_level_codes() -> None:
    found = errors_of(to_csv([row(1, categories="A08.01"), row(2, categories="a08.01.03")]))
    assert found == [(1, "categories", "INVALID_CATEGORY"), (2, "categories", "INVALID_CATEGORY")]
    assert errors_of(to_csv([row(1, categories="A08.01.03;A08.01.03")])) == [
        (1, "categories", "DUPLICATE_CATEGORY")
    ]
    assert errors_of(to_csv([row(1, categories=" ; ")])) == [(1, "categories", "MISSING")]


def test_category_parent_chain() -> None:
    assert parent("A08.01.03") == "A08.01"
    assert parent("A08.01") == "A08"
    assert parent("A08") is None


def test_not_utf8_is_refused_with_a_hint() -> None:
    data = to_csv([row(1)]).decode().encode("gbk")
    with pytest.raises(PoolInvalid) as caught:
        parse_pool(data, "csv")
    [err] = caught.value.errors
    assert (err.row, err.code) == (0, "ENCODING") and "UTF-8" in err.zh


def test_header_problems_are_reported() -> None:
    found = errors_of(to_csv([row(1)], header=[*HEADER[:-1], "remark"]))
    assert found == [(0, "remark", "UNKNOWN_COLUMN"), (0, "contact", "MISSING_COLUMN")]


def test_row_with_the_wrong_number_of_cells() -> None:
    data = to_csv([row(1)]) + "E00002,专家00002\r\n".encode()
    assert errors_of(data) == [(2, None, "ROW_SHAPE")]


def test_blank_lines_are_skipped() -> None:
    data = to_csv([row(1)]) + b"\r\n\r\n" + to_csv([row(2)]).split(b"\r\n", 1)[1]
    assert [e.id for e in parse_pool(data, "csv")] == ["E00001", "E00002"]


@pytest.mark.parametrize(
    ("data", "fmt", "code"),
    [
        (b"", "csv", "EMPTY"),
        (",".join(HEADER).encode(), "csv", "EMPTY"),
        (b"[]", "json", "EMPTY"),
        (b'{"id": 1}', "json", "JSON_SHAPE"),
        (b'[{"id": ', "json", "JSON_SYNTAX"),
    ],
)
def test_file_level_problems(data: bytes, fmt: Any, code: str) -> None:
    assert [c for _, _, c in errors_of(data, fmt)] == [code]


def test_json_rows_are_checked_too() -> None:
    items: list[Any] = [row(1), "not an object", {**row(3), "remark": "x"}, {**row(4), "id": 4}]
    found = errors_of(json.dumps(items).encode(), "json")
    assert found == [(2, None, "ROW_SHAPE"), (3, "remark", "UNKNOWN_FIELD"), (4, "id", "NOT_TEXT")]


@pytest.mark.parametrize(
    ("contact", "ok"),
    [
        ("13912345678", True),
        ("+86 13912345678", True),
        ("0470-8221234", True),
        ("expert@example.org", True),
        ("1391234567", False),
        ("12345", False),
        ("expert@", False),
    ],
)
def test_contact_is_a_phone_or_an_email(contact: str, ok: bool) -> None:
    data = to_csv([row(1, contact=contact)])
    if ok:
        assert parse_pool(data, "csv")[0].contact == contact
    else:
        assert errors_of(data) == [(1, "contact", "INVALID_CONTACT")]


def test_generated_pool_round_trips_through_csv_and_json() -> None:
    pool = generate_pool(300, 3, ["150700", "150100", "150200"])
    rows = [
        {
            **e.model_dump(),
            "categories": ";".join(e.categories),
            "employer_credit_code": e.employer_credit_code or "",
        }
        for e in pool
    ]
    assert parse_pool(to_csv(rows), "csv") == pool
    as_json = json.dumps([e.model_dump() for e in pool], ensure_ascii=False).encode()
    assert parse_pool(as_json, "json") == pool


def test_an_expert_copy_with_changes_is_checked_and_rehashed() -> None:
    [e] = parse_pool(to_csv([row(1)]), "csv")
    moved = e.model_copy(update={"employer": "另一单位"})
    assert moved.employer_name_sha256 != e.employer_name_sha256
    assert moved.snapshot()["employer_name_sha256"] == moved.employer_name_sha256
    with pytest.raises(ValueError):
        e.model_copy(update={"city": "Hulunbuir"})
    assert isinstance(e.model_copy(), Expert) and e.model_copy() == e


BAD_FIELDS = {
    "city": "呼伦贝尔",
    "employer_credit_code": "123",
    "categories": "A8",
    "status": "gone",
    "contact": "x",
    "id": "E 1",
}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([None, *BAD_FIELDS]), min_size=1, max_size=30))
def test_property_errors_name_exactly_the_bad_rows(plan: list[str | None]) -> None:
    rows = [row(i + 1, **({f: BAD_FIELDS[f]} if f else {})) for i, f in enumerate(plan)]
    data = to_csv(rows)
    bad = [(i + 1, f) for i, f in enumerate(plan) if f]
    if not bad:
        assert len(parse_pool(data, "csv")) == len(rows)
        return
    with pytest.raises(PoolInvalid) as caught:
        parse_pool(data, "csv")
    assert [(e.row, e.field) for e in caught.value.errors] == bad


def _outcome(parse: Any, text: str) -> tuple[Any, ...]:
    try:
        return ("value", repr(parse(text)))
    except json.JSONDecodeError as exc:
        return ("error", exc.msg, exc.pos, exc.lineno, exc.colno)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet='[]{},: \t\n\r"a1-.eE\\nul', max_size=40))
def test_the_pool_json_is_read_item_by_item_exactly_as_json_loads_reads_it(text: str) -> None:
    assert _outcome(load_json, text) == _outcome(json.loads, text)


def test_the_item_by_item_reader_agrees_on_every_kind_of_document() -> None:
    docs = ["[]", ' [ 1 , [2] ,{"a":[]} ] \n', "[1,]", "[1 2]", "[1]x", '{"a": 1}', "3", "", "["]
    docs.append(json.dumps([{"id": str(i), "name": "专家"} for i in range(1000)], indent=1))
    for text in docs:
        assert _outcome(load_json, text) == _outcome(json.loads, text), text[:40]


def test_json_nested_past_the_stack_is_refused_with_its_code_not_a_crash() -> None:
    for doc in (b"[" * 100_000, b'[{"a":' * 50_000):
        with pytest.raises(PoolInvalid) as caught:
            parse_pool(doc, "json")
        assert [e.code for e in caught.value.errors] == ["JSON_DEPTH"]
