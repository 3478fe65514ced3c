"""Supervision by remit (监管主体, seed 002): a project's supervising body, a supervisor's remit.

Both are a region and an industry, nullable: existing projects name no supervising body and
existing supervisors have no remit, so they keep seeing each other (the centre-wide case).

Revises 0002 on its own branch (the store is migrated to every head), so that it merges beside
any other 0003 without renumbering.

Revision ID: 0004
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
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
