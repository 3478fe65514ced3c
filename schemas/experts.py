"""The expert pool (评标专家库), evaluation sites and rooms, and the expert draw (专家抽取).

Formats defined here (the domain, ``server.domain.pool`` and ``server.domain.draw``, relies on them):

- **Category code** (专业类别): three levels, dotted. A top level is one capital letter and two
  digits (``A08``); each lower level adds a dot and two digits (``A08.01``, ``A08.01.03``). The
  parent of ``A08.01.03`` is ``A08.01``, whose parent is ``A08``, which has none. An expert holds
  one or more *three-level* codes (the policy counts experts per three-level category, seed 002,
  二(二)二); a draw may ask for a code of any level and then takes experts holding that code or a
  descendant of it.
- **City** (城市): the six-digit administrative division code of GB/T 2260 (``150700`` is
  Hulunbuir 呼伦贝尔市). Codes, not names: names come in several spellings (呼伦贝尔 / 呼伦贝尔市),
  codes do not.
- **Employer name key**: the employer's name normalized (NFKC, case-folded, only letters, digits
  and marks kept) so that ``北京建工集团（有限公司）`` and ``北京建工集团 (有限公司)`` are the same
  employer for avoidance (回避). The pool snapshot carries only the SHA-256 of the key (see
  :func:`employer_name_sha256`), not the name.
- **Pool snapshot row**: what an archive keeps of one expert so that a draw can be recomputed
  offline: ``id``, ``categories`` (sorted), ``city``, ``employer_credit_code``,
  ``employer_name_sha256``, ``status``. No name and no contact: recomputation does not need them.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from schemas.canonical import canonical_json
from schemas.common import CreditCode, Name

# --- field formats --------------------------------------------------------------------------------

CATEGORY_RE = re.compile(r"[A-Z][0-9]{2}(?:\.[0-9]{2}){0,2}")
CATEGORY3_RE = re.compile(r"[A-Z][0-9]{2}\.[0-9]{2}\.[0-9]{2}")
CITY_RE = re.compile(r"[1-9][0-9]{5}")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MOBILE_RE = re.compile(r"(?:\+86[- ]?)?1[3-9][0-9]{9}")
LANDLINE_RE = re.compile(r"0[0-9]{2,3}-?[0-9]{7,8}(?:-[0-9]{1,6})?")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")

NAME_MAX = 50
EMPLOYER_MAX = 200
CONTACT_MAX = 100
CATEGORIES_MAX = 20

ExpertStatus = Literal["active", "suspended", "retired", "removed"]
"""active 在库可抽 · suspended 暂停 · retired 退出 · removed 清退. Only ``active`` is drawn."""

EXPERT_STATUSES: tuple[ExpertStatus, ...] = ("active", "suspended", "retired", "removed")

EMPLOYER_NAME_PREFIX = b"bidbridge/employer-name/v1\x00"


def is_category(code: str) -> bool:
    """A category code of any of the three levels (``A08``, ``A08.01``, ``A08.01.03``)."""
    return CATEGORY_RE.fullmatch(code) is not None


def is_category3(code: str) -> bool:
    """A three-level category code (``A08.01.03``): what an expert holds."""
    return CATEGORY3_RE.fullmatch(code) is not None


def is_contact(value: str) -> bool:
    """A mobile number, a landline number or an e-mail address."""
    return any(r.fullmatch(value) for r in (MOBILE_RE, LANDLINE_RE, EMAIL_RE))


def normalize_employer_name(name: str) -> str:
    """The key two employer names are compared by: NFKC, case-folded, letters/digits/marks only."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(c for c in folded if unicodedata.category(c)[0] in "LNM")


def employer_name_sha256(name: str) -> str:
    """Hex SHA-256 of ``b"bidbridge/employer-name/v1\\x00" || UTF-8(normalize_employer_name)``."""
    key = normalize_employer_name(name).encode("utf-8")
    return hashlib.sha256(EMPLOYER_NAME_PREFIX + key).hexdigest()


def _pattern(regex: re.Pattern[str], what_zh: str, what_en: str) -> AfterValidator:
    def check(value: str) -> str:
        if regex.fullmatch(value) is None:
            raise ValueError(f"{what_zh}格式无效 / not a valid {what_en}: {value!r}")
        return value

    return AfterValidator(check)


CategoryCode = Annotated[str, _pattern(CATEGORY_RE, "专业类别代码", "category code")]
"""A category code of level one, two or three (``A08``, ``A08.01``, ``A08.01.03``)."""

Category3 = Annotated[str, _pattern(CATEGORY3_RE, "三级专业类别代码", "three-level category code")]
CityCode = Annotated[str, _pattern(CITY_RE, "城市代码（GB/T 2260 六位）", "GB/T 2260 city code")]
Ident = Annotated[str, _pattern(ID_RE, "编号", "identifier")]
Contact = Annotated[
    str,
    Field(max_length=CONTACT_MAX),
    _pattern(
        re.compile(f"{MOBILE_RE.pattern}|{LANDLINE_RE.pattern}|{EMAIL_RE.pattern}"),
        "联系方式（手机、座机或电子邮箱）",
        "contact (mobile, landline or e-mail)",
    ),
]
Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique(values: list[str], what: str) -> None:
    if len(set(values)) != len(values):
        raise ValueError(f"{what}重复 / duplicate {what}")


# --- the pool ---------------------------------------------------------------------------------------


class Expert(_Model):
    """One expert of the pool (评标专家)."""

    id: Ident = Field(description="the expert's id in the pool (专家编号)")
    name: Name = Field(min_length=1, max_length=NAME_MAX, description="姓名")
    categories: list[Category3] = Field(
        min_length=1, max_length=CATEGORIES_MAX, description="three-level category codes held"
    )
    city: CityCode = Field(description="GB/T 2260 code of the city the expert lives and sits in")
    employer: Name = Field(min_length=1, max_length=EMPLOYER_MAX, description="工作单位")
    employer_credit_code: CreditCode | None = Field(
        default=None, description="the employer's unified social credit code, when known"
    )
    status: ExpertStatus = "active"
    contact: Contact = Field(description="mobile, landline or e-mail")

    # Derived once per instance, because the draw reads them for every expert of a pool of up to
    # 100,000: (employer_name_sha256, canonical JSON of the snapshot row). Every way to make an
    # Expert runs model_post_init (construction, validation, model_construct); model_copy is
    # overridden below; the model is frozen. So the cache always matches the fields.
    _derived: tuple[str, bytes] = PrivateAttr(default=("", b""))

    @model_validator(mode="after")
    def _distinct_categories(self) -> Expert:
        _unique(self.categories, "专业类别 / category ")
        return self

    def model_post_init(self, context: Any, /) -> None:
        name_hash = employer_name_sha256(self.employer)
        row = snapshot_row(
            self.id,
            self.categories,
            self.city,
            self.employer_credit_code,
            name_hash,
            self.status,
        )
        self._private()["_derived"] = (name_hash, canonical_json(row))

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; with ``update`` it is validated again (and its cache derived again)."""
        if update:
            return self.model_validate({**self.model_dump(), **update})
        return super().model_copy(deep=deep)

    def _private(self) -> dict[str, Any]:
        private = self.__pydantic_private__
        assert private is not None  # Expert declares a private attribute
        return private

    @property
    def employer_name_sha256(self) -> str:
        """SHA-256 of the employer's normalized name (see the module docstring)."""
        derived: tuple[str, bytes] = self.__pydantic_private__["_derived"]  # type: ignore[index]
        return derived[0]

    def snapshot(self) -> dict[str, Any]:
        """This expert's pool snapshot row (no name, no contact)."""
        return snapshot_row(
            self.id,
            self.categories,
            self.city,
            self.employer_credit_code,
            self.employer_name_sha256,
            self.status,
        )

    def snapshot_json(self) -> bytes:
        """``canonical_json(self.snapshot())``, computed once."""
        derived: tuple[str, bytes] = self.__pydantic_private__["_derived"]  # type: ignore[index]
        return derived[1]


def snapshot_rows_json(experts: Sequence[Expert]) -> list[bytes]:
    """``[e.snapshot_json() for e in experts]``, read straight from each expert's cache: this is
    on the path of every draw, over pools of up to 100,000 experts."""
    return [e.__pydantic_private__["_derived"][1] for e in experts]  # type: ignore[index]


def snapshot_row(
    id: str,
    categories: list[str],
    city: str,
    employer_credit_code: str | None,
    employer_name_sha256: str,
    status: str,
) -> dict[str, Any]:
    return {
        "id": id,
        "categories": sorted(categories),
        "city": city,
        "employer_credit_code": employer_credit_code,
        "employer_name_sha256": employer_name_sha256,
        "status": status,
    }


class PoolSnapshotRow(_Model):
    """One expert as the archive keeps it for recomputing a draw (see the module docstring)."""

    id: Ident
    categories: list[Category3] = Field(min_length=1, max_length=CATEGORIES_MAX)
    city: CityCode
    employer_credit_code: CreditCode | None
    employer_name_sha256: Hex64
    status: ExpertStatus


class PoolRowError(_Model):
    """One problem found while importing a pool file; ``row`` 0 is the file or its header."""

    row: int = Field(ge=0, description="1-based data row (CSV: header not counted); 0: the file")
    field: str | None = Field(default=None, description="the field (column), when one is at fault")
    code: str
    zh: str
    en: str
    value: str | None = Field(default=None, description="the offending value, shortened")


# --- sites and rooms --------------------------------------------------------------------------------


class Room(_Model):
    """An evaluation room (评标室) as it stood when the draw was made."""

    id: Ident
    name: str = Field(default="", max_length=200)
    available: bool = True
    seats: int | None = Field(
        default=None, ge=1, le=200, description="expert seats; None: no limit is enforced"
    )


class Site(_Model):
    """A site (场地, e.g. a trading centre) in one city, with its evaluation rooms."""

    id: Ident
    name: str = Field(default="", max_length=200)
    city: CityCode
    rooms: list[Room] = Field(default_factory=list, max_length=200)

    @model_validator(mode="after")
    def _distinct_rooms(self) -> Site:
        _unique([r.id for r in self.rooms], "评标室编号 / room id ")
        return self


# --- the draw -----------------------------------------------------------------------------------------


class CategoryDemand(_Model):
    """How many experts of one category the committee needs, and how many ordered spares."""

    category: CategoryCode
    count: int = Field(ge=1, le=50)
    spares: int = Field(default=2, ge=0, le=50)


class DrawRequest(_Model):
    """What the host asks of the draw (抽取申请)."""

    session_id: str = Field(min_length=1, max_length=200, description="the evaluation session")
    lead_site_id: Ident = Field(description="主场")
    lead_room_id: Ident | None = Field(
        default=None, description="the lead site's room, booked by the host; None: drawn too"
    )
    secondary_sites: int = Field(ge=0, le=30, description="how many secondary sites (副场) to draw")
    owner_reps: int = Field(
        default=0, ge=0, le=50, description="业主代表: appointed by the tenderer, not drawn"
    )
    categories: list[CategoryDemand] = Field(min_length=1, max_length=CATEGORIES_MAX)
    min_outside_lead: int = Field(
        default=0, ge=0, le=200, description="experts who must come from outside the lead city"
    )
    avoid_credit_codes: list[CreditCode] = Field(
        default_factory=list, max_length=5000, description="bidders' and the tenderer's codes"
    )
    avoid_names: list[str] = Field(
        default_factory=list,
        max_length=5000,
        description="bidders' and the tenderer's names (compared normalized)",
    )

    @model_validator(mode="after")
    def _distinct_categories(self) -> DrawRequest:
        _unique([d.category for d in self.categories], "抽取专业类别 / requested category ")
        return self

    @property
    def experts(self) -> int:
        return sum(d.count for d in self.categories)


class DrawnSite(_Model):
    """The lead site or a drawn secondary site, with the room drawn (or booked) there."""

    site_id: str
    city: str
    room_id: str
    role: Literal["lead", "secondary"]
    seats: int | None = None


class Member(_Model):
    """A drawn expert of the committee. ``order`` is the 1-based order of the draw."""

    expert_id: str
    category: str = Field(description="the category drawn from (after any fallback)")
    requested_category: str
    site_id: str
    room_id: str
    order: int = Field(ge=1)


class Spare(_Model):
    """An ordered spare (候补专家) and the room they would sit in."""

    expert_id: str
    site_id: str
    room_id: str


class CategoryDraw(_Model):
    """The outcome for one requested category."""

    requested_category: str
    category: str = Field(description="the category actually drawn from")
    count: int
    candidates: int = Field(description="eligible experts in ``category`` not drawn before")
    spares: list[Spare] = Field(description="in the order they are called on")


class Fallback(_Model):
    """Too few experts in ``from_category``: the draw went up to ``to_category`` (seed 002)."""

    requested_category: str
    from_category: str
    to_category: str
    available: int
    needed: int


class EligibleCounts(_Model):
    pool: int = Field(description="experts in the pool")
    in_region: int = Field(description="of which in the lead city or a drawn secondary city")
    active: int = Field(description="of which active")
    avoided: int = Field(description="of which left out by avoidance (回避)")
    eligible: int = Field(description="active - avoided: the experts the draw chooses from")


SkipWhy = Literal["not_in_pool", "inactive", "region_rule", "seats"]


class SkippedSpare(_Model):
    expert_id: str
    why: SkipWhy


class Replacement(_Model):
    """A drawn expert declined (or could not come); the next fitting spare took the seat."""

    declined_expert_id: str
    replacement_expert_id: str
    requested_category: str
    order: int
    reason: str
    skipped: list[SkippedSpare] = Field(default_factory=list)


class DrawRules(_Model):
    """The request's rules the result must keep when spares replace members."""

    min_outside_lead: int
    owner_reps: int


class DrawResult(_Model):
    """The outcome of a verifiable draw; with the snapshot and the three random values anyone
    can recompute it (``server.domain.draw.verify``). It names experts: show it to the
    supervisor only until the experts sign in (两随机四不知)."""

    schema_version: Literal[1] = 1
    session_id: str
    seed: Hex64
    commitment: Hex64
    request_sha256: Hex64
    sites_sha256: Hex64
    pool_sha256: Hex64
    counts: EligibleCounts
    rules: DrawRules
    lead: DrawnSite
    secondary_sites: list[DrawnSite]
    committee: list[Member]
    categories: list[CategoryDraw]
    fallbacks: list[Fallback]
    replacements: list[Replacement] = Field(default_factory=list)

    @property
    def avoided(self) -> int:
        return self.counts.avoided
