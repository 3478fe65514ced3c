"""``bidbridge serve`` and ``bidbridge admin``: run the lead site's server, bootstrap its data."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

from aiohttp import web

from crypto.keys import load_certificate
from schemas.time import parse_iso
from server.app import DEFAULT_UPLOAD_LIMIT, Settings, build_app, build_hub
from server.clock import AcceleratedClock, Clock, SystemClock
from server.identity import ServerIdentity, load_trust
from server.store import open_store
from server.tls import add_hsts, server_context


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        data_dir=Path(args.data),
        database_url=args.database_url or os.environ.get("DATABASE_URL"),
        upload_limit=getattr(args, "upload_limit", DEFAULT_UPLOAD_LIMIT),
        server_id=getattr(args, "server_id", "bidbridge"),
        media=os.environ.get("BIDBRIDGE_MEDIA", "builtin"),
        janus_url=os.environ.get("BIDBRIDGE_JANUS_URL"),
        janus_recordings=Path(p) if (p := os.environ.get("BIDBRIDGE_JANUS_RECORDINGS")) else None,
        turn_secret=os.environ.get("BIDBRIDGE_TURN_SECRET"),
        turn_urls=[
            u.strip() for u in os.environ.get("BIDBRIDGE_TURN_URLS", "").split(",") if u.strip()
        ],
        redis_url=getattr(args, "redis_url", None) or os.environ.get("BIDBRIDGE_REDIS_URL"),
        trusted_proxies=tuple(
            getattr(args, "trusted_proxy", None)
            or [
                p.strip()
                for p in os.environ.get("BIDBRIDGE_TRUSTED_PROXIES", "").split(",")
                if p.strip()
            ]
        ),
    )


def cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # TLS files are checked first: a wrong file is named before the database or port is opened.
    tls = server_context(args.tls_cert, args.tls_key)
    settings = settings_from(args)
    data = settings.data_dir
    identity = ServerIdentity.from_directory(
        Path(args.identity) if args.identity else data / "identity"
    )
    settings.trust_dir = Path(args.trust) if args.trust else data / "trust"
    settings.fetch_crls = bool(getattr(args, "fetch_crls", False))
    trust = load_trust(settings.trust_dir)
    clock: Clock = SystemClock()
    if args.accelerate:
        anchor = parse_iso(args.accelerate_from) if args.accelerate_from else None
        clock = AcceleratedClock(args.accelerate, anchor)

    async def make() -> web.Application:
        hub = await build_hub(settings, trust=trust, identity=identity, clock=clock)
        app = build_app(hub)
        if tls is not None:
            add_hsts(app)
        return app

    scheme = "https" if tls is not None else "http"
    print(f"BidBridge 开标大厅 / opening hall: {scheme}://{args.host}:{args.port}/api/openapi.json")
    web.run_app(make(), host=args.host, port=args.port, ssl_context=tls, print=None)
    return 0


def cmd_add_account(args: argparse.Namespace) -> int:
    cert_pem = Path(args.cert).read_text("ascii")
    load_certificate(args.cert)

    async def run() -> str:
        store = await open_store(
            args.database_url or os.environ.get("DATABASE_URL"), Path(args.data)
        )
        try:
            clock = SystemClock()
            row = await store.add_account(args.role, args.name, cert_pem, clock.now())
            return row.id
        finally:
            await store.close()

    account = asyncio.run(run())
    print(f"账户 / account {account} ({args.role}, {args.name})")
    return 0


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data folder (SQLite database, blobs, secrets)")
    p.add_argument(
        "--database-url", help="PostgreSQL URL (default: $DATABASE_URL, else SQLite in --data)"
    )


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the opening hall server / 启动开标大厅服务")
    _data_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--identity", help="folder with server.key and server.pem (default DATA/identity)"
    )
    p.add_argument(
        "--trust", help="folder of trusted CA certificates and CRLs (default DATA/trust)"
    )
    p.add_argument(
        "--upload-limit", type=int, default=DEFAULT_UPLOAD_LIMIT, help="max bid size in bytes"
    )
    p.add_argument("--server-id", default="bidbridge", help="name bound into login signatures")
    p.add_argument(
        "--redis-url",
        help="Redis for several processes sharing one PostgreSQL database "
        "(default: $BIDBRIDGE_REDIS_URL; none: a single process)",
    )
    p.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="ADDR_OR_CIDR",
        help="a reverse proxy whose X-Forwarded-For names the client (repeat; default: "
        "$BIDBRIDGE_TRUSTED_PROXIES, comma-separated; none: the direct peer is the client)",
    )
    p.add_argument(
        "--fetch-crls",
        action="store_true",
        help="fetch CRLs from the certificates' HTTP distribution points (cached in DATA)",
    )
    p.add_argument(
        "--tls-cert",
        metavar="PEM",
        help="serve HTTPS with this server certificate (intermediates may follow it in the file; "
        "e.g. server.crt.pem of `bidbridge ca issue-server`) / 服务器 TLS 证书",
    )
    p.add_argument(
        "--tls-key",
        metavar="PEM",
        help="the certificate's private key (unencrypted PEM) / TLS 证书私钥",
    )
    p.add_argument("--accelerate", type=float, help="run the clock this many times faster (demo)")
    p.add_argument(
        "--accelerate-from",
        help="ISO instant the accelerated clock counts from (keep it across restarts)",
    )
    p.set_defaults(handler=cmd_serve)

    a = sub.add_parser("admin", help="bootstrap the server's data / 初始化数据")
    asub = a.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    acc = asub.add_parser(
        "add-account", help="register a centre/host/supervisor account by certificate"
    )
    _data_args(acc)
    acc.add_argument("--role", required=True, choices=["centre", "host", "supervisor"])
    acc.add_argument("--name", required=True)
    acc.add_argument("--cert", required=True, help="the account's signing certificate (PEM)")
    acc.set_defaults(handler=cmd_add_account)
