"""The ``bidbridge`` command run as a child process, and a party's key and certificate as files."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.support.hall import Party
from tests.support.pki import write_cert

BIDBRIDGE = [str(Path(sys.executable).with_name("bidbridge"))]
"""The console script, as installed in the virtual environment."""


class Result:
    def __init__(self, argv: list[str], code: int, out: str, err: str) -> None:
        self.argv, self.code, self.out, self.err = argv, code, out, err

    def __repr__(self) -> str:
        return (
            f"bidbridge {' '.join(self.argv)}\nexit {self.code}\n"
            f"--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"
        )


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("BIDBRIDGE_SERVER", "BIDBRIDGE_SESSION", "BIDBRIDGE_PIN", "BIDBRIDGE_KEY_PASSWORD")
    }
    env["PYTHONUTF8"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


async def bidbridge(*argv: str | Path, timeout: float = 60.0) -> Result:
    """Run ``bidbridge ARGV`` in a child process; the in-process server keeps serving meanwhile."""
    args = [str(a) for a in argv]
    proc = await asyncio.create_subprocess_exec(
        *BIDBRIDGE,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"bidbridge {' '.join(args)} did not finish in {timeout} s\n"
            f"{out.decode(errors='replace')[-2000:]}\n{err.decode(errors='replace')[-2000:]}"
        ) from None
    assert proc.returncode is not None
    return Result(args, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def write_party(folder: Path, name: str, party: Party) -> tuple[Path, Path]:
    """The party's private key (PKCS#8 PEM) and certificate (PEM) as files."""
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / f"{name}.key"
    key.write_bytes(
        party.key.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    return key, write_cert(folder / f"{name}.pem", party.cert)
