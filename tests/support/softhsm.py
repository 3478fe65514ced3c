"""SoftHSM2 tokens for tests: a process-wide token directory and a pool of fresh tokens.

SoftHSM reads ``SOFTHSM2_CONF`` once, at ``C_Initialize``, and python-pkcs11 loads a module once
per process; SoftHSM 2.6 also fixes its slot list at ``C_Initialize``, so a token that
``softhsm2-util`` creates later is invisible until the module is re-initialised. Therefore:

* one process-wide token directory and ``softhsm2.conf`` in a temp dir, created on first use;
  ``SOFTHSM2_CONF`` points at it from then until the process exits (the system token store in
  /var/lib/softhsm is never touched);
* a pool of tokens is initialised in one go, before the module is first loaded, and each test
  takes a fresh token from it; only when the pool runs out (or a test asks for a custom label
  or PIN) are more tokens made and the module re-initialised with
  ``crypto.token.rescan_tokens(force=True)``, which invalidates token keys still open, so keep
  ``TokenKey`` objects test-scoped and close them.

Use the ``softhsm_token`` fixture (tests/conftest.py) or the ``softhsm_setup()`` context
manager.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from crypto.token import ObjectType, Pkcs11Uri, rescan_tokens

SOFTHSM_MODULE = os.environ.get("SOFTHSM2_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
SOFTHSM_UTIL = shutil.which("softhsm2-util") or "softhsm2-util"
DEFAULT_PIN = "1234"
DEFAULT_SO_PIN = "12345678"
POOL_SIZE = 24


@dataclass(frozen=True)
class SoftHSMToken:
    """An initialised SoftHSM token: where it is and how to log in."""

    module: str
    label: str
    pin: str
    so_pin: str
    conf: Path

    def uri(
        self,
        object: str | None = None,
        id: bytes | None = None,
        type: ObjectType | None = None,
        *,
        with_pin: bool = True,
        with_module: bool = True,
    ) -> str:
        """A ``pkcs11:`` URI for this token, or for an object on it.

        ``softhsm_token.uri("sign-key", b"\\x01", "private")`` gives
        ``pkcs11:token=...;object=sign-key;type=private;id=%01?module-path=...&pin-value=1234``.
        """
        parsed = Pkcs11Uri(
            token=self.label,
            object=object,
            id=id,
            type=type,
            module_path=self.module if with_module else None,
            pin_value=self.pin if with_pin else None,
        )
        return str(parsed)

    def util(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``softhsm2-util`` against this setup (e.g. ``--show-slots``)."""
        return _util(self.conf, *args)


def softhsm_available() -> bool:
    return os.path.isfile(SOFTHSM_MODULE) and shutil.which(SOFTHSM_UTIL) is not None


def _util(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    result = subprocess.run(
        [SOFTHSM_UTIL, *args], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"softhsm2-util {' '.join(args)} failed: {result.stderr.strip()}")
    return result


class _SharedSetup:
    """The process-wide SoftHSM configuration and token pool."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bidbridge-softhsm-"))
        tokens = self.root / "tokens"
        tokens.mkdir()
        self.conf = self.root / "softhsm2.conf"
        self.conf.write_text(
            f"directories.tokendir = {tokens}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
            "slots.mechanisms = ALL\n"
            "library.reset_on_fork = false\n",
            encoding="utf-8",
        )
        self.previous_conf = os.environ.get("SOFTHSM2_CONF")
        self.lock = threading.Lock()
        self.counter = itertools.count(1)
        self.pool: list[str] = []
        self.pin_env()
        atexit.register(self.cleanup)

    def pin_env(self) -> None:
        os.environ["SOFTHSM2_CONF"] = str(self.conf)

    def cleanup(self) -> None:
        if self.previous_conf is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = self.previous_conf
        shutil.rmtree(self.root, ignore_errors=True)

    def init_token(self, label: str, pin: str, so_pin: str) -> None:
        _util(
            self.conf,
            "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin,
        )  # fmt: skip

    def new_label(self) -> str:
        return f"bb-test-{next(self.counter):04d}"

    def take(self, label: str | None, pin: str, so_pin: str) -> SoftHSMToken:
        with self.lock:
            self.pin_env()
            if label is None and pin == DEFAULT_PIN and so_pin == DEFAULT_SO_PIN:
                if not self.pool:
                    self.pool = [self.new_label() for _ in range(POOL_SIZE)]
                    for name in self.pool:
                        self.init_token(name, pin, so_pin)
                    # Only does anything once the module is loaded in this process.
                    rescan_tokens(SOFTHSM_MODULE, force=True)
                label = self.pool.pop(0)
            else:
                label = label or self.new_label()
                self.init_token(label, pin, so_pin)
                rescan_tokens(SOFTHSM_MODULE, force=True)
        return SoftHSMToken(SOFTHSM_MODULE, label, pin, so_pin, self.conf)


_shared: _SharedSetup | None = None
_shared_lock = threading.Lock()


def shared_setup() -> _SharedSetup:
    """The process-wide SoftHSM setup, created on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = _SharedSetup()
        return _shared


@contextmanager
def softhsm_setup(
    label: str | None = None, pin: str = DEFAULT_PIN, so_pin: str = DEFAULT_SO_PIN
) -> Iterator[SoftHSMToken]:
    """A fresh, initialised SoftHSM token in the process-wide temp token directory.

    With a custom ``label`` (at most 32 characters, unique in the process) or PIN the token is
    made on the spot and the module re-initialised; otherwise it comes from the pool.
    """
    if not softhsm_available():
        raise RuntimeError(f"SoftHSM2 is not installed ({SOFTHSM_MODULE}, {SOFTHSM_UTIL})")
    yield shared_setup().take(label, pin, so_pin)
