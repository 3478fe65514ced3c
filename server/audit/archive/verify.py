"""Verifying an archive offline: every check in order, then the signers' certificates."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from crypto.errors import FileUnreadable
from crypto.trust import TrustStore
from schemas.time import iso, parse_iso
from server.audit.archive.evaluation_checks import EvaluationChecks
from server.audit.archive.format import (
    BLOBS,
    EVENTS,
    MANIFEST_SIG,
    ArchiveReport,
    blob_sha,
    cert_der,
    envelope_sha,
)
from server.audit.archive.opening_checks import OpeningChecks
from server.audit.archive.problems import Problem, invalid, problems_at
from server.audit.chain import GENESIS


class _Verifier(OpeningChecks, EvaluationChecks):
    """One archive's verification: read it, check each event (every kind's checks apply: the
    log's event types select them), then validate every signer's certificate."""

    def __init__(
        self,
        path: Path,
        tmp: Path,
        trust_roots: list[x509.Certificate] | None,
        deep: bool,
        extra_intermediates: Sequence[x509.Certificate],
        extra_crls: Sequence[x509.CertificateRevocationList],
    ) -> None:
        super().__init__(path, tmp, deep)
        self.given_roots = trust_roots
        self.extra_intermediates = list(extra_intermediates)
        self.extra_crls = list(extra_crls)

    def run(self) -> ArchiveReport:
        self.read()
        self._per_event()
        self._certificates()
        return ArchiveReport(
            session_id=self.session_id,
            exported_at=iso(self.exported_at),
            events=len(self.events),
            head_hash=self.events[-1].hash if self.events else GENESIS,
            bids_decrypted=self.bids_decrypted,
            signatures_checked=self.signatures,
            certificates_validated=len(self.uses),
            anchors="given" if self.given_roots is not None else "archive",
            deep=self.deep,
            kind=self.kind,
            draws_recomputed=self.draws_recomputed,
            segments_checked=self.segments_checked,
            files_checked=len(self.blobs_used),
        )

    def _per_event(self) -> None:
        for event in self.events:
            where = f"{EVENTS} seq {event.seq} ({event.type})"
            check = getattr(self, f"_check_{event.type}", None)
            if check is None:
                continue
            with problems_at(where, "事件载荷格式错误", "malformed event payload"):
                check(event, where, parse_iso(event.at))
        for name in self.files:
            if name.startswith(BLOBS):
                if blob_sha(name) not in self.blobs_used:
                    raise invalid(name, "文件未被任何事件引用", "no event names this file")
                continue
            if envelope_sha(name) not in self.uploaded:
                raise invalid(
                    name,
                    "信封未被任何 bid_uploaded 事件引用",
                    "no bid_uploaded event names this envelope",
                )
        self._after_opening_events()

    def _certificates(self) -> None:
        # The manifest's signer: the platform, at the export instant. Its certificates are the
        # one part of the archive no hash covers, so each must be one the archive lists.
        known = {
            *self.party_certs,
            *(cert_der(c) for c in self.roots),
            *(cert_der(c) for c in self.intermediates),
        }
        doc = self.manifest_doc
        with problems_at(MANIFEST_SIG):
            for cert in doc.certificates:
                if cert_der(cert) not in known:
                    raise Problem(
                        "签名中含有存档未收录的证书",
                        "the signature carries a certificate not in the archive",
                    )
            self._server_signer(doc)
            self._use(MANIFEST_SIG, doc.signer, doc.certificates, self.exported_at)
        # The manifest's use goes first: it is the archive's outermost signature.
        self.uses.insert(0, self.uses.pop())
        roots = self.given_roots if self.given_roots is not None else self.roots
        crls = [*self.crls, *self.extra_crls]
        with problems_at("trust/", "信任材料无效", "invalid trust material"):
            store = TrustStore(
                roots,
                [*self.intermediates, *self.extra_intermediates],
                crls,
                require_revocation=bool(crls),
            )
        for use in self.uses:
            try:
                store.validate(use.cert, use.purpose, use.at, extra_intermediates=use.extra)
            except Exception as exc:
                raise invalid(
                    f"{use.where}, {use.cert.subject.rfc4514_string()}",
                    f"签名证书在使用时刻（{iso(use.at)}）无效",
                    f"the signer's certificate was not valid when used ({iso(use.at)})",
                    exc,
                ) from None


def verify_archive(
    path: Path | str,
    *,
    trust_roots: list[x509.Certificate] | None = None,
    deep: bool = False,
    extra_intermediates: Sequence[x509.Certificate] = (),
    extra_crls: Sequence[x509.CertificateRevocationList] = (),
) -> ArchiveReport:
    """Verify an archive offline; raise :class:`ArchiveInvalid` naming the first failure.

    ``trust_roots``: the verifier's own anchors (``anchors="given"``); without them the archive's
    own roots are used (``anchors="archive"``), which proves integrity but not authenticity.
    ``deep`` also decrypts every decrypted bid's package and compares its summary.

    Signers: the platform's documents (manifest, receipts, checkpoints, record) need a
    ``centre`` certificate (``crypto.ca.role_of``); every signer's certificate must be one of
    ``certificates/`` and is validated for ``bid_signature`` (an expert's sign-in: ``login``)
    at the instant it was used: the event's ``at`` (for a bid's inner signature, its
    ``bid_decrypted`` event, when the server checked it) and ``exported_at`` for the manifest.

    Evaluations: the draw is recomputed from ``blobs/<pool_blob>``, the revealed server random
    (which must open the published commitment), both entropies and the request, and must equal
    the recorded result (each replacement too); every recording segment must be present with
    its event's hash and size (``deep``: and read as WebM/Matroska); every ``member_signed_in``
    must carry the member's signature over its sign-in document (the server named by
    ``archive.json``'s ``server_id``, the session, the event's room, the member, the nonce) made
    with the certificate the event records (``cert_sha256``) whose subject ``serialNumber`` is
    the member's id; every score sheet and report response must be signed over its document
    with the certificate the member signed in with;
    the report must be the file its event names, signed by the platform.
    """
    path = Path(path)
    if not path.is_file():
        raise FileUnreadable(f"{path}: 文件不存在 / no such file")
    with tempfile.TemporaryDirectory(prefix="bidbridge-verify-") as tmp:
        verifier = _Verifier(path, Path(tmp), trust_roots, deep, extra_intermediates, extra_crls)
        return verifier.run()
