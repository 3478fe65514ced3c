"""The opening hall's REST client: CA login, the token keep-alive and the hall's calls.

``HallClient`` speaks the hall's REST API (``server/api/routes.py`` lists every route): CA
login with the company's signing key, uploads streamed from disk, the decryption rehearsal and the online decryption done
locally (only the content-encryption key is sent, never a private key or the plaintext), signed
confirmations of the opening table and signatures on the opening record. Every refusal is an
``AgentError`` with the server's code and messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel

from crypto.attest import SignedDocument, b64decode, b64encode, verify_document
from crypto.bid import open_bid, unwrap
from crypto.errors import BidBridgeError, KeyLoadFailed
from crypto.fingerprint import HEADER as MACHINE_HEADER
from crypto.fingerprint import this_machine
from room_client.credentials import Credentials, utc_now
from schemas import api as S
from schemas.canonical import canonical_json, signed_document
from schemas.time import parse_iso

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
"""Upload and download chunk size (1 MiB)."""
MACHINE_ACTIONS = frozenset({"sign-in", "rehearsal", "key"})
"""The calls that carry the machine fingerprint header (with the upload)."""
BACKUP_PURPOSE = "bidbridge-backup-approval"
MAX_MESSAGE = 2000

ProgressCallback = Callable[[int, int], None]
"""``progress(bytes_sent, total)``."""
Params = Mapping[str, str] | Sequence[tuple[str, str]]
"""Query parameters: a mapping, or pairs (a name may repeat)."""


def after_params(after: Mapping[str, int] | None) -> list[tuple[str, str]]:
    """``?after=<stream>:<n>`` for each stream of a cursor (docs/positions.md): the events after
    it. None or empty: from the start."""
    return [("after", f"{stream}:{int(n)}") for stream, n in (after or {}).items()]


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


def _tls_failure(exc: BaseException | None) -> BaseException | None:
    """The TLS failure behind ``exc`` (followed through its causes), if there is one."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _unreachable(url: str, exc: BaseException) -> AgentError:
    tls = _tls_failure(exc)
    if isinstance(tls, aiohttp.ClientConnectorCertificateError | ssl.SSLCertVerificationError):
        return AgentError(
            "TLS_UNTRUSTED",
            "无法验证服务器的 TLS 证书（签发机构不受信任、已过期或与地址不符）；"
            "如服务器使用本单位 CA 签发的证书，请用 --ca-file 指定该 CA 证书",
            "the server's TLS certificate cannot be verified (untrusted issuer, expired, or for "
            "another name); if the server uses a certificate from your own CA, give that CA "
            "with --ca-file",
            f"{url}: {tls}",
        )
    if tls is not None:
        return AgentError(
            "TLS_HANDSHAKE_FAILED",
            "与服务器的 TLS 握手失败：请检查地址（https:// 与端口）",
            "the TLS handshake with the server failed: check the address (https:// and port)",
            f"{url}: {tls}",
        )
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


def client_tls(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """How the agents check the server: the system's trusted CAs, plus ``ca_file`` (PEM) if
    given (a centre's own CA). Verification of the certificate and its name is always on."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise AgentError(
                "TLS_CA_FILE_INVALID",
                "--ca-file 无法读取或不是 PEM 格式的 CA 证书",
                "--ca-file cannot be read or holds no PEM CA certificate",
                f"{ca_file}: {exc}",
            ) from None
    return ctx


# --- documents a client signs (pure, testable offline) -----------------------------------------


def sign_login(document: str, credentials: Credentials, at: datetime | None = None) -> str:
    """The ``LoginIn.signature``: the challenge's exact ``document`` text, UTF-8, signed."""
    return credentials.sign(document.encode("utf-8"), at)


def sign_table(table: dict[str, Any], credentials: Credentials, at: datetime | None = None) -> str:
    """A bidder's confirmation of the opening table: a signature over its canonical JSON."""
    return credentials.sign(canonical_json(table), at)


def backup_approval_document(session_id: str, request_id: str, bidders: Sequence[str]) -> bytes:
    """What a custodian signs to approve a backup decryption (rule 9)."""
    return signed_document(
        BACKUP_PURPOSE, session_id=session_id, request_id=request_id, bidders=sorted(bidders)
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
            # Always verified: the given context (``client_tls``) or the system's trusted CAs.
            connector = aiohttp.TCPConnector(ssl=self.ssl_context or client_tls())
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
        params: Params | None = None,
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
        params: Params | None = None,
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
        """``{"session_id", "view", "pos"}``: the session as this party may see it, and the
        party's stream heads when it was read (``pos``, docs/positions.md)."""
        return await self.call("GET", self.sid_path(session_id))

    async def events(
        self, session_id: str, after: Mapping[str, int] | None = None
    ) -> list[dict[str, Any]]:
        """The events this party may see after the cursor ``after`` (``stream -> n``; None:
        all of them), in log order, each with its ``id`` and ``pos``."""
        out = await self.call(
            "GET", self.sid_path(session_id, "events"), params=after_params(after)
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
        """``{"receipt", "signature", "pos"}``: the last receipt of one's own bid."""
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
        (passed, code, message) is sent to the server. Returns that result, the caller's positions
        of the event it recorded (``pos``) and, on success, the summary read back (kept local)."""
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
            "pos": out.get("pos"),
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
