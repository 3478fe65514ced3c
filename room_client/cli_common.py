"""Options, keys, output and the command runner shared by ``bidbridge bidder|host|supervisor|room``.

Key files and tokens as in ``bidbridge seal``: ``--key FILE`` (PEM, DER or PKCS#12, password in
``$BIDBRIDGE_KEY_PASSWORD``) or ``--token-uri URI`` (PKCS#11, PIN in ``$BIDBRIDGE_PIN`` or in the
URI); the same for the encryption certificate's key with ``--decrypt-...``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from crypto.errors import BidBridgeError
from room_client.credentials import Credentials, _env_pin

if TYPE_CHECKING:  # the REST client (aiohttp) is imported only when a command runs
    from room_client.client import HallClient

SERVER_ENV = "BIDBRIDGE_SERVER"
SESSION_ENV = "BIDBRIDGE_SESSION"


class UsageError(BidBridgeError):
    code = "USAGE"
    zh = "命令参数不完整"
    en = "a required option is missing"


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("服务器 server")
    g.add_argument(
        "--server",
        metavar="URL",
        default=os.environ.get(SERVER_ENV),
        help=f"开标服务器地址 the opening server's URL (default ${SERVER_ENV})",
    )
    g.add_argument(
        "--session",
        metavar="ID",
        default=os.environ.get(SESSION_ENV),
        help=f"开标会（标段）编号 the session id (default ${SESSION_ENV})",
    )
    g.add_argument(
        "--ca-file",
        metavar="PEM",
        help="另外信任的服务器 TLS 证书 CA（PEM；系统信任的 CA 始终有效）/ a CA to trust for the "
        "server's TLS certificate besides the system's (PEM); verification is always on",
    )
    k = p.add_argument_group(
        "签名证书 signing key",
        "登录和签名用的 CA 证书及私钥 the key and certificate for login and signatures. "
        "Password: $BIDBRIDGE_KEY_PASSWORD; token PIN: $BIDBRIDGE_PIN.",
    )
    k.add_argument("--key", metavar="PEM_OR_P12", help="私钥文件 private key file (PEM/DER/P12)")
    k.add_argument("--token-uri", metavar="URI", help="CA 锁上的私钥 PKCS#11 URI (RFC 7512)")
    k.add_argument("--cert", metavar="PEM", help="签名证书 the signing certificate")
    k.add_argument(
        "--chain", action="append", default=[], metavar="PEM", help="中间证书 intermediates"
    )
    d = p.add_argument_group(
        "加密证书私钥 decryption key",
        "用于解密演练和在线解密 for the rehearsal and the online decryption",
    )
    d.add_argument("--decrypt-key", metavar="PEM_OR_P12", help="加密证书的私钥文件 key file")
    d.add_argument("--decrypt-token-uri", metavar="URI", help="CA 锁上的解密私钥 PKCS#11 URI")
    d.add_argument("--decrypt-cert", metavar="PEM", help="加密证书 the encryption certificate")
    return p


def _pin(args: argparse.Namespace) -> str | None:
    pin = _env_pin()
    if pin:
        return pin
    uris = [u for u in (args.token_uri, getattr(args, "decrypt_token_uri", None)) if u]
    if not uris:
        return None
    from crypto.token import parse_uri

    if all(parse_uri(u).resolve_pin() is not None for u in uris):
        return None  # the URIs carry their PINs
    if sys.stdin.isatty():
        return getpass.getpass("CA 锁 PIN / token PIN: ")
    return None


def load_credentials(args: argparse.Namespace, *, decrypt: bool = False) -> Credentials:
    if bool(args.key) == bool(args.token_uri):
        raise UsageError("需要 --key 或 --token-uri 之一 / give one of --key FILE, --token-uri URI")
    if args.decrypt_key and args.decrypt_token_uri:
        raise UsageError("--decrypt-key 与 --decrypt-token-uri 只能选一 / give only one of them")
    if decrypt and not (args.decrypt_key or args.decrypt_token_uri):
        raise UsageError(
            "需要 --decrypt-key 或 --decrypt-token-uri / give the encryption certificate's key"
        )
    return Credentials.load(
        key=args.key,
        cert=args.cert,
        token_uri=args.token_uri,
        chain=args.chain,
        decrypt_key=args.decrypt_key,
        decrypt_cert=args.decrypt_cert,
        decrypt_token_uri=args.decrypt_token_uri,
        pin=_pin(args),
    )


def _sid(args: argparse.Namespace) -> str:
    if not args.session:
        raise UsageError(f"需要 --session / give --session ID (or set ${SESSION_ENV})")
    return str(args.session)


def _ssl(args: argparse.Namespace) -> ssl.SSLContext:
    """The server is always verified: the system's CAs, plus ``--ca-file`` if given."""
    from room_client.client import client_tls

    return client_tls(args.ca_file or None)


Action = Callable[["HallClient", argparse.Namespace], Awaitable[int]]


def _runner(action: Action, *, decrypt: bool = False) -> Callable[[argparse.Namespace], int]:
    """A handler: load the keys, log in, run ``action``, close everything."""

    def handler(args: argparse.Namespace) -> int:
        from room_client.client import HallClient

        if not args.server:
            raise UsageError(f"需要 --server / give --server URL (or set ${SERVER_ENV})")
        creds = load_credentials(args, decrypt=decrypt)

        async def main() -> int:
            async with HallClient(args.server, creds, ssl_context=_ssl(args)) as client:
                await client.login()
                return await action(client, args)

        try:
            return asyncio.run(main())
        finally:
            creds.close()

    return handler


def out(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)
