"""Initial schema: companies, accounts, projects, lots, sessions, events, secrets.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Migrations spell their types out instead of importing the models: a migration must keep
# producing the same schema after the models move on.
Instant = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "companies",
        sa.Column("credit_code", sa.String(18), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("signing_cert_pem", sa.Text(), nullable=False),
        sa.Column("encryption_cert_pem", sa.Text(), nullable=False),
        sa.Column("registered_at", Instant, nullable=False),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("created_at", Instant, nullable=False),
    )
    op.create_table(
        "projects",
        sa.Column("code", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("tenderer_name", sa.String(200), nullable=False),
        sa.Column("tenderer_credit_code", sa.String(18), nullable=False),
    )
    op.create_table(
        "lots",
        sa.Column("id", sa.String(130), primary_key=True),
        sa.Column("project_code", sa.String(64), sa.ForeignKey("projects.code"), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("lot_id", sa.String(130), sa.ForeignKey("lots.id"), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("next_due", Instant, nullable=True),
        sa.Column("created_at", Instant, nullable=False),
    )
    op.create_index("ix_sessions_next_due", "sessions", ["next_due"])
    op.create_table(
        "events",
        sa.Column("session_id", sa.String(200), sa.ForeignKey("sessions.id"), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("audience", sa.JSON(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("session_id", "seq"),
    )
    op.create_table(
        "login_challenges",
        sa.Column("nonce", sa.String(128), primary_key=True),
        sa.Column("expires_at", Instant, nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "bid_keys",
        sa.Column("session_id", sa.String(200), nullable=False),
        sa.Column("envelope_sha256", sa.String(64), nullable=False),
        sa.Column("cek_hex", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("session_id", "envelope_sha256"),
    )
    op.create_table(
        "backup_shares",
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("custodian_id", sa.String(200), nullable=False),
        sa.Column("share_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "custodian_id"),
    )


def downgrade() -> None:
    for table in ("backup_shares", "bid_keys", "login_challenges", "events"):
        op.drop_table(table)
    op.drop_index("ix_sessions_next_due", table_name="sessions")
    for table in ("sessions", "lots", "projects", "accounts", "companies"):
        op.drop_table(table)
