"""证书绑定: which certificates a company acts through, decided from the bindings on record.

A company acts only through certificates bound to it (DESIGN.md rule 3; 一证通用: several per
company, from any trusted CA). A certificate that merely *carries* the company's credit code is
not enough: any trusted CA can issue one. The server gathers the facts (the company's bindings
with their intervals, the certificate's fingerprint and credit code, the instants) and asks here;
nothing in this module reads a clock or a database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from server.domain import errors as E

USAGES = ("signing", "encryption")


@dataclass(frozen=True)
class Bound:
    """One binding of a certificate to a company for one usage, and when it held."""

    cert_sha256: str
    usage: str
    bound_at: datetime
    unbound_at: datetime | None = None

    def holds_at(self, at: datetime) -> bool:
        return self.bound_at <= at and (self.unbound_at is None or at < self.unbound_at)


CertNotBound = E.refusal(
    "CertNotBound",
    "CERT_NOT_BOUND",
    403,
    "该证书未绑定到本单位：请由交易中心绑定，或用本单位已绑定的证书签名申请绑定",
    "this certificate is not bound to the company: have the trading centre bind it, or request "
    "the binding signed with a certificate already bound to the company",
)

CertAlreadyBound = E.refusal(
    "CertAlreadyBound",
    "CERT_ALREADY_BOUND",
    409,
    "该证书已绑定（同一用途）",
    "this certificate is already bound for this usage",
)

CertOtherCompany = E.refusal(
    "CertOtherCompany",
    "CERT_OTHER_COMPANY",
    422,
    "证书中的统一社会信用代码不是本单位的",
    "the certificate names another unified social credit code than the company's",
)

BindSignerNotBound = E.refusal(
    "BindSignerNotBound",
    "BIND_SIGNER_NOT_BOUND",
    403,
    "绑定申请须由本单位已绑定的签名证书签名",
    "a binding request must be signed with a signing certificate already bound to the company",
)

SIGNER_NOT_BOUND = "SIGNER_NOT_BOUND"
"""The decryption failure code: the bid's inner signer was not a bound signing certificate of
the company when the bid was sealed (received). The bidder's cause under rule 8."""

SIGNER_NOT_BOUND_MESSAGE = (
    "投标文件的签名证书在投标时未绑定到本单位，投标文件不予接受",
    "the bid was signed with a certificate that was not bound to the company when the bid was "
    "sealed; the bid is refused",
)


def is_bound(bindings: Iterable[Bound], cert_sha256: str, usage: str, at: datetime) -> bool:
    """Whether ``cert_sha256`` was bound for ``usage`` at the instant ``at``."""
    return any(
        b.cert_sha256 == cert_sha256 and b.usage == usage and b.holds_at(at) for b in bindings
    )


def bound_now(bindings: Iterable[Bound], usage: str, now: datetime) -> list[str]:
    """The fingerprints bound for ``usage`` at ``now`` (rule 3: the recipients a bid may use)."""
    return sorted({b.cert_sha256 for b in bindings if b.usage == usage and b.holds_at(now)})


def check_acts_with(bindings: Iterable[Bound], cert_sha256: str, now: datetime) -> None:
    """Login and a bidder's acts: the certificate must be a bound signing certificate now."""
    if not is_bound(bindings, cert_sha256, "signing", now):
        raise CertNotBound(f"certificate sha256 {cert_sha256}")


def check_bind(
    bindings: Iterable[Bound],
    company: str,
    cert_credit_code: str | None,
    cert_sha256: str,
    usage: str,
    now: datetime,
) -> None:
    """A new binding: the certificate names the company and is not bound for ``usage`` yet."""
    if cert_credit_code != company:
        raise CertOtherCompany(f"the certificate names {cert_credit_code}, not {company}")
    if is_bound(bindings, cert_sha256, usage, now):
        raise CertAlreadyBound(f"{usage} {cert_sha256}")


def check_unbind(bindings: Iterable[Bound], cert_sha256: str, usage: str, now: datetime) -> None:
    if not is_bound(bindings, cert_sha256, usage, now):
        raise CertNotBound(f"{usage} {cert_sha256} is not bound / 未绑定")


def check_self_bind_signer(bindings: Iterable[Bound], signer_sha256: str, now: datetime) -> None:
    """A company's own binding request: signed with one of its bound signing certificates."""
    if not is_bound(bindings, signer_sha256, "signing", now):
        raise BindSignerNotBound(f"signed by {signer_sha256}")


def signer_failure(
    bindings: Iterable[Bound], signer_sha256: str, sealed_at: datetime
) -> str | None:
    """Rule 3 at decryption: None if the inner signer was a bound signing certificate of the
    company when the bid was sealed (the trusted instant of receipt), else the failure code."""
    if is_bound(bindings, signer_sha256, "signing", sealed_at):
        return None
    return SIGNER_NOT_BOUND


def from_rows(rows: Iterable[object]) -> list[Bound]:
    """The facts as the domain reads them, from the store's binding rows (any object with
    ``cert_sha256``, ``usage``, ``bound_at`` and ``unbound_at``)."""
    return [
        Bound(r.cert_sha256, r.usage, r.bound_at, r.unbound_at)  # type: ignore[attr-defined]
        for r in rows
    ]
