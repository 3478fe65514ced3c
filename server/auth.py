"""CA login (challenge, signature, chain at that instant) and the short-lived bearer tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from crypto.attest import b64decode, read_document
from crypto.ca import credit_code_of
from crypto.errors import BidBridgeError
from crypto.trust import TrustStore
from schemas.canonical import canonical_json
from server.clock import Clock, real_seconds

LOGIN_PURPOSE = "bidbridge-login"
CHALLENGE_SECONDS = 60


class AuthError(BidBridgeError):
    code = "AUTH_FAILED"
    zh = "登录失败"
    en = "login failed"
    status = 401


class ChallengeInvalid(AuthError):
    code = "CHALLENGE_INVALID"
    zh = "登录挑战无效、已使用或已过期，请重新获取"
    en = "the login challenge is unknown, already used or expired; ask for a new one"


class PartyUnknown(AuthError):
    code = "PARTY_UNKNOWN"
    zh = "该证书未在交易中心登记"
    en = "this certificate is not registered with the trading centre"
    status = 403


class TokenInvalid(AuthError):
    code = "TOKEN_INVALID"
    zh = "登录凭证无效或已过期，请重新登录"
    en = "the session token is invalid or expired; log in again"


class TokenRevoked(AuthError):
    """The certificate a token was issued for has been revoked since (a CRL names it)."""

    code = "CERT_REVOKED"
    zh = "登录所用的证书已被吊销，此登录凭证已失效"
    en = "the certificate of this sign-in has been revoked; the session token is no longer valid"


def login_document(nonce: str, server_id: str) -> bytes:
    """What the client signs to log in: bound to one challenge and one server."""
    return canonical_json({"purpose": LOGIN_PURPOSE, "nonce": nonce, "server": server_id})


@dataclass(frozen=True)
class Principal:
    """Who is calling: a bidder (party_id = credit code) or a staff account (party_id = id)."""

    role: str
    party_id: str
    name: str
    cert_sha256: str
    session_id: str | None = None
    """The one session this token is for (a bidder's page link, an expert's sign-in at a room);
    None: every session the role may act on."""


class Tokens:
    """HMAC-signed bearer tokens: stateless, so any server process can check them."""

    def __init__(self, secret: bytes, ttl: timedelta = timedelta(minutes=30)) -> None:
        self._secret = secret
        self.ttl = ttl
        self.revoked: Callable[[Principal], str | None] = lambda p: None
        """Whether the certificate a valid token names is revoked now: the detail of the
        revocation, or None. A set lookup (``server/work/trust_reload.py``), never a chain
        validation: every request and every hall connection asks."""

    @property
    def secret(self) -> bytes:
        """The HMAC key (one-time web links are signed with it, domain-separated)."""
        return self._secret

    def issue(self, p: Principal, now: datetime) -> tuple[str, datetime]:
        exp = now + self.ttl
        body = {
            "role": p.role,
            "sub": p.party_id,
            "name": p.name,
            "cert": p.cert_sha256,
            "exp": int(exp.timestamp()),
        }
        if p.session_id is not None:
            body["sid"] = p.session_id
        raw = canonical_json(body)
        mac = hmac.new(self._secret, raw, hashlib.sha256).digest()
        return f"{_b64u(raw)}.{_b64u(mac)}", exp

    def check(self, token: str, now: datetime) -> Principal:
        try:
            raw_b64, mac_b64 = token.split(".", 1)
            raw, mac = _unb64u(raw_b64), _unb64u(mac_b64)
        except (ValueError, TypeError):
            raise TokenInvalid() from None
        if not hmac.compare_digest(mac, hmac.new(self._secret, raw, hashlib.sha256).digest()):
            raise TokenInvalid()
        body: dict[str, Any] = json.loads(raw)
        if body["exp"] <= now.timestamp():
            raise TokenInvalid("expired / 已过期")
        p = Principal(body["role"], body["sub"], body["name"], body["cert"], body.get("sid"))
        revoked = self.revoked(p)
        if revoked is not None:  # so refresh is refused too: it needs a token that checks
            raise TokenRevoked(revoked)
        return p


def token_lifetime(tokens: Tokens, clock: Clock) -> float:
    """A new token's lifetime in real seconds (``expires_in``): clients schedule renewals by it
    on their own monotonic clock, so neither clock skew nor the demo's fast clock misleads them."""
    return real_seconds(clock, tokens.ttl.total_seconds())


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_nonce() -> str:
    return secrets.token_hex(32)


@dataclass(frozen=True)
class VerifiedLogin:
    nonce: str
    certificate: x509.Certificate
    credit_code: str | None


async def verify_login(
    signature_b64: str, server_id: str, trust: TrustStore, now: datetime
) -> VerifiedLogin:
    """Check the signed login document and the signer's chain for ``login`` at ``now``.

    The caller consumes the nonce (once, unexpired) and maps the certificate to a party.
    """
    doc = read_document(b64decode(signature_b64))
    try:
        claimed = json.loads(doc.content)
        nonce = claimed["nonce"]
    except (ValueError, KeyError, TypeError):
        raise ChallengeInvalid("not a login document / 不是登录文档") from None
    if not isinstance(nonce, str) or doc.content != login_document(nonce, server_id):
        raise ChallengeInvalid("the document is not a login for this server / 非本服务器登录文档")
    await trust.avalidate(doc.signer, "login", now, extra_intermediates=doc.certificates)
    return VerifiedLogin(nonce, doc.signer, credit_code_of(doc.signer))
