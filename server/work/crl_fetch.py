"""CRLs fetched over HTTP from the certificates' CRL distribution points, cached on disk.

Only with ``--fetch-crls`` (``Settings.fetch_crls``). A CRL is used only once its signature
verifies with the key of a CA in the trust store, and never replaces a newer one it already has
(an attacker on the unencrypted HTTP path could otherwise serve an old, validly signed CRL that
does not list a recent revocation). The cache is a folder of the data folder, one file per URL,
so several processes and a restart share it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from crypto.revocation import crl_signer

log = logging.getLogger(__name__)

MAX_CRL_BYTES = 32 * 1024 * 1024
"""A CRL larger than this is refused (the largest public CAs' full CRLs are a few MB)."""
TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=5, sock_read=10)
REFETCH = timedelta(hours=1)
"""A current CRL is fetched again after this long (CAs publish before nextUpdate)."""
RETRY_SECONDS = 60.0
"""After a failure, the same URL is tried again after this many (real) seconds."""


class FetchFailed(Exception):
    pass


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except (x509.ExtensionNotFound, ValueError):
        return None


def _parse(data: bytes) -> x509.CertificateRevocationList:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise FetchFailed(f"not a CRL ({exc})") from None


def _older(new: x509.CertificateRevocationList, old: x509.CertificateRevocationList) -> bool:
    """Whether ``new`` is older than ``old`` (by CRL number when both have one)."""
    n_new, n_old = _crl_number(new), _crl_number(old)
    if n_new is not None and n_old is not None and n_new != n_old:
        return n_new < n_old
    return new.last_update_utc < old.last_update_utc


class CrlFetcher:
    """Keeps one current, verified CRL per distribution point URL."""

    def __init__(
        self,
        folder: Path,
        *,
        max_bytes: int = MAX_CRL_BYTES,
        timeout: aiohttp.ClientTimeout = TIMEOUT,
    ) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._crls: dict[str, x509.CertificateRevocationList] = {}
        self._fetched_at: dict[str, datetime] = {}
        self._retry_at: dict[str, float] = {}
        self._loaded = False

    def crls(self) -> list[x509.CertificateRevocationList]:
        return list(self._crls.values())

    def _file(self, url: str) -> Path:
        return self.folder / (hashlib.sha256(url.encode("utf-8")).hexdigest() + ".crl")

    def _load_cache(self, urls: Sequence[str]) -> None:
        for url in urls:
            if url in self._crls:
                continue
            try:
                self._crls[url] = x509.load_der_x509_crl(self._file(url).read_bytes())
            except (OSError, ValueError):
                continue

    def _due(self, url: str, now: datetime) -> bool:
        if time.monotonic() < self._retry_at.get(url, 0.0):
            return False
        crl = self._crls.get(url)
        if crl is None:
            return True
        next_update = crl.next_update_utc
        if next_update is None or next_update <= now:
            return True
        fetched = self._fetched_at.get(url)
        return fetched is None or now - fetched >= REFETCH

    async def refresh(
        self, urls: Sequence[str], cas: Sequence[x509.Certificate], now: datetime
    ) -> bool:
        """Fetch the URLs whose CRL is missing, expired or an hour old; whether any changed."""
        self._load_cache(urls)
        due = [url for url in urls if self._due(url, now)]
        if not due:
            return False
        changed = False
        async with aiohttp.ClientSession(timeout=self.timeout) as http:
            for url in due:
                try:
                    crl = await self._fetch(http, url, cas)
                except FetchFailed as exc:
                    self._retry_at[url] = time.monotonic() + RETRY_SECONDS
                    log.warning("CRL %s: 未能获取 / not fetched: %s", url, exc)
                    continue
                self._fetched_at[url] = now
                old = self._crls.get(url)
                if old is not None and _older(crl, old):
                    log.warning(
                        "CRL %s: 比已有的旧，未采用 / older than the one held, not used", url
                    )
                    continue
                if old is not None and crl.public_bytes(Encoding.DER) == old.public_bytes(
                    Encoding.DER
                ):
                    continue
                await asyncio.to_thread(self._store, url, crl)
                self._crls[url] = crl
                changed = True
                log.info("CRL %s: 已更新 / updated (thisUpdate %s)", url, crl.last_update_utc)
        return changed

    async def _fetch(
        self, http: aiohttp.ClientSession, url: str, cas: Sequence[x509.Certificate]
    ) -> x509.CertificateRevocationList:
        try:
            async with http.get(url, max_redirects=3) as r:
                if r.status != 200:
                    raise FetchFailed(f"HTTP {r.status}")
                if r.content_length is not None and r.content_length > self.max_bytes:
                    raise FetchFailed(f"larger than {self.max_bytes} bytes")
                chunks: list[bytes] = []
                size = 0
                async for chunk in r.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FetchFailed(f"larger than {self.max_bytes} bytes")
                    chunks.append(chunk)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise FetchFailed(f"{type(exc).__name__}: {exc}") from None
        crl = _parse(b"".join(chunks))
        if crl_signer(crl, cas) is None:
            raise FetchFailed(
                f"signature does not verify with a trusted CA named {crl.issuer.rfc4514_string()}"
            )
        return crl

    def _store(self, url: str, crl: x509.CertificateRevocationList) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._file(url)
        tmp = path.with_suffix(f".{time.monotonic_ns()}.tmp")
        tmp.write_bytes(crl.public_bytes(Encoding.DER))
        tmp.replace(path)
