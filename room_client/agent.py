"""The bidder's (and staff's) agent: the hall's REST client, its live follower and their keys.

The agent lives in three modules; this one gathers their names for ``from room_client.agent
import ...``:

* ``room_client.credentials``: ``Credentials``, the keys a party signs and decrypts with (files
  or PKCS#11 tokens).
* ``room_client.client``: ``HallClient``, the hall's REST API (CA login, the token keep-alive,
  uploads, the rehearsal and the online decryption done locally, signed confirmations), its
  ``AgentError`` and the documents a party signs or checks (``sign_login``, ``sign_table``,
  ``record_bytes``, ``verify_receipt`` ...).
* ``room_client.follower``: ``HallFollower``, the session's events over socket.io (namespace
  ``/hall``), kept in order by their positions in the viewer's own streams (never the log's
  ``seq``, docs/positions.md), replayed after gaps and reconnects, with the server's clock offset.

This package never imports ``server`` (DESIGN.md section 2): only ``crypto`` and ``schemas``.
"""

from __future__ import annotations

from room_client.client import (
    BACKUP_PURPOSE,
    CHUNK,
    MACHINE_ACTIONS,
    MAX_MESSAGE,
    AgentError,
    HallClient,
    ProgressCallback,
    backup_approval_document,
    file_chunks,
    record_bytes,
    sign_login,
    sign_table,
    verify_receipt,
)
from room_client.credentials import PASSWORD_ENV, PIN_ENV, Credentials, utc_now
from room_client.follower import (
    NAMESPACE,
    EventCallback,
    HallFollower,
    NoticeCallback,
    clock_offset,
)

__all__ = [
    "BACKUP_PURPOSE",
    "CHUNK",
    "MACHINE_ACTIONS",
    "MAX_MESSAGE",
    "NAMESPACE",
    "PASSWORD_ENV",
    "PIN_ENV",
    "AgentError",
    "Credentials",
    "EventCallback",
    "HallClient",
    "HallFollower",
    "NoticeCallback",
    "ProgressCallback",
    "backup_approval_document",
    "clock_offset",
    "file_chunks",
    "record_bytes",
    "sign_login",
    "sign_table",
    "utc_now",
    "verify_receipt",
]
