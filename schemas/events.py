"""The event log's record (DESIGN.md section 4): what the store keeps and the hall delivers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_SEQ = 2**31 - 1
"""The largest sequence number a client may name: the log stores ``seq`` as a 32-bit integer
(no session's log gets near it). Larger values are refused at the edge instead of overflowing a
query."""

Audience = list[str]
"""Who may see an event: any of ``all``, ``staff`` (host, supervisor, centre), ``host``,
``supervisor``, ``bidder:<credit code>``. A viewer sees an event when ``all`` or one of the
viewer's tags is in the list."""


class NewEvent(BaseModel):
    """An event the domain decided on, before the store gives it a place in the chain."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(min_length=1, max_length=64)
    actor: str = Field(min_length=1, max_length=200)
    audience: Audience
    payload: dict[str, Any] = Field(default_factory=dict)


class EventRecord(BaseModel):
    """One link of a session's hash chain.

    ``at`` is an ISO-8601 UTC instant with microseconds and a ``Z`` suffix; ``hash`` is
    ``server.audit.chain.event_hash(prev_hash, record)``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str
    seq: int = Field(ge=1)
    at: str
    type: str
    actor: str
    audience: Audience
    payload: dict[str, Any]
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")

    def visible_to(self, tags: frozenset[str]) -> bool:
        return "all" in self.audience or not tags.isdisjoint(self.audience)
