"""The ``bidbridge`` console entry point: one command, many subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from crypto import ca_cli, token_cli
from crypto import cli as crypto_cli
from crypto.errors import BidBridgeError, FileUnreadable
from server.demo import sealing

Handler = Callable[[argparse.Namespace], int]

# Commands whose modules pull in the server stack (aiohttp, socket.io, SQLAlchemy): imported only
# when one of their commands is asked for (or for the full --help), so `bidbridge open` of a
# 2 GB bid keeps its small, constant memory footprint.
SERVER_COMMANDS = {
    "demo": "server.demo.run",
    "link": "server.demo.run",
    "serve": "server.serve_cli",
    "admin": "server.serve_cli",
    "bidder": "room_client.bidder_cli",
    "host": "room_client.bidder_cli",
    "supervisor": "room_client.bidder_cli",
    "room": "room_client.room_cli",
    "verify-archive": "server.audit.cli",
    "verify-draw": "server.audit.verify_draw",
    "export-archive": "server.audit.export",
    "signals": "server.audit.signals_cli",
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bidbridge",
        description="BidBridge: 不见面开标 no-show bid opening and 远程异地评标 remote evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    ca_cli.register(sub)
    crypto_cli.register(sub)
    token_cli.register(sub)
    sealing.register(sub)
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    wanted = words[0] if words else None
    if wanted in SERVER_COMMANDS:
        modules = [SERVER_COMMANDS[wanted]]
    elif wanted is None or wanted not in sub.choices:
        modules = list(dict.fromkeys(SERVER_COMMANDS.values()))
    else:
        modules = []
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except BidBridgeError as exc:
        print(f"ERROR {exc.line()}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ERROR {FileUnreadable(where + (exc.strerror or str(exc))).line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ERROR INTERRUPTED: 已中断 / interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
