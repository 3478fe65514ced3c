"""Certificate binding (证书绑定): a company's certificates bound to it, the requests and the log.

Under CA mutual recognition (一证通用) a company may hold certificates from several trusted CAs;
it acts only through those bound to it. The centre binds and unbinds; a company binds a new
certificate itself with a request signed by a signing certificate already bound to it — the
document below, bound to one challenge (``/api/auth/challenge``) and one server so that it
cannot be replayed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.canonical import signed_document
from schemas.common import CreditCode

Usage = Literal["signing", "encryption"]
"""signing 签名证书 (login, the bid's inner signature) · encryption 加密证书 (the bid's recipient)."""

BIND_PURPOSE = "bidbridge-bind-certificate"

Sha256 = str


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def binding_document(
    server_id: str, nonce: str, credit_code: str, usage: str, cert_sha256: str
) -> bytes:
    """What a company signs (with a bound signing certificate) to bind a new certificate."""
    return signed_document(
        BIND_PURPOSE,
        server=server_id,
        nonce=nonce,
        credit_code=credit_code,
        usage=usage,
        certificate_sha256=cert_sha256,
    )


class BindIn(_Model):
    """The centre binds a certificate to a company."""

    credit_code: CreditCode
    usage: Usage
    cert_pem: str = Field(min_length=1, max_length=20_000)


class SelfBindIn(_Model):
    """A company binds a new certificate itself: the request signed by a bound certificate (the
    company is the caller's)."""

    usage: Usage
    cert_pem: str = Field(min_length=1, max_length=20_000)
    signature: str = Field(
        min_length=1,
        max_length=100_000,
        description="base64 CMS SignedData over binding_document(server, nonce, credit code, "
        "usage, SHA-256 of the new certificate's DER), signed with a bound signing certificate",
    )


class UnbindIn(_Model):
    """The centre unbinds a company's certificate for one usage."""

    credit_code: CreditCode
    usage: Usage
    cert_sha256: Sha256 = Field(pattern=r"^[0-9a-f]{64}$")


class BindingOut(_Model):
    """One binding: the certificate, its usage, and when and by whom it was bound (and unbound)."""

    credit_code: str
    cert_sha256: Sha256
    usage: Usage
    subject: str
    issuer: str
    bound_at: datetime
    bound_by: str
    unbound_at: datetime | None = None
    unbound_by: str | None = None


class BindingsOut(_Model):
    bindings: list[BindingOut]


class BindingEventOut(_Model):
    """One line of the binding log: every binding and unbinding, who did it and when."""

    id: int
    at: datetime
    credit_code: str
    action: Literal["bound", "unbound"]
    cert_sha256: Sha256
    usage: Usage
    actor: str = Field(description="'centre:<account>', 'bidder:<credit code>' or 'registration'")
    via: Literal["registration", "centre", "self"]
    signer_sha256: Sha256 | None = Field(
        default=None, description="a self-binding: the bound certificate that signed the request"
    )


class BindingEventsOut(_Model):
    events: list[BindingEventOut]
