"""Shared field types: the unified social credit code (统一社会信用代码), money in fen, and text
that is shown to people (names, reasons) without hidden characters."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field

# GB 32100-2015: 18 characters from this 31-character alphabet; the last one is a check character.
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def uscc_check_char(first17: str) -> str:
    """The check character that completes the first 17 characters of a credit code."""
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def is_valid_uscc(code: str) -> bool:
    """True when ``code`` is an 18-character unified social credit code with a correct check."""
    if len(code) != 18 or any(c not in USCC_ALPHABET for c in code):
        return False
    return uscc_check_char(code[:17]) == code[17]


def _check_uscc(code: str) -> str:
    if not is_valid_uscc(code):
        raise ValueError(
            "统一社会信用代码无效（应为 18 位且校验位正确） / "
            "not a valid unified social credit code (18 characters with a correct check character)"
        )
    return code


CreditCode = Annotated[str, AfterValidator(_check_uscc)]
"""统一社会信用代码: validated with its GB 32100-2015 check character."""

Fen = Annotated[int, Field(ge=0, strict=True)]
"""Money in integer fen (分); never a float."""


_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})
"""Control, format (bidi overrides and isolates, zero-width characters, BOM), private-use,
surrogate, unassigned, and line/paragraph separators: characters that are invisible or reorder
what is around them, so that a shown name or reason could say something other than it reads."""


def hidden_characters(text: str, allowed: str = "") -> list[str]:
    """The code points of ``text`` (as U+XXXX) that a reader would not see, but ``allowed``."""
    if text.isprintable():  # the fast path: every hidden category is also non-printable
        return []
    return [
        f"U+{ord(c):04X}"
        for c in text
        if c not in allowed and unicodedata.category(c) in _HIDDEN_CATEGORIES
    ]


def _no_hidden(allowed: str) -> AfterValidator:
    def check(text: str) -> str:
        found = hidden_characters(text, allowed)
        if found:
            raise ValueError(
                f"含有不可见或改变文字方向的字符 {', '.join(sorted(set(found))[:5])}，请删除后重试 / "
                "contains invisible or direction-changing characters: remove them and retry"
            )
        return text

    return AfterValidator(check)


Name = Annotated[str, _no_hidden("")]
"""A name shown to people (company, account, project, site, room, title): no control, bidi or
zero-width characters, no line breaks."""

Text = Annotated[str, _no_hidden("\n\t")]
"""Free text shown to people (an objection, a reason, a message): as :data:`Name`, but line
breaks and tabs are allowed."""
