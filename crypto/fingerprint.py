"""The sealing machine's fingerprint (封装机器指纹): a salted, per-lot value that links bids sealed
or sent from one computer, and nothing else.

What it is made of: HMAC-SHA256 keyed by ``label || lot key`` over the machine's installation id
(``/etc/machine-id`` on Linux; on Windows the ``MachineGuid`` of the registry; surrounding
whitespace removed) and the primary network interface's MAC address (normalized to 12 lower-case
hex digits; left out when there is none). Hex, 64 characters.

Why it is free of personal data: no user name, host name, IP address, disk serial or anything a
person typed goes in, and the HMAC cannot be reversed to the machine id. Because the key holds
the lot, the same machine gives unrelated values in different lots: the fingerprint links bids
within one lot (what the bid-rigging signals compare) and cannot follow a machine, or its owner,
from project to project. The agent records it inside the signed package's manifest (so it cannot
be changed after sealing without breaking the bidder's signature) and sends it with its requests.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

LABEL = b"bidbridge sealing-machine fingerprint v1\x00"
HEADER = "X-BidBridge-Machine"
"""The HTTP header the bidder agent sends the fingerprint in."""
FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")

MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
NET_CLASS = Path("/sys/class/net")


def machine_fingerprint(lot_key: str, machine_id: bytes, mac: str | None) -> str:
    """The fingerprint of the machine ``machine_id``/``mac`` for the lot ``lot_key``."""
    key = LABEL + lot_key.encode("utf-8")
    mac_hex = ""
    if mac is not None:
        mac_hex = "".join(c for c in mac.lower() if c in "0123456789abcdef")
        if len(mac_hex) != 12:
            mac_hex = ""
    message = machine_id.strip() + b"\x00" + mac_hex.encode("ascii")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def lot_key(project_code: str, lot_code: str) -> str:
    """The lot a bid is for, as both the sealing side (from ``summary.json``) and the agent (from
    the session) name it: ``project/lot``, the platform's lot id."""
    return f"{project_code}/{lot_code}"


def read_machine_id(files: tuple[Path, ...] = MACHINE_ID_FILES) -> bytes | None:
    """The installation id, or None when the machine has none readable."""
    for path in files:
        try:
            value = path.read_bytes().strip()
        except OSError:
            continue
        if value:
            return value[:256]
    try:  # Windows: the installation's MachineGuid
        import winreg  # type: ignore[import-not-found,unused-ignore]

        with winreg.OpenKey(  # type: ignore[attr-defined,unused-ignore]
            winreg.HKEY_LOCAL_MACHINE,  # type: ignore[attr-defined,unused-ignore]
            r"SOFTWARE\Microsoft\Cryptography",
        ) as k:
            guid, _ = winreg.QueryValueEx(k, "MachineGuid")  # type: ignore[attr-defined,unused-ignore]
            return str(guid).encode("ascii", "replace")
    except (ImportError, OSError):
        return None


def primary_mac(root: Path = NET_CLASS) -> str | None:
    """The MAC address of the first physical network interface (by name), or None.

    Virtual interfaces (loopback, bridges, containers' veth pairs, tunnels) come and go; only
    interfaces backed by a device (``/sys/class/net/<if>/device``) count."""
    try:
        names = sorted(p.name for p in root.iterdir())
    except OSError:
        return None
    for name in names:
        iface = root / name
        if not (iface / "device").exists():
            continue
        try:
            mac = (iface / "address").read_text("ascii").strip().lower()
        except (OSError, UnicodeDecodeError):
            continue
        if re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac) and mac != "00:00:00:00:00:00":
            return mac
    return None


def this_machine(lot: str) -> str | None:
    """This machine's fingerprint for the lot ``lot`` (see :func:`lot_key`), or None when the
    machine has no readable installation id."""
    machine_id = read_machine_id()
    if machine_id is None:
        return None
    return machine_fingerprint(lot, machine_id, primary_mac())
