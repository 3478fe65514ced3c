"""The ``bidbridge`` console entry point: one command, many subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from crypto import ca_cli, token_cli
from crypto import cli as crypto_cli
from crypto.errors import BidBridgeError, FileUnreadable
from room_client import bidder_cli
from server import demo, demo_crypto, serve_cli
from server.audit import cli as audit_cli
from server.audit import export as audit_export

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bidbridge",
        description="BidBridge: 不见面开标 no-show bid opening and 远程异地评标 remote evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    ca_cli.register(sub)
    crypto_cli.register(sub)
    token_cli.register(sub)
    demo.register(sub)
    demo_crypto.register(sub)
    serve_cli.register(sub)
    bidder_cli.register(sub)
    audit_cli.register(sub)
    audit_export.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
