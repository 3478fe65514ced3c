"""Private keys on a PKCS#11 token (a bidder's CA USB key, an HSM, SoftHSM in tests).

* ``crypto.token.uri``: RFC 7512 ``pkcs11:`` URIs (``Pkcs11Uri``, ``parse_uri``).
* ``crypto.token.session``: opening a token and using a key that never leaves it
  (``open_token_key``, ``TokenKey``, ``find_certificate``).
* ``crypto.token.provision``: generating keys, storing certificates, listing tokens and objects
  (SoftHSM2 set-ups, ``bidbridge token``).

Every failure is a typed ``crypto.errors`` exception; raw ``pkcs11`` exceptions never escape.
"""

from crypto.token.provision import (
    generate_key_on_token,
    list_objects,
    list_tokens,
    store_certificate_on_token,
)
from crypto.token.session import TokenKey, find_certificate, open_token_key, rescan_tokens
from crypto.token.uri import MODULE_ENV, ObjectType, Pkcs11Uri, parse_uri

__all__ = [
    "MODULE_ENV",
    "ObjectType",
    "Pkcs11Uri",
    "TokenKey",
    "find_certificate",
    "generate_key_on_token",
    "list_objects",
    "list_tokens",
    "open_token_key",
    "parse_uri",
    "rescan_tokens",
    "store_certificate_on_token",
]
