"""The bidder's (and staff's) agent: REST calls to the opening hall and a live hall follower.

``HallClient`` speaks the hall's REST API (``server/api/hall.py``): CA login with the company's
signing key, uploads streamed from disk, the decryption rehearsal and the online decryption done
locally (only the content-encryption key is sent, never a private key or the plaintext), signed
confirmations of the opening table and signatures on the opening record.

``HallFollower`` follows a session over socket.io (namespace ``/hall``): it keeps the events by
``seq``, drops duplicates, resumes after a reconnect from the last contiguous ``seq``, asks for a
replay when it notices a gap, and measures its clock offset from the server (the only authority
for countdowns).

This module never imports ``server`` (DESIGN.md section 2): only ``crypto`` and ``schemas``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import socketio
from cryptography import x509
from pydantic import BaseModel

from crypto.attest import SignedDocument, b64decode, b64encode, sign_document, verify_document
from crypto.bid import open_bid, unwrap
from crypto.errors import BidBridgeError, KeyLoadFailed
from crypto.fingerprint import HEADER as MACHINE_HEADER
from crypto.fingerprint import this_machine
from crypto.keys import (
    PrivateKeyHandle,
    check_key_matches,
    load_certificate,
    load_certificates,
    load_private_key,
)
from schemas import api as S
from schemas.canonical import canonical_json
from schemas.time import parse_iso

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
"""Upload and download chunk size (1 MiB)."""
NAMESPACE = "/hall"
PASSWORD_ENV = "BIDBRIDGE_KEY_PASSWORD"
"""Environment variable holding a key file's password (as ``crypto/cli.py``)."""
PIN_ENV = "BIDBRIDGE_PIN"
MACHINE_ACTIONS = frozenset({"sign-in", "rehearsal", "key"})
"""The calls that carry the machine fingerprint header (with the upload)."""
"""Environment variable holding the token (CA 锁) user PIN."""
BACKUP_PURPOSE = "bidbridge-backup-approval"
MAX_MESSAGE = 2000

ProgressCallback = Callable[[int, int], None]
"""``progress(bytes_sent, total)``."""


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- errors -------------------------------------------------------------------------------------


class AgentError(BidBridgeError):
    """A refusal from the server (its JSON error body), or a failure of the agent itself.

    ``code``, ``zh`` and ``en`` are the server's; ``status`` is the HTTP status (0 when the
    request never got an answer).
    """

    def __init__(
        self, code: str, zh: str, en: str, detail: str | None = None, status: int = 0
    ) -> None:
        self.code = code
        self.zh = zh
        self.en = en
        self.status = status
        super().__init__(detail or None)


def _unreachable(url: str, exc: BaseException) -> AgentError:
    return AgentError(
        "SERVER_UNREACHABLE",
        "无法连接开标服务器，请检查网络",
        "the opening server cannot be reached; check the network",
        f"{url}: {type(exc).__name__} {exc}".strip(),
    )


async def _error_of(resp: aiohttp.ClientResponse) -> AgentError:
    """The server's ``ErrorOut`` body as an ``AgentError`` (or a generic one for non-JSON)."""
    text = await resp.text(errors="replace")
    try:
        body = S.ErrorOut.model_validate_json(text)
    except ValueError:
        return AgentError(
            f"HTTP_{resp.status}",
            "服务器拒绝了请求",
            f"the server refused the request ({resp.reason})",
            text[:300],
            resp.status,
        )
    return AgentError(body.code, body.zh, body.en, body.detail, resp.status)


# --- credentials --------------------------------------------------------------------------------


def _env_password() -> bytes | None:
    value = os.environ.get(PASSWORD_ENV)
    return value.encode() if value else None


def _env_pin() -> str | None:
    return os.environ.get(PIN_ENV) or None


def _load_handle(
    key_path: str | Path | None,
    cert_path: str | Path | None,
    token_uri: str | None,
    password: bytes | None,
    pin: str | None,
    what: str,
) -> tuple[PrivateKeyHandle, x509.Certificate, list[x509.Certificate]]:
    """A key (file or PKCS#11 token) and its certificate; the chain a PKCS#12 file carried."""
    chain: list[x509.Certificate] = []
    cert: x509.Certificate | None = None
    if token_uri:
        from crypto.token import find_certificate, open_token_key

        key: PrivateKeyHandle = open_token_key(token_uri, pin)
        cert = load_certificate(cert_path) if cert_path else find_certificate(token_uri, pin)
    elif key_path:
        loaded = load_private_key(key_path, password)
        key = loaded.key
        cert = load_certificate(cert_path) if cert_path else loaded.certificate
        chain = loaded.chain
    else:
        raise KeyLoadFailed(f"{what}: 需要私钥文件或 CA 锁 URI / give a key file or a token URI")
    if cert is None:
        _close(key)
        raise KeyLoadFailed(f"{what}: 找不到证书 / no certificate: give its certificate file")
    try:
        check_key_matches(key, cert)
    except BidBridgeError:
        _close(key)
        raise
    return key, cert, chain


def _close(key: object) -> None:
    closer = getattr(key, "close", None)
    if callable(closer):
        with contextlib.suppress(Exception):
            closer()


@dataclass
class Credentials:
    """The signing key (CA login, confirmations, record signatures) with its certificate and
    chain; optionally the decryption key of the company's encryption certificate (rehearsal and
    online decryption). Keys are files or PKCS#11 tokens; a token key never leaves the token."""

    signing_key: PrivateKeyHandle
    signing_cert: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)
    decrypt_key: PrivateKeyHandle | None = None
    decrypt_cert: x509.Certificate | None = None

    @classmethod
    def load(
        cls,
        *,
        key: str | Path | None = None,
        cert: str | Path | None = None,
        token_uri: str | None = None,
        chain: Sequence[str | Path] = (),
        decrypt_key: str | Path | None = None,
        decrypt_cert: str | Path | None = None,
        decrypt_token_uri: str | None = None,
        password: bytes | None = None,
        pin: str | None = None,
    ) -> Credentials:
        """Load from files (PEM, DER, PKCS#12) or token URIs (RFC 7512).

        The key file password defaults to ``$BIDBRIDGE_KEY_PASSWORD``, the token PIN to
        ``$BIDBRIDGE_PIN`` (else the URI's ``pin-value`` / ``pin-source``).
        """
        password = password if password is not None else _env_password()
        pin = pin if pin is not None else _env_pin()
        skey, scert, p12_chain = _load_handle(key, cert, token_uri, password, pin, "signing key")
        extra = [c for p in chain for c in load_certificates(p)]
        dkey: PrivateKeyHandle | None = None
        dcert: x509.Certificate | None = None
        if decrypt_key or decrypt_token_uri:
            try:
                dkey, dcert, _ = _load_handle(
                    decrypt_key, decrypt_cert, decrypt_token_uri, password, pin, "decryption key"
                )
            except BaseException:
                _close(skey)
                raise
        elif decrypt_cert:
            raise KeyLoadFailed(
                "decryption key: 只给了证书 / only a certificate: give --decrypt-key or a token URI"
            )
        return cls(skey, scert, p12_chain + extra, dkey, dcert)

    def sign(self, content: bytes, at: datetime | None = None) -> str:
        """base64 of a CMS SignedData over ``content`` (crypto.attest's one signature format)."""
        der = sign_document(
            content, self.signing_key, self.signing_cert, at=at or utc_now(), chain=self.chain
        )
        return b64encode(der)

    def require_decrypt(self) -> tuple[PrivateKeyHandle, x509.Certificate | None]:
        if self.decrypt_key is None:
            raise KeyLoadFailed(
                "需要加密证书对应的私钥（--decrypt-key 或 --decrypt-token-uri）/ the encryption "
                "certificate's private key is needed (--decrypt-key or --decrypt-token-uri)"
            )
        return self.decrypt_key, self.decrypt_cert

    def close(self) -> None:
        """Close token sessions (a no-op for keys from files)."""
        _close(self.signing_key)
        if self.decrypt_key is not None and self.decrypt_key is not self.signing_key:
            _close(self.decrypt_key)


# --- documents a client signs (pure, testable offline) -----------------------------------------


def sign_login(document: str, credentials: Credentials, at: datetime | None = None) -> str:
    """The ``LoginIn.signature``: the challenge's exact ``document`` text, UTF-8, signed."""
    return credentials.sign(document.encode("utf-8"), at)


def sign_table(table: dict[str, Any], credentials: Credentials, at: datetime | None = None) -> str:
    """A bidder's confirmation of the opening table: a signature over its canonical JSON."""
    return credentials.sign(canonical_json(table), at)


def backup_approval_document(session_id: str, request_id: str, bidders: Sequence[str]) -> bytes:
    """What a custodian signs to approve a backup decryption (rule 9)."""
    return canonical_json(
        {
            "purpose": BACKUP_PURPOSE,
            "session_id": session_id,
            "request_id": request_id,
            "bidders": sorted(bidders),
        }
    )


def record_bytes(record: dict[str, Any], sha256: str) -> bytes:
    """The opening record's signed bytes; refuse unless they hash to the server's ``sha256``."""
    raw = canonical_json(record)
    actual = hashlib.sha256(raw).hexdigest()
    if actual != sha256:
        raise AgentError(
            "RECORD_MISMATCH",
            "开标记录内容与服务器给出的摘要不符，拒绝签名",
            "the record does not match the digest the server gave; not signing it",
            f"{actual} != {sha256}",
        )
    return raw


def verify_receipt(receipt: dict[str, Any], signature: str) -> SignedDocument:
    """Check the server's signature on a receipt (回执) covers exactly this receipt.

    Whether the server's certificate is trusted is a separate question (a trust store).
    """
    return verify_document(b64decode(signature), canonical_json(receipt))


async def file_chunks(
    path: Path, progress: ProgressCallback | None = None, chunk_size: int = CHUNK
) -> AsyncIterator[bytes]:
    """An upload body read from ``path`` in ``chunk_size`` pieces, reporting progress."""
    total = path.stat().st_size
    sent = 0
    if progress is not None:
        progress(0, total)
    with path.open("rb") as f:
        while True:
            chunk = await asyncio.to_thread(f.read, chunk_size)
            if not chunk:
                break
            sent += len(chunk)
            yield chunk
            if progress is not None:
                progress(sent, total)
    if sent != total:
        raise AgentError(
            "FILE_CHANGED",
            "上传过程中文件被改动",
            "the file changed while it was being uploaded",
            f"{path}: {sent} of {total} bytes",
        )


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _message(exc: BidBridgeError) -> str:
    text = f"{exc.zh} / {exc.en}"
    if exc.detail:
        text += f" ({exc.detail})"
    return text[:MAX_MESSAGE]


# --- REST client ---------------------------------------------------------------------------------


class HallClient:
    """The hall's REST API for one party (bidder, host, supervisor or centre).

    Use as ``async with HallClient(url, creds) as c:``. Calls log in on first use; a call that
    gets 401 ``TOKEN_INVALID`` logs in again once and is retried. Every refusal is raised as
    ``AgentError`` with the server's code and messages.
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials | None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 60.0,
        machine_fingerprint: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.machine_fingerprint = machine_fingerprint
        self._machines: dict[str, str | None] = {}
        self.credentials = credentials
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.token: str | None = None
        self.token_expires_at: datetime | None = None
        # The token's life on this machine's monotonic clock (from the server's ``expires_in``):
        # the server's clock may be skewed or, in the demo, run fast.
        self._token_got: float | None = None
        self._token_life: float | None = None
        self._keeper: asyncio.Task[None] | None = None
        self.role: str | None = None
        self.party_id: str | None = None
        self.name: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._login_lock = asyncio.Lock()

    async def __aenter__(self) -> HallClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.stop_keeping_token()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.ssl_context or True)
            # No total timeout: uploads and downloads of large bids take long; stalls do not.
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=self.timeout),
            )
        return self._session

    @staticmethod
    def sid_path(session_id: str, *rest: str) -> str:
        """``/api/sessions/<id>/...``; the id holds slashes (project/lot/n), so encode them."""
        tail = "".join("/" + quote(str(r), safe="") for r in rest)
        return f"/api/sessions/{quote(session_id, safe='')}{tail}"

    # -- authentication --

    def set_token(self, token: str, expires_at: datetime, expires_in: float | None) -> None:
        """Keep a token the server issued; ``expires_in`` is its life in real seconds."""
        self.token, self.token_expires_at = token, expires_at
        self._token_got = time.monotonic() if expires_in is not None else None
        self._token_life = expires_in

    def token_left(self) -> float | None:
        """Real seconds the token has left, by this machine's monotonic clock (None: unknown)."""
        if self._token_got is None or self._token_life is None:
            return None
        return self._token_got + self._token_life - time.monotonic()

    def token_fresh(self, margin: timedelta = timedelta(seconds=30)) -> bool:
        if self.token is None:
            return False
        left = self.token_left()
        if left is not None:
            assert self._token_life is not None
            # A short-lived token (the demo's fast clock) keeps a quarter of its life as margin.
            return left > min(margin.total_seconds(), self._token_life / 4)
        return self.token_expires_at is None or utc_now() + margin < self.token_expires_at

    async def refresh_token(self) -> None:
        """Trade the token for a fresh one (``POST /api/auth/refresh``) before it runs out."""
        out = S.RefreshOut.model_validate(await self.call("POST", "/api/auth/refresh"))
        self.set_token(out.token, parse_iso(out.expires_at), out.expires_in)

    def keep_token_alive(self) -> None:
        """Renew the token in the background, a third into its life each time, until
        :meth:`close`: a party that waits longer than a token lasts between two actions (an
        expert reading bids for an hour) is never told to sign in again. A renewal that fails
        on the network is retried; one that the server refuses ends the keeping (the next call
        then logs in again, or says why it cannot)."""
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep_alive())

    async def stop_keeping_token(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None

    async def _keep_alive(self) -> None:
        while self.token is not None:
            left, life = self.token_left(), self._token_life
            if left is None or life is None:
                return  # a server that does not say how long its tokens last
            await asyncio.sleep(max(0.0, left - life * 2 / 3))
            try:
                await self.refresh_token()
            except AgentError as exc:
                if exc.code != "SERVER_UNREACHABLE":
                    log.info("token renewal refused (%s): keeping stops", exc.code)
                    return
                await asyncio.sleep(min(5.0, life / 10))

    async def login(self) -> dict[str, Any]:
        """CA login: sign the server's challenge document; keep the bearer token."""
        if self.credentials is None:
            raise KeyLoadFailed(
                "登录需要签名证书 / logging in needs the signing key and certificate"
            )
        async with self._login_lock:
            challenge = S.ChallengeOut.model_validate(
                await self.call("POST", "/api/auth/challenge", auth=False)
            )
            signature = await asyncio.to_thread(
                sign_login, challenge.document, self.credentials, utc_now()
            )
            out = S.LoginOut.model_validate(
                await self.call(
                    "POST",
                    "/api/auth/login",
                    S.LoginIn(signature=signature).model_dump(),
                    auth=False,
                )
            )
            self.set_token(out.token, out.expires_at, out.expires_in)
            self.role, self.party_id, self.name = out.role, out.party_id, out.name
            return out.model_dump(mode="json")

    async def ensure_login(self) -> None:
        if not self.token_fresh():
            await self.login()

    # -- plumbing --

    @contextlib.asynccontextmanager
    async def _response(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        body: Callable[[], AsyncIterator[bytes]] | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request (retried once after a re-login on 401 TOKEN_INVALID); errors raised."""
        url = self.base_url + path
        for attempt in (1, 2):
            hdrs = dict(headers or {})
            if auth:
                await self.ensure_login()
                hdrs["Authorization"] = f"Bearer {self.token}"
            try:
                resp = await self._http().request(
                    method,
                    url,
                    json=json,
                    params=params,
                    data=body() if body is not None else None,
                    headers=hdrs,
                )
            except aiohttp.ClientError as exc:
                raise _unreachable(url, exc) from None
            try:
                if resp.status >= 400:
                    err = await _error_of(resp)
                    if auth and attempt == 1 and err.code == "TOKEN_INVALID":
                        self.token = None
                        continue
                    raise err
                yield resp
                return
            finally:
                resp.release()

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        params: dict[str, str] | None = None,
        auth: bool = True,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Any JSON route; returns the response body, raises ``AgentError`` on a refusal."""
        async with self._response(
            method, path, json=json, params=params, auth=auth, headers=headers
        ) as resp:
            try:
                data = await resp.json(content_type=None)
            except (ValueError, aiohttp.ClientError) as exc:
                raise AgentError(
                    "BAD_RESPONSE",
                    "服务器响应无法解析",
                    "the server's answer is not JSON",
                    str(exc),
                ) from None
        if not isinstance(data, dict):
            raise AgentError("BAD_RESPONSE", "服务器响应格式错误", "unexpected answer", repr(data))
        return data

    async def _post(self, session_id: str, action: str, body: Any = None) -> dict[str, Any]:
        if isinstance(body, BaseModel):
            body = body.model_dump(mode="json")
        headers = self.machine_header(session_id) if action in MACHINE_ACTIONS else None
        return await self.call(
            "POST", self.sid_path(session_id, *action.split("/")), body, headers=headers
        )

    def machine_header(self, session_id: str) -> dict[str, str]:
        """This machine's fingerprint for the session's lot (``crypto.fingerprint``), as the
        header sent with uploads, rehearsals, keys and hall sign-ins; empty when turned off or
        when the machine has no readable id. The lot comes from the session id (``PROJECT~LOT~n``,
        the platform's lot id with its slash replaced), so it matches what ``bidbridge seal``
        records from ``summary.json``. Never sent with the CA login, which names no lot: a value
        keyed to nothing would follow the machine across projects."""
        if not self.machine_fingerprint or "~" not in session_id:
            return {}
        lot = session_id.rsplit("~", 1)[0].replace("~", "/")
        if lot not in self._machines:
            self._machines[lot] = this_machine(lot)
        fingerprint = self._machines[lot]
        return {MACHINE_HEADER: fingerprint} if fingerprint else {}

    # -- general --

    async def server_time(self) -> datetime:
        return S.TimeOut.model_validate(await self.call("GET", "/api/time", auth=False)).now

    async def sessions(self) -> list[dict[str, Any]]:
        return list((await self.call("GET", "/api/sessions"))["sessions"])

    async def session(self, session_id: str) -> dict[str, Any]:
        """``{"session_id", "view", "seq"}``: the session as this party may see it."""
        return await self.call("GET", self.sid_path(session_id))

    async def events(self, session_id: str, after: int = 0) -> list[dict[str, Any]]:
        out = await self.call(
            "GET", self.sid_path(session_id, "events"), params={"after": str(after)}
        )
        return list(out["events"])

    # -- bidder --

    async def sign_in(self, session_id: str) -> dict[str, Any]:
        return await self._post(session_id, "sign-in")

    async def upload(
        self, session_id: str, path: str | Path, progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Upload (or replace) the sealed bid, streamed; returns the signed receipt."""
        path = Path(path)
        size = path.stat().st_size
        await self.ensure_login()  # before streaming: a 401 retry means sending it all again
        async with self._response(
            "PUT",
            self.sid_path(session_id, "bid"),
            body=lambda: file_chunks(path, progress),
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size),
                **self.machine_header(session_id),
            },
        ) as resp:
            data = await resp.json(content_type=None)
        return S.ReceiptOut.model_validate(data).model_dump(mode="json")

    async def retract(self, session_id: str) -> dict[str, Any]:
        """撤回: withdraw the bid before the deadline."""
        return await self.call("DELETE", self.sid_path(session_id, "bid"))

    async def receipt(self, session_id: str) -> dict[str, Any]:
        """``{"receipt", "signature", "seq"}``: the last receipt of one's own bid."""
        return await self.call("GET", self.sid_path(session_id, "receipt"))

    async def download_own(self, session_id: str, dest: str | Path) -> str:
        """Download one's own stored envelope to ``dest``; returns its SHA-256 (checked against
        the server's ``X-Envelope-SHA256``)."""
        dest = Path(dest)
        part = dest.with_name(dest.name + ".part")
        h = hashlib.sha256()
        async with self._response("GET", self.sid_path(session_id, "bid")) as resp:
            declared = resp.headers.get("X-Envelope-SHA256")
            try:
                with part.open("wb") as f:
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        h.update(chunk)
                        await asyncio.to_thread(f.write, chunk)
            except aiohttp.ClientError as exc:
                part.unlink(missing_ok=True)
                raise _unreachable(self.base_url, exc) from None
        sha = h.hexdigest()
        if declared and declared.lower() != sha:
            part.unlink(missing_ok=True)
            raise AgentError(
                "DOWNLOAD_CORRUPT",
                "下载的投标文件与服务器记录的摘要不符，请重试",
                "the downloaded bid does not match the server's digest; try again",
                f"{sha} != {declared}",
            )
        os.replace(part, dest)
        return sha

    async def rehearse(self, session_id: str, workdir: str | Path | None = None) -> dict[str, Any]:
        """解密演练: download one's stored bid, check it against the receipt and open it locally
        with the decryption key (into a temporary folder, deleted afterwards). Only the result
        (passed, code, message) is sent to the server. Returns that result, the server's ``seq``
        and, on success, the summary read back (kept local)."""
        key, cert = self._creds().require_decrypt()
        receipt = (await self.receipt(session_id))["receipt"]
        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
        summary: dict[str, Any] | None = None
        with tempfile.TemporaryDirectory(prefix="bidbridge-rehearsal-", dir=workdir) as tmp:
            envelope = Path(tmp) / "bid.p7m"
            sha = await self.download_own(session_id, envelope)
            if sha != receipt.get("envelope_sha256"):
                passed, code = False, "RECEIPT_MISMATCH"
                zh = "服务器保存的投标文件与回执中的摘要不符"
                en = "the stored bid does not match the receipt's SHA-256"
                message = f"{zh} / {en} ({sha})"
            else:
                try:
                    opened = await asyncio.to_thread(
                        open_bid,
                        envelope,
                        Path(tmp) / "opened.zip",
                        key=key,
                        cert=cert,
                        expected_credit_code=self.party_id if self.role == "bidder" else None,
                    )
                except BidBridgeError as exc:
                    passed, code, zh, en, message = False, exc.code, exc.zh, exc.en, _message(exc)
                else:
                    passed, code = True, "OK"
                    zh, en = "解密演练通过", "the rehearsal decryption succeeded"
                    message = f"{zh} / {en}"
                    summary = opened.summary.model_dump(mode="json")
        out = await self._post(
            session_id, "rehearsal", S.RehearsalIn(passed=passed, code=code, message=message)
        )
        return {
            "passed": passed,
            "code": code,
            "zh": zh,
            "en": en,
            "message": message,
            "envelope_sha256": sha,
            "summary": summary,
            "seq": out.get("seq"),
        }

    async def decrypt(self, session_id: str, envelope: str | Path | None = None) -> dict[str, Any]:
        """Online decryption (rule 7): unwrap the content-encryption key locally and send it.

        ``envelope`` may be one's own local copy of the sealed bid (saves the download); it is
        used only if its SHA-256 equals the receipt's. Returns the ``DecryptOut`` dict.
        """
        key, cert = self._creds().require_decrypt()
        with tempfile.TemporaryDirectory(prefix="bidbridge-decrypt-") as tmp:
            path: Path | None = None
            if envelope is not None:
                local = Path(envelope)
                expected = (await self.receipt(session_id))["receipt"].get("envelope_sha256")
                if await asyncio.to_thread(_sha256_file, local) == expected:
                    path = local
                else:
                    log.warning("%s is not the uploaded bid; downloading it", local)
            if path is None:
                path = Path(tmp) / "bid.p7m"
                await self.download_own(session_id, path)
            cek = await asyncio.to_thread(unwrap, path, key, cert)
        try:
            out = await self._post(session_id, "key", S.KeyIn(cek=b64encode(cek)))
        finally:
            del cek
        return S.DecryptOut.model_validate(out).model_dump(mode="json")

    async def object(self, session_id: str, text: str) -> dict[str, Any]:
        """异议: raise an objection in the hall."""
        return await self._post(session_id, "objections", S.TextIn(text=text))

    async def confirm(self, session_id: str) -> dict[str, Any]:
        """Confirm the published opening table with a CA signature over its canonical JSON."""
        view = (await self.session(session_id))["view"]
        table = view.get("table")
        if table is None:
            raise AgentError(
                "NO_TABLE", "开标记录表尚未公布", "the opening table has not been published"
            )
        digest = hashlib.sha256(canonical_json(table)).hexdigest()
        if view.get("table_sha256") and digest != view["table_sha256"]:
            raise AgentError(
                "TABLE_MISMATCH",
                "开标记录表与其摘要不符，拒绝签名",
                "the table does not match its digest; not signing it",
                f"{digest} != {view['table_sha256']}",
            )
        signature = await asyncio.to_thread(sign_table, table, self._creds(), utc_now())
        out = await self._post(session_id, "confirm", S.SignatureIn(signature=signature))
        return {**out, "table_sha256": digest}

    async def guarantee(self, session_id: str, signature_b64: str) -> dict[str, Any]:
        """Lodge an electronic guarantee (电子保函) signed by the guarantor."""
        return await self._post(session_id, "guarantee", S.GuaranteeIn(signature=signature_b64))

    def _creds(self) -> Credentials:
        if self.credentials is None:
            raise KeyLoadFailed("签名需要签名证书 / signing needs the signing key")
        return self.credentials

    # -- host, supervisor, centre --

    async def publish(self, session_id: str) -> dict[str, Any]:
        return await self._post(session_id, "publish")

    async def start(self, session_id: str) -> dict[str, Any]:
        return await self._post(session_id, "start")

    async def open_decryption(self, session_id: str) -> dict[str, Any]:
        return await self._post(session_id, "decryption")

    async def open_confirmation(self, session_id: str) -> dict[str, Any]:
        return await self._post(session_id, "confirmation")

    async def suspend(self, session_id: str, reason: str) -> dict[str, Any]:
        return await self._post(session_id, "suspend", S.ReasonIn(reason=reason))

    async def resume(self, session_id: str, reason: str) -> dict[str, Any]:
        return await self._post(session_id, "resume", S.ReasonIn(reason=reason))

    async def extend(self, session_id: str, minutes: int, reason: str) -> dict[str, Any]:
        return await self._post(session_id, "extend", S.ExtendIn(minutes=minutes, reason=reason))

    async def incident(self, session_id: str, reason: str, bidders: list[str]) -> dict[str, Any]:
        return await self._post(
            session_id, "incidents", S.IncidentIn(reason=reason, bidders=bidders)
        )

    async def reply(self, session_id: str, objection_id: int, text: str) -> dict[str, Any]:
        return await self._post(
            session_id, f"objections/{int(objection_id)}/reply", S.TextIn(text=text)
        )

    async def deposit(
        self, session_id: str, bidder: str, amount_fen: int, reference: str = ""
    ) -> dict[str, Any]:
        body = S.DepositIn(bidder=bidder, amount_fen=amount_fen, reference=reference)
        return await self._post(session_id, "deposits", body)

    async def record(self, session_id: str) -> dict[str, Any]:
        """``{"record", "text", "sha256", "signatures"}``: the opening record."""
        return await self.call("GET", self.sid_path(session_id, "record"))

    async def sign_record(self, session_id: str) -> dict[str, Any]:
        """Sign the opening record (host or supervisor, rule 12) after checking its digest."""
        rec = S.RecordOut.model_validate(await self.record(session_id))
        raw = record_bytes(rec.record, rec.sha256)
        signature = await asyncio.to_thread(self._creds().sign, raw, utc_now())
        out = await self._post(session_id, "record/sign", S.SignatureIn(signature=signature))
        return {**out, "record_sha256": rec.sha256}

    async def request_backup(
        self, session_id: str, bidders: list[str], reason: str
    ) -> dict[str, Any]:
        body = S.BackupRequestIn(bidders=bidders, reason=reason)
        return await self._post(session_id, "backup-requests", body)

    async def approve_backup(
        self, session_id: str, request_id: str, bidders: list[str], share_json: str
    ) -> dict[str, Any]:
        """A custodian's signed approval of a backup decryption, with its decrypted share."""
        doc = backup_approval_document(session_id, request_id, bidders)
        signature = await asyncio.to_thread(self._creds().sign, doc, utc_now())
        body = S.BackupApproveIn(signature=signature, share=share_json)
        return await self._post(session_id, f"backup-requests/{request_id}/approve", body)

    async def create_session(self, **fields: Any) -> dict[str, Any]:
        """Create a lot's opening session; ``fields`` are ``schemas.api.SessionIn``'s."""
        body = S.SessionIn.model_validate(fields).model_dump(mode="json", exclude_none=True)
        return await self.call("POST", "/api/sessions", body)

    async def add_company(
        self, credit_code: str, name: str, signing_cert_pem: str, encryption_cert_pem: str
    ) -> dict[str, Any]:
        body = S.CompanyIn(
            credit_code=credit_code,
            name=name,
            signing_cert_pem=signing_cert_pem,
            encryption_cert_pem=encryption_cert_pem,
        )
        return await self.call("POST", "/api/companies", body.model_dump(mode="json"))

    async def add_account(self, role: str, name: str, cert_pem: str) -> dict[str, Any]:
        body = S.AccountIn.model_validate({"role": role, "name": name, "cert_pem": cert_pem})
        return await self.call("POST", "/api/accounts", body.model_dump(mode="json"))

    async def add_project(
        self, code: str, name: str, tenderer_name: str, tenderer_credit_code: str
    ) -> dict[str, Any]:
        body = S.ProjectIn(
            code=code,
            name=name,
            tenderer_name=tenderer_name,
            tenderer_credit_code=tenderer_credit_code,
        )
        return await self.call("POST", "/api/projects", body.model_dump(mode="json"))

    async def add_lot(self, project_code: str, code: str, name: str) -> dict[str, Any]:
        body = S.LotIn(project_code=project_code, code=code, name=name)
        return await self.call("POST", "/api/lots", body.model_dump(mode="json"))


# --- the live hall -------------------------------------------------------------------------------


def clock_offset(server_now: datetime, sent_at: datetime, round_trip: timedelta) -> timedelta:
    """Server clock minus local clock, taking the server's reading at the round trip's middle."""
    return server_now - (sent_at + round_trip / 2)


EventCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
NoticeCallback = Callable[[str, Any], Awaitable[None] | None]


@dataclass
class _Waiter:
    predicate: Callable[[dict[str, Any]], bool]
    future: asyncio.Future[dict[str, Any]]


class HallFollower:
    """Follows one session's hall over socket.io (namespace ``/hall``).

    * ``events`` holds every record seen, by ``seq``; duplicates (replay overlapping live
      events, reconnects) are dropped.
    * ``last_seq`` is the highest ``seq`` seen; ``resume_seq`` the highest up to which nothing
      can be missing (every lower ``seq`` was received or covered by a server replay). A bidder
      does not see staff-only events, so its ``seq`` has holes: a hole is a *suspected* gap
      until a replay covers it. Reconnects resume from ``resume_seq``; a suspected gap while
      connected asks the server to replay after ``resume_seq``.
    * ``offset`` is the server clock minus the local clock (measured with the ``time`` call on
      every connect); ``countdown(instant)`` uses it.
    * New events go to ``queue`` (arrival order) and to ``on_event``; ``wait_for`` waits for an
      event matching a predicate.
    """

    def __init__(
        self,
        client: HallClient,
        session_id: str,
        *,
        last_seq: int = 0,
        on_event: EventCallback | None = None,
        on_notice: NoticeCallback | None = None,
        reconnection: bool = True,
        clock_samples: int = 3,
        resync_seconds: float = 300.0,
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.events: dict[int, dict[str, Any]] = {}
        self.last_seq = last_seq
        self.resume_seq = last_seq
        self.offset = timedelta(0)
        self.round_trip: timedelta | None = None
        self.duplicates = 0
        self.chain_breaks: list[int] = []
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.on_event = on_event
        self.on_notice = on_notice
        self.connected = asyncio.Event()
        self.replayed = asyncio.Event()
        self.clock_samples = clock_samples
        self.resync_seconds = resync_seconds
        self._clock_task: asyncio.Task[None] | None = None
        self.refusal: dict[str, Any] | None = None
        self.connections = 0
        self._replay_pending = False
        self._relogin = False
        self._waiters: list[_Waiter] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        extra = {"ssl": client.ssl_context} if client.ssl_context is not None else None
        self.sio = socketio.AsyncClient(
            reconnection=reconnection,
            reconnection_attempts=0,
            reconnection_delay=1,
            reconnection_delay_max=15,
            handle_sigint=False,
            websocket_extra_options=extra,
        )
        self.sio.on("connect", self._on_connect, namespace=NAMESPACE)
        self.sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        self.sio.on("connect_error", self._on_connect_error, namespace=NAMESPACE)
        self.sio.on("event", self._on_event, namespace=NAMESPACE)
        self.sio.on("events", self._on_events, namespace=NAMESPACE)
        self.sio.on("replayed", self._on_replayed, namespace=NAMESPACE)
        self.sio.on("time", self._on_time, namespace=NAMESPACE)

    # -- the bookkeeping (pure; tests feed records directly) --

    def feed(self, record: dict[str, Any]) -> bool:
        """Take one record; ``True`` if it is new (then it is queued and waiters are woken)."""
        seq = int(record["seq"])
        if seq in self.events or seq <= self.resume_seq:
            # Held already, or at/below the point up to which nothing is missing (seen in an
            # earlier run, or covered by a finished replay): a duplicate either way.
            self.duplicates += 1
            return False
        self._check_chain(seq, record)
        self.events[seq] = record
        self.last_seq = max(self.last_seq, seq)
        self._advance()
        self.queue.put_nowait(record)
        for w in list(self._waiters):
            if not w.future.done() and w.predicate(record):
                w.future.set_result(record)
        return True

    def mark_replayed(self, seq: int) -> None:
        """The server finished a replay up to ``seq``: nothing at or below it is missing."""
        self.resume_seq = max(self.resume_seq, int(seq))
        self._advance()

    def _advance(self) -> None:
        while self.resume_seq + 1 in self.events:
            self.resume_seq += 1

    @property
    def gap(self) -> bool:
        """A suspected gap: some ``seq`` below ``last_seq`` is neither held nor covered."""
        return self.last_seq > self.resume_seq

    def missing(self) -> list[int]:
        """The ``seq`` numbers of the suspected gap (may be events we are not shown)."""
        return [s for s in range(self.resume_seq + 1, self.last_seq) if s not in self.events]

    def _check_chain(self, seq: int, record: dict[str, Any]) -> None:
        before = self.events.get(seq - 1)
        after = self.events.get(seq + 1)
        broken = (before is not None and record.get("prev_hash") != before.get("hash")) or (
            after is not None and after.get("prev_hash") != record.get("hash")
        )
        if broken:
            self.chain_breaks.append(seq)
            log.warning("hash chain mismatch at seq %s of %s", seq, self.session_id)

    def ordered(self) -> list[dict[str, Any]]:
        return [self.events[s] for s in sorted(self.events)]

    # -- time --

    def server_now(self) -> datetime:
        return utc_now() + self.offset

    def countdown(self, target: datetime | str) -> timedelta:
        """Time left until ``target`` by the server's clock (negative once passed)."""
        at = parse_iso(target) if isinstance(target, str) else target
        return at - self.server_now()

    async def sync_clock(self, samples: int | None = None) -> timedelta:
        """Measure the offset with the ``time`` call; keep the sample with the shortest trip."""
        best: tuple[timedelta, timedelta] | None = None
        for _ in range(samples or self.clock_samples):
            sent_at, t0 = utc_now(), time.monotonic()
            answer = await self.sio.call("time", {}, namespace=NAMESPACE, timeout=10)
            trip = timedelta(seconds=time.monotonic() - t0)
            if not isinstance(answer, dict) or "now" not in answer:
                continue
            off = clock_offset(parse_iso(str(answer["now"])), sent_at, trip)
            if best is None or trip < best[0]:
                best = (trip, off)
        if best is not None:
            self.round_trip, self.offset = best
        return self.offset

    # -- connection --

    async def _auth(self) -> dict[str, Any]:
        """The connect payload, computed at each (re)connect: a fresh token and ``resume_seq``."""
        if self._relogin or not self.client.token_fresh(timedelta(seconds=60)):
            self._relogin = False
            await self.client.login()
        # The server replays after last_seq on every connect, possibly before our "connect"
        # handler runs: mark the replay as pending here, before the CONNECT packet goes out.
        self._replay_pending = True
        return {
            "token": self.client.token,
            "session_id": self.session_id,
            "last_seq": self.resume_seq,
            "batch": True,  # a commit's live events as one "events" list (_on_events)
        }

    async def connect(self, timeout: float = 30.0) -> None:
        """Connect (logging in if needed) and wait for the first replay to finish."""
        await self.client.ensure_login()
        url = self.client.base_url
        try:
            await self.sio.connect(
                url,
                auth=self._auth,
                transports=["websocket"],
                namespaces=[NAMESPACE],
                wait_timeout=min(timeout, 15),
            )
        except socketio.exceptions.ConnectionError as exc:
            refusal = self.refusal or {}
            if refusal.get("code"):
                raise AgentError(
                    str(refusal["code"]),
                    str(refusal.get("zh", "")),
                    str(refusal.get("en", "")),
                    "hall",
                ) from None
            raise _unreachable(url, exc) from None
        try:
            await asyncio.wait_for(self.replayed.wait(), timeout)
        except TimeoutError:
            raise AgentError(
                "REPLAY_TIMEOUT", "等待历史事件超时", "timed out waiting for the event replay"
            ) from None

    async def close(self) -> None:
        self._closing = True
        if self._clock_task is not None:
            self._clock_task.cancel()
        for t in list(self._tasks):
            t.cancel()
        for w in self._waiters:
            if not w.future.done():
                w.future.cancel()
        await self.sio.disconnect()

    async def __aenter__(self) -> HallFollower:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notice(self, kind: str, data: Any = None) -> None:
        if self.on_notice is not None:
            result = self.on_notice(kind, data)
            if inspect.isawaitable(result):
                await result

    async def _on_connect(self) -> None:
        self.refusal = None
        self.connections += 1
        self.connected.set()
        await self._notice(
            "connected", {"resume_seq": self.resume_seq, "connections": self.connections}
        )
        if self._clock_task is None or self._clock_task.done():
            self._clock_task = asyncio.ensure_future(self._keep_clock())

    async def _keep_clock(self) -> None:
        """Measure the offset now and again every ``resync_seconds`` while connected."""
        while self.connected.is_set() and not self._closing:
            try:
                await self.sync_clock()
            except (socketio.exceptions.SocketIOError, TimeoutError, ValueError) as exc:
                log.info("clock sync failed: %s", exc)
            else:
                await self._notice("clock", {"offset": self.offset, "round_trip": self.round_trip})
            await asyncio.sleep(self.resync_seconds)

    async def _on_disconnect(self, reason: Any = None) -> None:
        self.connected.clear()
        if not self._closing:
            await self._notice("disconnected", {"reason": str(reason or "")})

    async def _on_connect_error(self, data: Any = None) -> None:
        self.refusal = data if isinstance(data, dict) else {"detail": str(data)}
        if self.refusal.get("code") == "TOKEN_INVALID":
            self._relogin = True
        await self._notice("refused", self.refusal)

    async def _on_time(self, data: Any = None) -> None:
        # Pushed on connect with no round trip known: a first estimate until sync_clock runs.
        if self.round_trip is None and isinstance(data, dict) and "now" in data:
            self.offset = parse_iso(str(data["now"])) - utc_now()

    async def _on_event(self, data: Any = None) -> None:
        if not isinstance(data, dict) or "seq" not in data:
            return
        if self.feed(data):
            if self.on_event is not None:
                result = self.on_event(data)
                if inspect.isawaitable(result):
                    await result
            self._maybe_request_replay()

    async def _on_events(self, data: Any = None) -> None:
        """A commit's events in one message, in ``seq`` order: each is taken as if alone."""
        if isinstance(data, list):
            for record in data:
                await self._on_event(record)

    async def _on_replayed(self, data: Any = None) -> None:
        seq = int(data.get("seq", 0)) if isinstance(data, dict) else 0
        self.mark_replayed(seq)
        self._replay_pending = False
        self.replayed.set()
        self._maybe_request_replay()

    def _maybe_request_replay(self) -> None:
        """Ask for a replay after ``resume_seq`` when a gap is suspected (one at a time)."""
        if self.gap and not self._replay_pending and self.sio.connected:
            self._replay_pending = True
            self._spawn(self.sio.emit("replay", {"after": self.resume_seq}, namespace=NAMESPACE))

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float | None = None
    ) -> dict[str, Any]:
        """The first event (held already, in ``seq`` order, or new) matching ``predicate``."""
        for record in self.ordered():
            if predicate(record):
                return record
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(predicate, future)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AgentError(
                "WAIT_TIMEOUT", "等待事件超时", "timed out waiting for the event"
            ) from None
        finally:
            self._waiters.remove(waiter)
