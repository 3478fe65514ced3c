"""The house rules that a reader relies on: no import cycle anywhere in the project's packages
(counted by ``scripts/import_cycles.py``, function-local imports included), and the routes are
one explicit list that the OpenAPI document describes in full."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from server.api.routes import ROUTES
from server.api.routing import openapi_document

ROOT = Path(__file__).resolve().parent.parent


def test_no_import_cycle_in_server_room_client_crypto_schemas() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "import_cycles.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("0 import cycles in server, room_client, crypto, schemas")


def test_import_cycle_script_finds_a_cycle(tmp_path: Path) -> None:
    for package in ("server", "room_client", "crypto", "schemas"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "server" / "a.py").write_text("def f():\n    from server import b\n")
    (tmp_path / "server" / "b.py").write_text("from server.a import f\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "import_cycles.py"), "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "cycle of 2: server.a, server.b" in result.stdout


def test_every_route_is_listed_once_and_described_in_openapi() -> None:
    keys = [(r.method, r.path) for r in ROUTES]
    assert len(keys) == len(set(keys))
    paths = openapi_document(ROUTES)["paths"]
    assert {(m.upper(), p) for p, ops in paths.items() for m in ops} == set(keys)
