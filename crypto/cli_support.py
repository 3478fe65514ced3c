"""How the ``bidbridge`` commands of this package are added: command groups and subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeAlias

Handler = Callable[[argparse.Namespace], int]
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_group(
    sub: Subcommands, name: str, help: str, description: str | None, **settings: Any
) -> Subcommands:
    """Command ``name``, which only holds subcommands: one of them (``SUBCOMMAND``) is required.

    The subcommand's name lands in ``NAME_command``; ``settings`` go to ``add_parser``.
    """
    parser = sub.add_parser(name, help=help, description=description, **settings)
    return parser.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND", required=True)


def add_command(
    sub: Subcommands,
    name: str,
    handler: Handler,
    help: str,
    description: str,
    **settings: Any,
) -> argparse.ArgumentParser:
    """Subcommand ``name``, run by ``handler``; ``settings`` go to ``add_parser``."""
    parser = sub.add_parser(name, help=help, description=description, **settings)
    parser.set_defaults(handler=handler)
    return parser
