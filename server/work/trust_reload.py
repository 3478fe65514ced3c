"""Live revocation: the trust folder reloaded while the server runs, and revoked certificates'
tokens ended at once.

- The folder is compared every ``trust_poll_seconds`` (names, sizes, times: a stat) and read
  again at least every ``trust_reload_seconds`` (its content digest catches a rewrite the stat
  misses). A new store is built off the event loop and swapped in one assignment
  (``hub.trust``); a folder that does not load (a broken file, no root left) is refused with a
  log line and the old store stays.
- With ``fetch_crls`` the CRLs of the certificates' HTTP distribution points are fetched and
  cached (``server/work/crl_fetch.py``) and join the store: an expired CRL is replaced without a
  restart.
- Each store comes with its :class:`~crypto.revocation.RevocationSet`. A token names its
  certificate by SHA-256; the index here maps it to (issuer, serial), so the check every request
  and hall connection makes (``Tokens.revoked``) is two dictionary lookups. The index learns a
  certificate when it validates (login, an expert's sign-in), from the registered companies and
  accounts at each reload, and from the data folder (``trust-state/certs``), where each
  validated certificate is kept so that the other processes of the server can resolve tokens
  this one issued.
- A reload that finds a known certificate newly revoked writes ``certificate_revoked`` to the
  record of revocations (``server/work/revocation_record.py``) and closes that certificate's
  hall connections; the first refused token of a certificate writes ``token_refused``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from crypto.attest import b64encode
from crypto.errors import BidBridgeError
from crypto.revocation import (
    CertKey,
    RevocationSet,
    RevokedEntry,
    cert_key,
    distribution_points,
    folder_digest,
    folder_stamp,
)
from crypto.trust import TrustStore
from server.auth import Principal, TokenRevoked
from server.identity import cert_sha256
from server.realtime.tasks import stop_task
from server.work.crl_fetch import CrlFetcher
from server.work.revocation_record import append_once

if TYPE_CHECKING:
    from server.core import Hub

log = logging.getLogger(__name__)

STATE = "trust-state"


def describe(entry: RevokedEntry) -> str:
    when = entry.revoked_at.isoformat()
    return (
        f"{entry.issuer} #{entry.serial:x}: 吊销时间 {when}，原因 {entry.reason} / "
        f"revoked at {when}, reason {entry.reason}"
    )


class LiveTrust:
    """The hub's trust store kept current, and the revocation check of every token."""

    def __init__(self, hub: Hub, folder: Path | None, *, fetch: bool = False) -> None:
        self.hub = hub
        self.folder = folder
        self.state = hub.settings.data_dir / STATE
        self.journal = self.state / "revocations.jsonl"
        self.fetcher = CrlFetcher(self.state / "crls") if fetch else None
        self.revoked = RevocationSet()
        self._set_of: TrustStore | None = None  # the store ``revoked`` was computed from
        self._base = hub.trust  # without a folder: the store given at start, plus fetched CRLs
        self._known: dict[str, CertKey] = {}  # certificate SHA-256 -> (issuer, serial)
        self._by_key: dict[CertKey, dict[str, str]] = {}  # (issuer, serial) -> {sha: subject}
        self._urls: list[str] = []  # CRL distribution points of the known certificates
        self._unresolved: set[str] = set()  # no certificate file; cleared at each reload
        self._pems: dict[str, x509.Certificate] = {}  # parsed registered certificates
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._digest: str | None = None
        self._read_at = 0.0  # monotonic time the folder was last read in full
        self._noted: set[str] = set()  # certificates whose refused token is recorded
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0  # stores swapped in since the start (tests and logs)

    # --- hooks ------------------------------------------------------------------------------

    def install(self) -> None:
        """Check every token against the revocation set; index every validated certificate."""
        self.hub.tokens.revoked = self.token_revoked
        self.hub.trust.on_validated = self.seen

    def seen(self, cert: x509.Certificate) -> None:
        """A certificate validated (sign-in): index it, and keep it for the other processes."""
        sha = cert_sha256(cert)
        if sha in self._known:
            return
        self._index(sha, cert)
        path = self.state / "certs" / f"{sha}.der"
        try:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{time.monotonic_ns()}.tmp")
                tmp.write_bytes(cert.public_bytes(Encoding.DER))
                tmp.replace(path)
        except OSError as exc:
            log.warning("trust: certificate %s not kept (%s)", sha, exc)

    def _index(self, sha: str, cert: x509.Certificate) -> None:
        key = cert_key(cert)
        self._known[sha] = key
        self._by_key.setdefault(key, {})[sha] = cert.subject.rfc4514_string()
        for url in distribution_points(cert):
            if url not in self._urls:
                self._urls.append(url)

    def _resolve(self, sha: str) -> CertKey | None:
        """A certificate another process indexed (its file), once; unknown ones stay unknown
        until the next reload."""
        if sha in self._unresolved or len(sha) != 64 or not sha.isalnum():
            return None
        try:
            cert = x509.load_der_x509_certificate(
                (self.state / "certs" / f"{sha}.der").read_bytes()
            )
        except (OSError, ValueError):
            self._unresolved.add(sha)
            return None
        if cert_sha256(cert) != sha:
            self._unresolved.add(sha)
            return None
        self._index(sha, cert)
        return self._known[sha]

    def lookup(self, sha: str) -> RevokedEntry | None:
        """The revocation of the certificate with this SHA-256, or None: two dict lookups."""
        key = self._known.get(sha)
        if key is None:
            key = self._resolve(sha)
            if key is None:
                return None
        return self.revoked.get(key)

    def token_revoked(self, p: Principal) -> str | None:
        """``Tokens.revoked``: the detail if the token's certificate is revoked, else None."""
        entry = self.lookup(p.cert_sha256)
        if entry is None:
            return None
        if p.cert_sha256 not in self._noted:
            self._noted.add(p.cert_sha256)
            self._record("token_refused", p.cert_sha256, entry, role=p.role, party=p.party_id)
        return describe(entry)

    # --- the record ---------------------------------------------------------------------------

    def _record(self, kind: str, sha: str, entry: RevokedEntry, **more: str) -> None:
        key = self._known.get(sha)
        subject = self._by_key.get(key, {}).get(sha, "") if key is not None else ""
        now = self.hub.clock.now()
        item: dict[str, Any] = {
            "kind": kind,
            "at": now.isoformat(),
            "cert_sha256": sha,
            "subject": subject,
            "issuer": entry.issuer,
            "serial": f"{entry.serial:x}",
            "revoked_at": entry.revoked_at.isoformat(),
            "reason": entry.reason,
            **more,
        }

        def sign(content: bytes) -> str:
            return b64encode(self.hub.identity.sign(content, now))

        try:
            # Rare (once per certificate and kind) and small: written in place, under a lock
            # shared with the other processes.
            if append_once(self.journal, item, sign) is not None:
                log.warning("revocation: %s %s (%s)", kind, sha, describe(entry))
        except (OSError, ValueError, BidBridgeError) as exc:
            log.error("revocation: not recorded: %s %s (%s)", kind, sha, exc)

    # --- reloading ----------------------------------------------------------------------------

    async def _registered(self) -> None:
        """Index the certificates registered to companies and accounts (parsed once each)."""
        store = self.hub.store
        pems: list[str] = []
        for company in await store.list_companies():
            pems += [company.signing_cert_pem, company.encryption_cert_pem]
        pems += [account.cert_pem for account in await store.list_accounts()]
        for pem in pems:
            if pem in self._pems:
                continue
            try:
                cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
            except ValueError:
                continue
            self._pems[pem] = cert
            self._index(cert_sha256(cert), cert)

    def _load_folder(self, folder: Path) -> TrustStore:
        store = TrustStore.from_directory(folder)
        if not store.roots:
            raise ValueError("no root certificate left in the folder / 目录中没有根证书")
        return store

    async def reload(self, *, force: bool = False) -> bool:
        """Read the folder (and fetch CRLs) if due; swap the store if anything changed.

        ``force``: read the folder's content even if its stamp did not change. Returns whether
        a new store was swapped in."""
        async with self._lock:
            return await self._reload(force)

    async def _reload(self, force: bool) -> bool:
        hub = self.hub
        self._unresolved.clear()
        try:
            await self._registered()
        except Exception as exc:  # the database may be away; the folder still reloads
            log.warning("trust: registered certificates not read (%s)", exc)
        fetched = False
        if self.fetcher is not None:
            cas = [*hub.trust.roots, *hub.trust.intermediates]
            urls = list(self._urls)
            for ca in hub.trust.intermediates:
                urls += [u for u in distribution_points(ca) if u not in urls]
            fetched = await self.fetcher.refresh(urls, cas, hub.clock.now())
        store = hub.trust
        swapped = False
        if self.folder is not None or fetched:
            stamp = folder_stamp(self.folder) if self.folder is not None else ()
            due = force or stamp != self._stamp or fetched
            if due:
                try:
                    store = await asyncio.to_thread(self._build, stamp, fetched)
                except Exception as exc:
                    log.error(
                        "trust: 信任目录未重新载入，继续使用原有内容 / the trust folder was not "
                        "reloaded, the previous store stays: %s",
                        exc,
                    )
                    # Not again until it changes or the next full read is due.
                    self._stamp, self._read_at = stamp, time.monotonic()
                    return False
                swapped = store is not hub.trust
        if store is self._set_of:
            return False  # the same store: the same revocation set
        revoked, refused = await asyncio.to_thread(
            RevocationSet.from_crls, store.crls, [*store.roots, *store.intermediates]
        )
        self._set_of = store
        for crl in refused:
            log.warning(
                "trust: CRL of %s does not verify with a trusted CA, not used for revocation",
                crl.issuer.rfc4514_string(),
            )
        if swapped:
            store.on_validated = self.seen
            hub.trust = store  # one assignment: a request sees the old store or the new one
            self.reloads += 1
            log.info(
                "trust: 信任目录已重新载入 / trust store reloaded (%d roots, %d CRLs, %d revoked)",
                len(store.roots),
                len(store.crls),
                len(revoked),
            )
        newly = revoked.keys() - self.revoked.keys()
        self.revoked = revoked
        if newly:
            await self._newly_revoked(newly)
        return swapped

    def _build(self, stamp: tuple[tuple[str, int, int], ...], fetched: bool) -> TrustStore:
        """The new store (blocking: a worker thread), or the current one if nothing changed."""
        base = self._base
        if self.folder is None:
            store = TrustStore(
                base.roots,
                base.intermediates,
                base.crls,
                require_revocation=base.require_revocation,
            )
            digest = None
        else:
            digest = folder_digest(self.folder)
            if digest == self._digest and not fetched:
                self._stamp, self._read_at = stamp, time.monotonic()
                return self.hub.trust
            store = self._load_folder(self.folder)
        if self.fetcher is not None:
            for crl in self.fetcher.crls():
                store.add_crl(crl)
        self._stamp, self._digest, self._read_at = stamp, digest, time.monotonic()
        return store

    async def _newly_revoked(self, keys: frozenset[CertKey]) -> None:
        shas: set[str] = set()
        for key in keys:
            entry = self.revoked.get(key)
            for sha in self._by_key.get(key, {}):
                shas.add(sha)
                if entry is not None:
                    self._record("certificate_revoked", sha, entry)
        hall = self.hub.hall
        if shas and hall is not None:
            await hall.drop_certificates(lambda sha: sha in shas, TokenRevoked())

    # --- the timer ----------------------------------------------------------------------------

    def start(self) -> None:
        if self.folder is None and self.fetcher is None:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="trust-reload")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self) -> None:
        settings = self.hub.settings
        while True:
            await asyncio.sleep(settings.trust_poll_seconds)
            full = time.monotonic() - self._read_at >= settings.trust_reload_seconds
            try:
                if full:
                    self._read_at = time.monotonic()  # also when there is no folder to read
                    await self.reload(force=True)
                elif self.folder is not None and folder_stamp(self.folder) != self._stamp:
                    await self.reload()
            except Exception:  # the timer must outlive one bad round
                log.exception("trust: reload failed")
