"""TLS for ``bidbridge serve`` without a reverse proxy: the certificate and key checked, loaded
into a server SSL context (TLS 1.2 and 1.3, forward-secret AEAD ciphers only), and HSTS.

The files ``bidbridge ca issue-server`` writes (``server.crt.pem``, ``server.key.pem``: PEM,
unencrypted PKCS#8) are accepted as they are; intermediates, if any, follow the certificate in
the same file (as for nginx's ``ssl_certificate``). Every refusal names its file with a stable
code, in Chinese and English, before the server opens its database or its port.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from crypto.errors import BidBridgeError

# TLS 1.2 suites: ECDHE (forward secrecy) with AES-GCM or ChaCha20-Poly1305 only, as in
# Mozilla's "intermediate" profile and deploy/nginx.conf. TLS 1.3 suites are all modern.
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
HSTS = "max-age=63072000"
"""Strict-Transport-Security: browsers use HTTPS only, for two years (as deploy/nginx.conf)."""


class TlsSetupError(BidBridgeError):
    code = "TLS_SETUP_INVALID"
    zh = "TLS 配置无效"
    en = "the TLS setup is invalid"


class TlsOptionsIncomplete(TlsSetupError):
    code = "TLS_OPTIONS_INCOMPLETE"
    zh = "--tls-cert 与 --tls-key 须同时给出"
    en = "give both --tls-cert and --tls-key"


class TlsFileMissing(TlsSetupError):
    code = "TLS_FILE_MISSING"
    zh = "找不到或无法读取 TLS 证书或私钥文件"
    en = "the TLS certificate or key file is missing or unreadable"


class TlsCertificateInvalid(TlsSetupError):
    code = "TLS_CERT_INVALID"
    zh = "TLS 证书文件无效：须为 PEM 格式的服务器证书（其后可附中间证书）"
    en = "the TLS certificate file is not valid: give a PEM server certificate (intermediates may follow)"


class TlsKeyInvalid(TlsSetupError):
    code = "TLS_KEY_INVALID"
    zh = "TLS 私钥文件无效：须为未加密的 PEM 私钥"
    en = "the TLS key file is not valid: give an unencrypted PEM private key"


class TlsKeyMismatch(TlsSetupError):
    code = "TLS_KEY_MISMATCH"
    zh = "TLS 私钥与证书不匹配：请使用与该证书一同签发的私钥"
    en = "the TLS key does not match the certificate: use the key issued with it"


class TlsCertificateNotValidNow(TlsSetupError):
    code = "TLS_CERT_NOT_VALID_NOW"
    zh = "TLS 证书已过期或尚未生效：请更换证书"
    en = "the TLS certificate has expired or is not valid yet: install a current one"


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsFileMissing(f"{path}: {exc.strerror or exc}") from None


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_pair(cert_file: str, key_file: str, now: datetime | None = None) -> x509.Certificate:
    """The server certificate in ``cert_file`` if ``key_file`` holds its key and it is valid
    ``now``; else the refusal that says which file is wrong and how."""
    cert_data, key_data = _read(cert_file), _read(key_file)
    try:
        certs = x509.load_pem_x509_certificates(cert_data)
    except ValueError as exc:
        raise TlsCertificateInvalid(f"{cert_file}: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise TlsKeyInvalid(f"{key_file}: 私钥已加密 / the key is encrypted") from None
    except ValueError as exc:
        raise TlsKeyInvalid(f"{key_file}: {exc}") from None
    leaf = certs[0]
    if _spki(leaf.public_key()) != _spki(key.public_key()):
        raise TlsKeyMismatch(f"{cert_file} / {key_file}")
    at = now or datetime.now(UTC)
    if not leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc:
        raise TlsCertificateNotValidNow(
            f"{cert_file}: {leaf.not_valid_before_utc:%Y-%m-%d} .. {leaf.not_valid_after_utc:%Y-%m-%d}"
        )
    return leaf


def server_context(cert_file: str | None, key_file: str | None) -> ssl.SSLContext | None:
    """The SSL context ``bidbridge serve`` listens with; ``None`` for plain HTTP (neither given)."""
    if cert_file is None and key_file is None:
        return None
    if not cert_file or not key_file:
        raise TlsOptionsIncomplete()
    check_pair(cert_file, key_file)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise TlsCertificateInvalid(f"{cert_file}: {exc}") from None
    return ctx


async def _hsts(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Strict-Transport-Security", HSTS)


def add_hsts(app: web.Application) -> None:
    """Every answer of a TLS-serving app tells browsers to come back over HTTPS only."""
    app.on_response_prepare.append(_hsts)
