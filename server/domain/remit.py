"""Supervision by remit (监管主体): which supervisors see and act on a project's sessions.

Seed 002, 二(一): a project entering the platform names its supervising body (监管主体), and each
level's supervisors watch the trading of their own region and industry (本地区、本行业); without a
supervisor of its own the tenderer may not open bids, draw experts or evaluate (二(一)四).

A supervising body and a remit are the same thing seen from two sides: a region (行政区划代码) and
an industry. The rule is equality. A project that names no supervising body is supervised by the
supervisors without a remit (centre-wide), and only by them; a supervisor with a remit sees only
the projects that name exactly that remit. Nothing is inherited up or down the administrative
tree: a city's supervisor is not a county's.

Pure: the server looks the remits and bodies up and hands them in.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

Body = tuple[str, str] | None
"""(region, industry), or None: no supervising body named / no remit (centre-wide)."""


REMIT_FACT = (
    "the supervisor accounts of the project's remit (监管主体), which the server looks up; "
    "only they satisfy the presence rule. None: every supervisor counts (no facts gathered)"
)
"""The description of a command's ``supervisors_in_remit`` field (the fact rule 6 needs)."""


def supervises(remit: Body, body: Body) -> bool:
    """Whether a supervisor of ``remit`` supervises a project of supervising body ``body``."""
    return remit == body


def remit_present(present: Mapping[str, str], in_remit: Collection[str] | None) -> bool:
    """Rule 6 / eval rule 4: at least one supervisor of the project's remit is in the session.

    ``present`` is the session's presence (account -> role); ``in_remit`` the supervisor accounts
    whose remit matches the project (None: the facts were not gathered, every supervisor counts,
    as in the pure tests of the machines)."""
    return any(
        role == "supervisor" and (in_remit is None or account in in_remit)
        for account, role in present.items()
    )
