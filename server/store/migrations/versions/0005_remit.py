"""Supervision by remit (监管主体, seed 002): a project's supervising body, a supervisor's remit.

Both are a region and an industry, nullable: existing projects name no supervising body and
existing supervisors have no remit, so they keep seeing each other (the centre-wide case).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("remit_region", sa.String(12), nullable=True))
    op.add_column("accounts", sa.Column("remit_industry", sa.String(32), nullable=True))
    op.add_column("projects", sa.Column("supervisor_region", sa.String(12), nullable=True))
    op.add_column("projects", sa.Column("supervisor_industry", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("supervisor_industry")
        batch.drop_column("supervisor_region")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("remit_industry")
        batch.drop_column("remit_region")
