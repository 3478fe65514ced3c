"""Evaluation: expert pool, sites and their rooms, the draw's secret server random values.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

Instant = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "experts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("imported_at", Instant, nullable=False),
    )
    op.create_table(
        "sites",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("city", sa.String(64), nullable=False),
    )
    op.create_table(
        "rooms",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("site_id", sa.String(64), sa.ForeignKey("sites.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("seats", sa.Integer(), nullable=True),
    )
    op.create_index("ix_rooms_account", "rooms", ["account_id"], unique=True)
    op.create_table(
        "draw_secrets",
        sa.Column("session_id", sa.String(200), sa.ForeignKey("sessions.id"), primary_key=True),
        sa.Column("server_random", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("draw_secrets")
    op.drop_index("ix_rooms_account", "rooms")
    op.drop_table("rooms")
    op.drop_table("sites")
    op.drop_table("experts")
