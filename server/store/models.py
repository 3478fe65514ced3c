"""The database tables (SQLAlchemy 2 declarative), portable between SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy import text as sa_text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC instant on both databases.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so instants are stored as naive
    UTC text (which also keeps ``<=`` comparisons right) and made aware again on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: instants must carry a time zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime,
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


class Company(Base):
    """A bidder company, keyed by its unified social credit code (统一社会信用代码)."""

    __tablename__ = "companies"

    credit_code: Mapped[str] = mapped_column(String(18), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    signing_cert_pem: Mapped[str] = mapped_column(Text)
    encryption_cert_pem: Mapped[str] = mapped_column(Text)
    registered_at: Mapped[datetime]


class CertBinding(Base):
    """A certificate bound to a company for one usage (证书绑定), with when it held.

    A binding is never deleted: unbinding sets ``unbound_at``, so "was it bound when the bid was
    sealed?" stays answerable. At most one open binding per certificate and usage."""

    __tablename__ = "cert_bindings"
    __table_args__ = (
        Index(
            "ux_cert_bindings_open",
            "cert_sha256",
            "usage",
            unique=True,
            sqlite_where=sa_text("unbound_at IS NULL"),
            postgresql_where=sa_text("unbound_at IS NULL"),
        ),
        Index("ix_cert_bindings_company", "credit_code"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    credit_code: Mapped[str] = mapped_column(String(18), ForeignKey("companies.credit_code"))
    cert_sha256: Mapped[str] = mapped_column(String(64))
    usage: Mapped[str] = mapped_column(String(16))
    cert_pem: Mapped[str] = mapped_column(Text)
    bound_at: Mapped[datetime]
    bound_by: Mapped[str] = mapped_column(String(240))
    unbound_at: Mapped[datetime | None]
    unbound_by: Mapped[str | None] = mapped_column(String(240), nullable=True)


class CertBindingEvent(Base):
    """The binding log: one row per binding and unbinding, who did it, when, and how."""

    __tablename__ = "cert_binding_events"
    __table_args__ = (Index("ix_cert_binding_events_company", "credit_code"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    credit_code: Mapped[str] = mapped_column(String(18), ForeignKey("companies.credit_code"))
    action: Mapped[str] = mapped_column(String(16))
    cert_sha256: Mapped[str] = mapped_column(String(64))
    usage: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(240))
    via: Mapped[str] = mapped_column(String(16))
    signer_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    signature: Mapped[str | None] = mapped_column(Text, nullable=True)


class Account(Base):
    """A staff or room account; the id is derived from its certificate."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    cert_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    # A supervisor's remit (监管范围): region and industry; none for a centre-wide supervisor.
    remit_region: Mapped[str | None] = mapped_column(String(12), nullable=True)
    remit_industry: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Project(Base):
    __tablename__ = "projects"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    tenderer_name: Mapped[str] = mapped_column(String(200))
    tenderer_credit_code: Mapped[str] = mapped_column(String(18))
    # The supervising body (监管主体, seed 002): region and industry; none: centre-wide.
    supervisor_region: Mapped[str | None] = mapped_column(String(12), nullable=True)
    supervisor_industry: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Lot(Base):
    """A lot (标段); its id is ``<project>/<lot>``."""

    __tablename__ = "lots"

    id: Mapped[str] = mapped_column(String(130), primary_key=True)
    project_code: Mapped[str] = mapped_column(String(64), ForeignKey("projects.code"))
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))


class SessionState(Base):
    """A session's current state, derived from its event log; ``version`` is the last seq."""

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_next_due", "next_due"),)

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    lot_id: Mapped[str | None] = mapped_column(String(130), ForeignKey("lots.id"))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    snapshot: Mapped[dict[str, Any]]
    next_due: Mapped[datetime | None]
    created_at: Mapped[datetime]


class Event(Base):
    """One link of a session's hash chain; ``at`` is the exact text that was hashed."""

    __tablename__ = "events"

    session_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("sessions.id"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(200))
    audience: Mapped[list[str]]
    payload: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    pos: Mapped[dict[str, Any]]
    """The event's positions in its audience streams (``schemas.events.stream_positions``)."""


class EventStream(Base):
    """An event's number in one audience stream (docs/positions.md): what viewers are shown and
    replay by, instead of ``seq``, which counts events they may not see (rule 4)."""

    __tablename__ = "event_streams"
    __table_args__ = (Index("ix_event_streams_seq", "session_id", "seq"),)

    session_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("sessions.id"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(200), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)


class LoginChallenge(Base):
    __tablename__ = "login_challenges"

    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime]
    used: Mapped[bool] = mapped_column(Boolean)


class BidKey(Base):
    """The content-encryption key of a decrypted bid, kept for the archive."""

    __tablename__ = "bid_keys"

    session_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    envelope_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    cek_hex: Mapped[str] = mapped_column(String(128))


class BackupShare(Base):
    """A custodian's key share for a backup decryption request; secret, deleted after use."""

    __tablename__ = "backup_shares"

    request_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    custodian_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    share_json: Mapped[str] = mapped_column(Text)


class ExpertRow(Base):
    """One expert of the shared pool (评标专家库); ``data`` is a ``schemas.experts.Expert``."""

    __tablename__ = "experts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[dict[str, Any]]
    imported_at: Mapped[datetime]


class SiteRow(Base):
    """A site (场地) of the rooms network, in one city."""

    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    city: Mapped[str] = mapped_column(String(64))


class RoomRow(Base):
    """An evaluation room (评标室) of a site; its device logs in with ``account_id``'s certificate."""

    __tablename__ = "rooms"
    __table_args__ = (Index("ix_rooms_account", "account_id", unique=True),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64), ForeignKey("sites.id"))
    name: Mapped[str] = mapped_column(String(200))
    account_id: Mapped[str] = mapped_column(String(32), ForeignKey("accounts.id"))
    available: Mapped[bool] = mapped_column(Boolean)
    seats: Mapped[int | None] = mapped_column(Integer, nullable=True)


class DrawSecret(Base):
    """The server's random value for a draw, kept secret until the draw reveals it."""

    __tablename__ = "draw_secrets"

    session_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("sessions.id"), primary_key=True
    )
    server_random: Mapped[str] = mapped_column(String(64))


class ServerHeartbeat(Base):
    """A server process's last sign of life (or its clean stop), for finding platform outages
    at the next start (rule 8)."""

    __tablename__ = "server_heartbeats"

    instance: Mapped[str] = mapped_column(String(64), primary_key=True)
    beat_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None] = mapped_column(nullable=True)
