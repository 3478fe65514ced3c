"""What the server's ``bidbridge`` subcommands share: how one is added to the command."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import TypeAlias

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler: TypeAlias = Callable[[argparse.Namespace], int]


def add_command(sub: Subparsers, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
    """Add the subcommand ``name``, run by ``handler``, whose docstring is its description (in
    ``--help`` its white space is folded as argparse does); its options go to the parser returned."""
    p = sub.add_parser(name, help=help, description=inspect.getdoc(handler))
    p.set_defaults(handler=handler)
    return p
