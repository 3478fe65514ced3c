"""The event log's record (DESIGN.md section 4): what the store keeps and the hall delivers."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_SEQ = 2**31 - 1
"""The largest number a client may name in a cursor: the store keeps numbers as 32-bit integers
(no session's log gets near it). Larger values are refused at the edge instead of overflowing a
query."""

Audience = list[str]
"""Who may see an event: any of ``all``, ``staff`` (host, supervisor, centre), ``host``,
``supervisor``, ``bidder:<credit code>`` (and, in an evaluation, ``committee``, ``expert:<id>``,
``room:<id>``). A viewer sees an event when ``all`` or one of the viewer's tags is in the list;
``platform`` is held by no viewer. Each tag is also a stream with its own numbering."""


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
    pos: dict[str, int] = Field(default_factory=dict, exclude=True)
    """The event's number in each stream it is a member of, and ``all`` (see
    :func:`stream_positions`). Derived from the log: not hashed, not in ``model_dump`` (so not in
    the archive, whose lines are the hashed fields); see docs/positions.md."""

    def visible_to(self, tags: frozenset[str]) -> bool:
        return ALL in self.audience or not tags.isdisjoint(self.audience)

    def shown_to(self, tags: frozenset[str]) -> dict[str, Any]:
        """The event as a viewer with ``tags`` receives it: no ``seq`` and no ``prev_hash`` (they
        count events the viewer may not see), its hash as ``id``, and its positions in the
        viewer's own streams only (rule 4, docs/positions.md)."""
        return {
            "session_id": self.session_id,
            "id": self.hash,
            "at": self.at,
            "type": self.type,
            "actor": self.actor,
            "audience": self.audience,
            "payload": self.payload,
            "pos": {t: n for t, n in self.pos.items() if t == ALL or t in tags},
        }


ALL = "all"
"""The public stream: every viewer follows it."""

PLATFORM = "platform"
"""An audience tag no viewer holds: events kept for the record only (the signed checkpoints)."""

MAX_STREAMS = 16
"""The most streams a viewer's cursor may name (a viewer follows a handful)."""

Cursor = dict[str, int]
"""A viewer's place in its streams: ``stream -> n``, the last number received with nothing
missing below it."""


def stream_positions(
    heads: dict[str, int], audiences: list[list[str]]
) -> tuple[list[dict[str, int]], dict[str, int]]:
    """Number new events in their streams, after the streams' current ``heads``.

    Each event gets ``n`` in every stream of its audience, and under ``all`` either its number
    in the public stream (a public event) or the count of public events before it. Returns the
    positions of each event and the new heads (only the streams that moved, and ``all``).
    """
    moved = {ALL: heads.get(ALL, 0)}
    out = []
    for audience in audiences:
        pos: dict[str, int] = {}
        for tag in dict.fromkeys(audience):
            moved[tag] = moved.get(tag, heads.get(tag, 0)) + 1
            pos[tag] = moved[tag]
        pos.setdefault(ALL, moved[ALL])
        out.append(pos)
    return out, moved


def parse_cursor(value: Any) -> Cursor | None:
    """A cursor from the wire (a JSON object ``stream -> n``), or None when it is not one:
    at most :data:`MAX_STREAMS` streams, names of 1 to 200 characters, each ``n`` an integer
    from 0 to :data:`MAX_SEQ` (a bool is not an integer)."""
    if not isinstance(value, dict) or len(value) > MAX_STREAMS:
        return None
    out: Cursor = {}
    for k, v in value.items():
        if not isinstance(k, str) or not 0 < len(k) <= 200:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SEQ:
            return None
        out[k] = v
    return out
