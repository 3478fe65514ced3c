"""Where a bidder's request came from (address, machine, certificate) for the bid-rigging signals."""

from __future__ import annotations

import contextlib
import ipaddress
import logging

from aiohttp import web

from crypto.errors import BidBridgeError
from crypto.fingerprint import FINGERPRINT
from crypto.fingerprint import HEADER as MACHINE_HEADER
from server.api.routing import Ctx
from server.api.shared import stored_cert
from server.domain import opening as op
from server.identity import cert_sha256

log = logging.getLogger(__name__)


def _networks(entries: tuple[str, ...]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            log.warning("trusted proxy %r is not an address or network; ignored", entry)
    return out


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def client_address(request: web.Request, trusted_proxies: tuple[str, ...]) -> str | None:
    """The client's network address: the direct peer, unless the peer is a trusted proxy; then
    X-Forwarded-For is walked from the right past trusted proxies to the first other address.
    From an untrusted peer the header is ignored (anyone can write it)."""
    peer = _address(request.remote or "")
    if peer is None:
        return None
    nets = _networks(trusted_proxies)

    def trusted(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(a in n for n in nets)

    hops = [
        hop for value in request.headers.getall("X-Forwarded-For", []) for hop in value.split(",")
    ]
    current = peer
    while trusted(current) and hops:
        forwarded = _address(hops.pop())
        if forwarded is None:
            break  # a malformed entry: the last address vouched for is the client
        current = forwarded
    return str(current)


async def request_origin(ctx: Ctx) -> op.Origin:
    """Where this bidder's request came from: address, machine fingerprint (validated: 64 hex
    digits, else dropped) and the serial of the certificate the bidder logged in with."""
    machine = ctx.request.headers.get(MACHINE_HEADER, "").strip().lower()
    serial = None
    company = await ctx.hub.store.get_company(ctx.who.party_id)
    if company is not None:
        with contextlib.suppress(ValueError, BidBridgeError):
            cert = stored_cert(company.signing_cert_pem, "signing certificate")
            if cert_sha256(cert) == ctx.who.cert_sha256:
                serial = format(cert.serial_number, "x")
    return op.Origin(
        addr=client_address(ctx.request, ctx.hub.settings.trusted_proxies),
        machine=machine if FINGERPRINT.fullmatch(machine) else None,
        cert_serial=serial,
    )
