"""Event positions (rule 4, docs/positions.md): each event numbered in its audience streams.

Viewers no longer see the log's ``seq``, which counts events they may not see. Each event gets a
number in every stream of its audience (``events.pos``), and ``event_streams`` maps a stream's
number back to the event for replay. Existing logs are numbered here, in ``seq`` order, exactly as
new events are (``schemas.events.stream_positions``). Checkpoints are not renumbered: their
audience in an existing log stays as it was recorded (it is hashed).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

from schemas.events import stream_positions

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "event_streams",
        sa.Column("session_id", sa.String(200), sa.ForeignKey("sessions.id"), primary_key=True),
        sa.Column("tag", sa.String(200), primary_key=True),
        sa.Column("n", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer, nullable=False),
    )
    op.create_index("ix_event_streams_seq", "event_streams", ["session_id", "seq"])
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("pos", sa.JSON, nullable=False, server_default="{}"))
    _number_existing_logs()


def _number_existing_logs() -> None:
    conn = op.get_bind()
    events = sa.table(
        "events",
        sa.column("session_id", sa.String),
        sa.column("seq", sa.Integer),
        sa.column("audience", sa.JSON),
        sa.column("pos", sa.JSON),
    )
    streams = sa.table(
        "event_streams",
        sa.column("session_id", sa.String),
        sa.column("tag", sa.String),
        sa.column("n", sa.Integer),
        sa.column("seq", sa.Integer),
    )
    sessions = [r[0] for r in conn.execute(sa.select(events.c.session_id).distinct())]
    for session_id in sessions:
        rows = conn.execute(
            sa.select(events.c.seq, events.c.audience)
            .where(events.c.session_id == session_id)
            .order_by(events.c.seq)
        ).all()
        audiences = [_audience(r[1]) for r in rows]
        positions, _ = stream_positions({}, audiences)
        for (seq, _a), audience, pos in zip(rows, audiences, positions, strict=True):
            conn.execute(
                events.update()
                .where(events.c.session_id == session_id, events.c.seq == seq)
                .values(pos=pos)
            )
            members = [
                {"session_id": session_id, "tag": t, "n": pos[t], "seq": seq}
                for t in dict.fromkeys(audience)
            ]
            if members:
                conn.execute(streams.insert(), members)


def _audience(value: Any) -> list[str]:
    return list(json.loads(value) if isinstance(value, str) else value)


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("pos")
    op.drop_index("ix_event_streams_seq", table_name="event_streams")
    op.drop_table("event_streams")
