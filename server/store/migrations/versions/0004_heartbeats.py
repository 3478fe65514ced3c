"""Server heartbeats: each process's last sign of life, for finding platform outages.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

Instant = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "server_heartbeats",
        sa.Column("instance", sa.String(64), primary_key=True),
        sa.Column("beat_at", Instant, nullable=False),
        sa.Column("stopped_at", Instant, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("server_heartbeats")
