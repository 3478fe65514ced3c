"""Certificate binding: the certificates bound to each company, and the binding log.

The two certificates each company was registered with count as bound from its registration
(``bound_by`` and the log's actor ``registration``), so existing companies keep logging in.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

Instant = sa.DateTime(timezone=True)


def _sha256(pem: str) -> str | None:
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii", "replace"))
    except ValueError:
        return None  # not a certificate: nothing to bind
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def upgrade() -> None:
    bindings = op.create_table(
        "cert_bindings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "credit_code", sa.String(18), sa.ForeignKey("companies.credit_code"), nullable=False
        ),
        sa.Column("cert_sha256", sa.String(64), nullable=False),
        sa.Column("usage", sa.String(16), nullable=False),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("bound_at", Instant, nullable=False),
        sa.Column("bound_by", sa.String(240), nullable=False),
        sa.Column("unbound_at", Instant, nullable=True),
        sa.Column("unbound_by", sa.String(240), nullable=True),
    )
    op.create_index(
        "ux_cert_bindings_open",
        "cert_bindings",
        ["cert_sha256", "usage"],
        unique=True,
        sqlite_where=sa.text("unbound_at IS NULL"),
        postgresql_where=sa.text("unbound_at IS NULL"),
    )
    op.create_index("ix_cert_bindings_company", "cert_bindings", ["credit_code"])
    events = op.create_table(
        "cert_binding_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", Instant, nullable=False),
        sa.Column(
            "credit_code", sa.String(18), sa.ForeignKey("companies.credit_code"), nullable=False
        ),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("cert_sha256", sa.String(64), nullable=False),
        sa.Column("usage", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(240), nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("signer_sha256", sa.String(64), nullable=True),
        sa.Column("signature", sa.Text(), nullable=True),
    )
    op.create_index("ix_cert_binding_events_company", "cert_binding_events", ["credit_code"])

    # The certificates every company was registered with are bound from its registration.
    companies = sa.table(
        "companies",
        sa.column("credit_code", sa.String),
        sa.column("signing_cert_pem", sa.Text),
        sa.column("encryption_cert_pem", sa.Text),
        sa.column("registered_at", Instant),
    )
    conn = op.get_bind()
    rows, log = [], []
    seen: set[tuple[str, str]] = set()
    for code, signing, encryption, at in conn.execute(
        sa.select(
            companies.c.credit_code,
            companies.c.signing_cert_pem,
            companies.c.encryption_cert_pem,
            companies.c.registered_at,
        ).order_by(companies.c.credit_code)
    ):
        for usage, pem in (("signing", signing), ("encryption", encryption)):
            sha = _sha256(pem)
            if sha is None or (sha, usage) in seen:
                continue
            seen.add((sha, usage))
            rows.append(
                {
                    "credit_code": code,
                    "cert_sha256": sha,
                    "usage": usage,
                    "cert_pem": pem,
                    "bound_at": at,
                    "bound_by": "registration",
                }
            )
            log.append(
                {
                    "at": at,
                    "credit_code": code,
                    "action": "bound",
                    "cert_sha256": sha,
                    "usage": usage,
                    "actor": "registration",
                    "via": "registration",
                }
            )
    if rows:
        op.bulk_insert(bindings, rows)
        op.bulk_insert(events, log)


def downgrade() -> None:
    op.drop_index("ix_cert_binding_events_company", "cert_binding_events")
    op.drop_table("cert_binding_events")
    op.drop_index("ix_cert_bindings_company", "cert_bindings")
    op.drop_index("ux_cert_bindings_open", "cert_bindings")
    op.drop_table("cert_bindings")
