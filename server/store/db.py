"""The store: engines, migrations and every query the server makes (SQLite or PostgreSQL)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from server.store.blobs import BlobStore
from server.store.errors import (
    AlreadyExists,
    NotFound,
    StoreError,
    StoreUnavailable,
)
from server.store.log import EventLog, _columns, _row
from server.store.models import (
    Account,
    BackupShare,
    Base,
    BidKey,
    CertBinding,
    CertBindingEvent,
    Company,
    DrawSecret,
    ExpertRow,
    LoginChallenge,
    Lot,
    Project,
    RoomRow,
    ServerHeartbeat,
    SiteRow,
)

MIGRATIONS = Path(__file__).parent / "migrations"
ROLES = frozenset({"host", "supervisor", "centre", "expert", "room"})
# Any constant will do: it only has to be the same for every server process migrating one database.
_MIGRATION_LOCK = 0x6262_6D69_6772


def _is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means "cannot talk to the database" rather than "the query is wrong"."""
    if isinstance(exc, OSError | sa_exc.DisconnectionError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        return exc.orig is not None and _is_unavailable(exc.orig)
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return False
    if isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.CannotConnectNowError  # starting up, or shutting down
        | asyncpg.AdminShutdownError
        | asyncpg.CrashShutdownError
        | asyncpg.TooManyConnectionsError,
    ):
        return True
    # SQLAlchemy's asyncpg adapter wraps the driver's error in a DB-API error of its own
    # (``exc.orig``) raised from it: the driver's error is that one's cause.
    cause = exc.__cause__
    return cause is not None and cause is not exc and _is_unavailable(cause)


# --- rows ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompanyRow:
    credit_code: str
    name: str
    signing_cert_pem: str
    encryption_cert_pem: str
    registered_at: datetime


@dataclass(frozen=True)
class BindingRow:
    """A certificate bound to a company for one usage (``unbound_at`` None: bound now)."""

    id: int
    credit_code: str
    cert_sha256: str
    usage: str
    cert_pem: str
    bound_at: datetime
    bound_by: str
    unbound_at: datetime | None
    unbound_by: str | None


@dataclass(frozen=True)
class BindingEventRow:
    id: int
    at: datetime
    credit_code: str
    action: str
    cert_sha256: str
    usage: str
    actor: str
    via: str
    signer_sha256: str | None
    signature: str | None


def _region_industry(region: str | None, industry: str | None) -> tuple[str, str] | None:
    """A remit or a supervising body: (region, industry) when both are set, else None."""
    if region is None or industry is None:
        return None
    return (region, industry)


@dataclass(frozen=True)
class AccountRow:
    id: str
    role: str
    name: str
    cert_pem: str
    created_at: datetime
    remit_region: str | None = None
    remit_industry: str | None = None

    @property
    def remit(self) -> tuple[str, str] | None:
        """A supervisor's remit (region, industry); None: centre-wide."""
        return _region_industry(self.remit_region, self.remit_industry)


@dataclass(frozen=True)
class ProjectRow:
    code: str
    name: str
    tenderer_name: str
    tenderer_credit_code: str
    supervisor_region: str | None = None
    supervisor_industry: str | None = None

    @property
    def supervising_body(self) -> tuple[str, str] | None:
        """监管主体 (region, industry); None: the project names none."""
        return _region_industry(self.supervisor_region, self.supervisor_industry)


@dataclass(frozen=True)
class LotRow:
    id: str
    project_code: str
    code: str
    name: str


@dataclass(frozen=True)
class SiteInfo:
    id: str
    name: str
    city: str


@dataclass(frozen=True)
class RoomInfo:
    id: str
    site_id: str
    name: str
    account_id: str
    available: bool
    seats: int | None = None


def account_id(cert_pem: str) -> str:
    """An account's id: the first 32 hex digits of the SHA-256 of its certificate's DER."""
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(Encoding.DER)
    return hashlib.sha256(der).hexdigest()[:32]


def pem_sha256(cert_pem: str) -> str | None:
    """The SHA-256 of a PEM certificate's DER, or None for text that is not a certificate."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii", "replace"))
    except ValueError:
        return None
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def lot_id(project_code: str, lot_code: str) -> str:
    return f"{project_code}/{lot_code}"


# --- engine ----------------------------------------------------------------------------------


def database_url(url: str | None, data_dir: Path) -> str:
    """The SQLAlchemy async URL for ``url`` (None: SQLite in ``data_dir``)."""
    if url is None:
        return f"sqlite+aiosqlite:///{data_dir.resolve() / 'bidbridge.db'}"
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _upgrade(connection: sa.Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    command.upgrade(config, "heads")  # every branch (migrations added side by side)


async def open_store(url: str | None, data_dir: Path) -> Store:
    """Open (and migrate to the newest schema) the database; blobs go to ``data_dir/blobs``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    full_url = database_url(url, data_dir)
    is_sqlite = full_url.startswith("sqlite")
    engine = create_async_engine(full_url, pool_pre_ping=not is_sqlite)
    if is_sqlite:
        sa_event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    try:
        async with engine.begin() as conn:
            if not is_sqlite:
                # Two server processes starting at once must not both create the tables.
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            await conn.run_sync(_upgrade)
    except BaseException as exc:
        await engine.dispose()
        if _is_unavailable(exc):
            raise StoreUnavailable(str(exc)) from exc
        raise

    return Store(engine, BlobStore(data_dir / "blobs"))


# --- the store -------------------------------------------------------------------------------


IMPORT_CHUNK = 500
"""Expert rows per statement of a pool import."""


class Store(EventLog):
    """Every read and write of the server's persistent state; each method is one transaction."""

    def __init__(self, engine: AsyncEngine, blobs: BlobStore) -> None:
        self.engine = engine
        self.blobs = blobs

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed if the block finishes, rolled back if it raises."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except StoreError:
            raise
        except Exception as exc:
            if _is_unavailable(exc):
                raise StoreUnavailable(str(exc)) from exc
            raise

    def _insert(self, model: type[Base]) -> Any:
        """A dialect-specific INSERT, for ON CONFLICT clauses."""
        if self.dialect == "postgresql":
            return pg_dialect.insert(model)
        return sqlite_dialect.insert(model)

    async def _insert_new(self, model: type[Base], what: str, **values: Any) -> None:
        """INSERT one row; AlreadyExists if its primary key is taken."""
        async with self._tx() as conn:
            result = await conn.execute(
                self._insert(model).values(**values).on_conflict_do_nothing()
            )
            if result.rowcount != 1:
                raise AlreadyExists(what)

    # --- companies ---------------------------------------------------------------------------

    async def add_company(
        self,
        credit_code: str,
        name: str,
        signing_cert_pem: str,
        encryption_cert_pem: str,
        at: datetime,
    ) -> CompanyRow:
        """A company with the two certificates it registers with, both bound from now (the
        binding log records them, actor ``registration``)."""
        row = CompanyRow(credit_code, name, signing_cert_pem, encryption_cert_pem, at)
        async with self._tx() as conn:
            result = await conn.execute(
                self._insert(Company).values(**asdict(row)).on_conflict_do_nothing()
            )
            if result.rowcount != 1:
                raise AlreadyExists(f"company {credit_code}")
            for usage, pem in (("signing", signing_cert_pem), ("encryption", encryption_cert_pem)):
                sha = pem_sha256(pem)
                if sha is not None:  # text that is not a certificate binds nothing
                    await self._bind(
                        conn, credit_code, sha, usage, pem, at, "registration", "registration"
                    )
        return row

    async def get_company(self, credit_code: str) -> CompanyRow | None:
        async with self._tx() as conn:
            query = sa.select(*_columns(Company)).where(Company.credit_code == credit_code)
            row = (await conn.execute(query)).first()
        return _row(CompanyRow, row) if row else None

    async def list_companies(self) -> list[CompanyRow]:
        async with self._tx() as conn:
            query = sa.select(*_columns(Company)).order_by(Company.credit_code)
            return [_row(CompanyRow, r) for r in await conn.execute(query)]

    # --- certificate bindings ----------------------------------------------------------------

    async def _bind(
        self,
        conn: AsyncConnection,
        credit_code: str,
        cert_sha256: str,
        usage: str,
        cert_pem: str,
        at: datetime,
        actor: str,
        via: str,
        signer_sha256: str | None = None,
        signature: str | None = None,
    ) -> BindingRow:
        values = {
            "credit_code": credit_code,
            "cert_sha256": cert_sha256,
            "usage": usage,
            "cert_pem": cert_pem,
            "bound_at": at,
            "bound_by": actor,
            "unbound_at": None,
            "unbound_by": None,
        }
        # The partial unique index (one open binding per certificate and usage) settles a race
        # between two binding requests on either database.
        result = await conn.execute(
            self._insert(CertBinding)
            .values(**values)
            .on_conflict_do_nothing()
            .returning(CertBinding.id)
        )
        new_id = result.scalar()
        if new_id is None:
            raise AlreadyExists(f"{usage} certificate {cert_sha256} is bound already")
        await conn.execute(
            sa.insert(CertBindingEvent).values(
                at=at,
                credit_code=credit_code,
                action="bound",
                cert_sha256=cert_sha256,
                usage=usage,
                actor=actor,
                via=via,
                signer_sha256=signer_sha256,
                signature=signature,
            )
        )
        return BindingRow(id=int(new_id), **values)  # type: ignore[arg-type]

    async def bind_certificate(
        self,
        credit_code: str,
        cert_sha256: str,
        usage: str,
        cert_pem: str,
        at: datetime,
        *,
        actor: str,
        via: str,
        signer_sha256: str | None = None,
        signature: str | None = None,
    ) -> BindingRow:
        """Bind a certificate to a company and log it, in one transaction; AlreadyExists if it
        is bound for ``usage`` already."""
        async with self._tx() as conn:
            exists = await conn.scalar(
                sa.select(Company.credit_code).where(Company.credit_code == credit_code)
            )
            if exists is None:
                raise NotFound(f"company {credit_code}")
            return await self._bind(
                conn,
                credit_code,
                cert_sha256,
                usage,
                cert_pem,
                at,
                actor,
                via,
                signer_sha256,
                signature,
            )

    async def unbind_certificate(
        self, credit_code: str, cert_sha256: str, usage: str, at: datetime, *, actor: str
    ) -> None:
        """End a company's open binding of a certificate and log it; NotFound if none is open."""
        async with self._tx() as conn:
            result = await conn.execute(
                sa.update(CertBinding)
                .where(
                    CertBinding.credit_code == credit_code,
                    CertBinding.cert_sha256 == cert_sha256,
                    CertBinding.usage == usage,
                    CertBinding.unbound_at.is_(None),
                )
                .values(unbound_at=at, unbound_by=actor)
            )
            if result.rowcount != 1:
                raise NotFound(f"{usage} certificate {cert_sha256} of {credit_code}")
            await conn.execute(
                sa.insert(CertBindingEvent).values(
                    at=at,
                    credit_code=credit_code,
                    action="unbound",
                    cert_sha256=cert_sha256,
                    usage=usage,
                    actor=actor,
                    via="centre",
                )
            )

    async def bindings_of(self, credit_code: str) -> list[BindingRow]:
        """Every binding a company has had, open or ended, oldest first."""
        query = (
            sa.select(*_columns(CertBinding))
            .where(CertBinding.credit_code == credit_code)
            .order_by(CertBinding.bound_at, CertBinding.id)
        )
        async with self._tx() as conn:
            return [_row(BindingRow, r) for r in await conn.execute(query)]

    async def binding_events(self, credit_code: str) -> list[BindingEventRow]:
        query = (
            sa.select(*_columns(CertBindingEvent))
            .where(CertBindingEvent.credit_code == credit_code)
            .order_by(CertBindingEvent.id)
        )
        async with self._tx() as conn:
            return [_row(BindingEventRow, r) for r in await conn.execute(query)]

    # --- accounts ----------------------------------------------------------------------------

    async def add_account(
        self,
        role: str,
        name: str,
        cert_pem: str,
        at: datetime,
        remit: tuple[str, str] | None = None,
    ) -> AccountRow:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        region, industry = remit or (None, None)
        row = AccountRow(account_id(cert_pem), role, name, cert_pem, at, region, industry)
        await self._insert_new(Account, f"account {row.id}", **asdict(row))
        return row

    async def get_account(self, id: str) -> AccountRow | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(sa.select(*_columns(Account)).where(Account.id == id))
            ).first()
        return _row(AccountRow, row) if row else None

    async def list_accounts(self, role: str | None = None) -> list[AccountRow]:
        query = sa.select(*_columns(Account)).order_by(Account.created_at, Account.id)
        if role is not None:
            query = query.where(Account.role == role)
        async with self._tx() as conn:
            return [_row(AccountRow, r) for r in await conn.execute(query)]

    # --- projects and lots -------------------------------------------------------------------

    async def add_project(
        self,
        code: str,
        name: str,
        tenderer_name: str,
        tenderer_credit_code: str,
        supervising_body: tuple[str, str] | None = None,
    ) -> ProjectRow:
        region, industry = supervising_body or (None, None)
        row = ProjectRow(code, name, tenderer_name, tenderer_credit_code, region, industry)
        await self._insert_new(Project, f"project {code}", **asdict(row))
        return row

    async def get_project(self, code: str) -> ProjectRow | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(sa.select(*_columns(Project)).where(Project.code == code))
            ).first()
        return _row(ProjectRow, row) if row else None

    async def supervising_bodies(self) -> dict[str, tuple[str, str] | None]:
        """Each lot's supervising body (its project's), by lot id."""
        query = sa.select(Lot.id, Project.supervisor_region, Project.supervisor_industry).join(
            Project, Project.code == Lot.project_code
        )
        async with self._tx() as conn:
            rows = list(await conn.execute(query))
        return {lot: _region_industry(r, i) for lot, r, i in rows}

    async def add_lot(self, project_code: str, code: str, name: str) -> LotRow:
        if await self.get_project(project_code) is None:
            raise NotFound(f"project {project_code}")
        row = LotRow(lot_id(project_code, code), project_code, code, name)
        await self._insert_new(Lot, f"lot {row.id}", **asdict(row))
        return row

    async def get_lot(self, lot_id: str) -> LotRow | None:
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(*_columns(Lot)).where(Lot.id == lot_id))).first()
        return _row(LotRow, row) if row else None

    async def list_lots(self, project_code: str) -> list[LotRow]:
        query = sa.select(*_columns(Lot)).where(Lot.project_code == project_code).order_by(Lot.code)
        async with self._tx() as conn:
            return [_row(LotRow, r) for r in await conn.execute(query)]

    # --- sessions and their event logs -------------------------------------------------------

    async def add_challenge(self, nonce: str, expires_at: datetime) -> None:
        await self._insert_new(
            LoginChallenge, "login challenge", nonce=nonce, expires_at=expires_at, used=False
        )

    async def consume_challenge(self, nonce: str, now: datetime) -> bool:
        """True for the first caller only, and only before the challenge expires."""
        update = (
            sa.update(LoginChallenge)
            .where(
                LoginChallenge.nonce == nonce,
                LoginChallenge.used.is_(False),
                LoginChallenge.expires_at > now,
            )
            .values(used=True)
        )
        async with self._tx() as conn:
            return (await conn.execute(update)).rowcount == 1

    async def purge_challenges(self, now: datetime) -> int:
        """Delete expired challenges; returns how many."""
        async with self._tx() as conn:
            result = await conn.execute(
                sa.delete(LoginChallenge).where(LoginChallenge.expires_at <= now)
            )
            return result.rowcount

    # --- bid content keys --------------------------------------------------------------------

    async def put_bid_key(self, session_id: str, envelope_sha256: str, cek_hex: str) -> None:
        """Keep a decrypted bid's content key; storing the same key again is harmless."""
        async with self._tx() as conn:
            await conn.execute(
                self._insert(BidKey)
                .values(session_id=session_id, envelope_sha256=envelope_sha256, cek_hex=cek_hex)
                .on_conflict_do_nothing()
            )
            stored = await conn.scalar(
                sa.select(BidKey.cek_hex).where(
                    BidKey.session_id == session_id, BidKey.envelope_sha256 == envelope_sha256
                )
            )
            if stored != cek_hex:
                raise AlreadyExists(f"a different key for envelope {envelope_sha256}")

    async def bid_keys(self, session_id: str) -> dict[str, str]:
        query = sa.select(BidKey.envelope_sha256, BidKey.cek_hex).where(
            BidKey.session_id == session_id
        )
        async with self._tx() as conn:
            return {sha: cek for sha, cek in await conn.execute(query)}

    # --- backup decryption shares ------------------------------------------------------------

    async def put_share(self, request_id: str, custodian_id: str, share_json: str) -> None:
        insert = self._insert(BackupShare).values(
            request_id=request_id, custodian_id=custodian_id, share_json=share_json
        )
        insert = insert.on_conflict_do_update(
            index_elements=["request_id", "custodian_id"],
            set_={"share_json": insert.excluded.share_json},
        )
        async with self._tx() as conn:
            await conn.execute(insert)

    async def shares(self, request_id: str) -> dict[str, str]:
        query = sa.select(BackupShare.custodian_id, BackupShare.share_json).where(
            BackupShare.request_id == request_id
        )
        async with self._tx() as conn:
            return {custodian: share for custodian, share in await conn.execute(query)}

    async def drop_shares(self, request_id: str) -> int:
        async with self._tx() as conn:
            result = await conn.execute(
                sa.delete(BackupShare).where(BackupShare.request_id == request_id)
            )
            return result.rowcount

    # --- expert pool, sites and rooms --------------------------------------------------------

    async def import_experts(self, experts: Sequence[dict[str, Any]], at: datetime) -> int:
        """Add or update experts by id, all in one transaction (nothing half-imported).

        In chunks of ``IMPORT_CHUNK`` rows: each chunk's parameters are prepared on the event
        loop, so a smaller chunk is a shorter pause of every hall on this process
        (``scripts/bench_pool_import.py``)."""
        if not experts:
            return 0
        # An upsert, in the order of the ids: imports that overlap (the same rows at once) wait
        # for each other row by row and never deadlock or collide on a key.
        ordered = sorted(experts, key=lambda e: str(e["id"]))
        insert = self._insert(ExpertRow)
        upsert = insert.on_conflict_do_update(
            index_elements=[ExpertRow.id],
            set_={"data": insert.excluded.data, "imported_at": insert.excluded.imported_at},
        )
        async with self._tx() as conn:
            for start in range(0, len(ordered), IMPORT_CHUNK):
                chunk = ordered[start : start + IMPORT_CHUNK]
                await conn.execute(
                    upsert, [{"id": e["id"], "data": e, "imported_at": at} for e in chunk]
                )
        return len(experts)

    async def list_experts(self) -> list[dict[str, Any]]:
        async with self._tx() as conn:
            rows = await conn.execute(sa.select(ExpertRow.data).order_by(ExpertRow.id))
            return [r[0] for r in rows]

    async def count_experts(self) -> int:
        async with self._tx() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(ExpertRow)) or 0)

    async def add_site(self, id: str, name: str, city: str) -> SiteInfo:
        row = SiteInfo(id, name, city)
        await self._insert_new(SiteRow, f"site {id}", **asdict(row))
        return row

    async def list_sites(self) -> list[SiteInfo]:
        async with self._tx() as conn:
            query = sa.select(*_columns(SiteRow)).order_by(SiteRow.id)
            return [_row(SiteInfo, r) for r in await conn.execute(query)]

    async def add_room(
        self,
        id: str,
        site_id: str,
        name: str,
        cert_pem: str,
        at: datetime,
        seats: int | None = None,
    ) -> RoomInfo:
        """A room and its device account, together."""
        account = AccountRow(account_id(cert_pem), "room", name, cert_pem, at)
        row = RoomInfo(id, site_id, name, account.id, True, seats)
        async with self._tx() as conn:
            if await conn.scalar(sa.select(SiteRow.id).where(SiteRow.id == site_id)) is None:
                raise NotFound(f"site {site_id}")
            for model, values, what in (
                (Account, asdict(account), f"account {account.id}"),
                (RoomRow, asdict(row), f"room {id}"),
            ):
                result = await conn.execute(
                    self._insert(model).values(**values).on_conflict_do_nothing()
                )
                if result.rowcount != 1:
                    raise AlreadyExists(what)
        return row

    async def list_rooms(self) -> list[RoomInfo]:
        async with self._tx() as conn:
            query = sa.select(*_columns(RoomRow)).order_by(RoomRow.id)
            return [_row(RoomInfo, r) for r in await conn.execute(query)]

    async def room_of_account(self, account: str) -> RoomInfo | None:
        async with self._tx() as conn:
            query = sa.select(*_columns(RoomRow)).where(RoomRow.account_id == account)
            row = (await conn.execute(query)).first()
        return _row(RoomInfo, row) if row else None

    # --- draw secrets ------------------------------------------------------------------------

    async def put_draw_secret(self, session_id: str, server_random_hex: str) -> str:
        """Keep the server's random value for a draw; the first one stored wins."""
        async with self._tx() as conn:
            await conn.execute(
                self._insert(DrawSecret)
                .values(session_id=session_id, server_random=server_random_hex)
                .on_conflict_do_nothing()
            )
            stored = await conn.scalar(
                sa.select(DrawSecret.server_random).where(DrawSecret.session_id == session_id)
            )
        assert stored is not None
        return str(stored)

    async def draw_secret(self, session_id: str) -> str | None:
        async with self._tx() as conn:
            value = await conn.scalar(
                sa.select(DrawSecret.server_random).where(DrawSecret.session_id == session_id)
            )
        return None if value is None else str(value)

    # --- server heartbeats -------------------------------------------------------------------

    async def beat(self, instance: str, at: datetime) -> None:
        """This process is alive at ``at`` (clock time)."""
        values = {"instance": instance, "beat_at": at, "stopped_at": None}
        async with self._tx() as conn:
            await conn.execute(
                self._insert(ServerHeartbeat)
                .values(**values)
                .on_conflict_do_update(
                    index_elements=["instance"], set_={"beat_at": at, "stopped_at": None}
                )
            )

    async def stopped(self, instance: str, at: datetime) -> None:
        """This process stops cleanly at ``at``."""
        async with self._tx() as conn:
            await conn.execute(
                sa.update(ServerHeartbeat)
                .where(ServerHeartbeat.instance == instance)
                .values(beat_at=at, stopped_at=at)
            )

    async def heartbeats(self) -> list[tuple[str, datetime, datetime | None]]:
        """Every process's (instance, last beat, clean stop or None)."""
        async with self._tx() as conn:
            query = sa.select(
                ServerHeartbeat.instance, ServerHeartbeat.beat_at, ServerHeartbeat.stopped_at
            )
            return [(r[0], r[1], r[2]) for r in await conn.execute(query)]

    async def forget_heartbeats(self, before: datetime) -> None:
        """Drop the rows of processes last seen before ``before`` (they are gone)."""
        async with self._tx() as conn:
            await conn.execute(sa.delete(ServerHeartbeat).where(ServerHeartbeat.beat_at < before))
