"""The checks specific to an evaluation: the expert draw, sign-ins, sheets, report, recordings."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from crypto.attest import SignedDocument
from schemas.canonical import canonical_json
from schemas.evaluation import report_document, sheet_document, sign_in_document
from schemas.events import EventRecord
from schemas.experts import DrawResult, Site
from schemas.time import parse_iso
from server.audit.archive.checks import EventChecks, none_before, require_host_or_supervisor
from server.audit.archive.draw import draw_differences, read_draw_input
from server.audit.archive.format import (
    ARCHIVE_JSON,
    MAX_IN_MEMORY,
    blob_member,
    cert_sha256,
    sha256_hex,
)
from server.audit.archive.problems import Problem, hex64_field, parse_json, typed_field

_DrawInput = tuple[list[dict[str, Any]], list[Site], Any, Any]
"""The draw as ``draw_completed`` records it: the pool, the sites, the server random, the request."""


class EvaluationChecks(EventChecks):
    """An evaluation's events: the draw (recomputed from ``blobs/``) and its replacements, the
    members' sign-ins, score sheets and report responses (each signed with the member's
    certificate), the report the platform signed and every recording segment."""

    def __init__(self, path: Path, tmp: Path, deep: bool) -> None:
        super().__init__(path, tmp, deep)
        self.commitment: str | None = None
        self.entropy: dict[str, str] = {}
        self.draw_input: _DrawInput | None = None
        self.draw_result: DrawResult | None = None
        self.signin_certs: dict[str, str] = {}
        self.report_sha: str | None = None
        self.blobs_used: set[str] = set()
        self.draws_recomputed = 0
        self.segments_checked = 0

    def _blob(self, sha: str, zh: str, en: str) -> Path:
        """The archived file ``blobs/<sha>`` (its name is its content's hash: checked earlier)."""
        name = blob_member(sha)
        path = self.files.get(name)
        if path is None:
            raise Problem(f"存档缺少{zh} {name}", f"the archive lacks the {en} {name}")
        self.blobs_used.add(sha)
        return path

    def _check_draw_committed(self, event: EventRecord, where: str, at: datetime) -> None:
        if self.commitment is not None:
            raise Problem("抽取承诺公布了两次", "the draw's commitment was published twice")
        self.commitment = hex64_field(event.payload, "commitment")

    def _check_draw_entropy(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        role = typed_field(p, "role", str)
        value = typed_field(p, "value", str)
        require_host_or_supervisor(role)
        if not event.actor.startswith(f"{role}:"):
            raise Problem("随机数的提交者不是该角色", f"the entropy was not added by a {role}")
        if self.commitment is None:
            raise Problem(
                "服务器承诺公布之前就提交了随机数", "entropy added before the server's commitment"
            )
        if role in self.entropy:
            raise Problem(f"{role} 提交了两次随机数", f"the {role} added entropy twice")
        self.entropy[role] = value

    def _recomputed(
        self, draw_input: _DrawInput, claimed: dict[str, Any], *, fresh: bool
    ) -> DrawResult:
        """The recorded draw result ``claimed`` (of the draw itself, ``fresh``, or after a
        replacement), once it is recomputed from the archived input and found equal."""
        pool, sites, server_random, request = draw_input
        diffs = draw_differences(
            pool,
            sites,
            session_id=self.session_id,
            commitment=self.commitment,
            entropy=self.entropy,
            server_random=server_random,
            request=request,
            claimed=claimed,
        )
        if fresh and not diffs and claimed.get("replacements"):
            diffs.append("result.replacements: 抽取时不应有替换 / a fresh draw has no replacements")
        if diffs:
            more = f"（共 {len(diffs)} 处）" if len(diffs) > 1 else ""
            more_en = f" ({len(diffs)} differences)" if len(diffs) > 1 else ""
            raise Problem(
                f"抽取结果不能由存档中的输入复算{more}：{diffs[0]}",
                f"the draw does not recompute from the archived input{more_en}: {diffs[0]}",
            )
        return DrawResult.model_validate(claimed)

    def _check_draw_completed(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        server_random = typed_field(p, "server_random", str)
        request = typed_field(p, "request", dict)
        claimed = typed_field(p, "result", dict)
        sha = hex64_field(p, "pool_blob")
        if self.draw_input is not None:
            raise Problem("第二次抽取", "a second draw in one session")
        path = self._blob(sha, "抽取输入文件", "draw input")
        try:
            pool, sites = read_draw_input(path.read_bytes())
        except (ValueError, ValidationError) as exc:
            raise Problem(
                f"抽取输入文件 {blob_member(sha)} 格式错误",
                f"the draw input {blob_member(sha)} is malformed",
                exc,
            ) from None
        draw_input = (pool, sites, server_random, request)
        self.draw_result = self._recomputed(draw_input, claimed, fresh=True)
        self.draw_input = draw_input
        self.draws_recomputed += 1

    def _result(self) -> DrawResult:
        if self.draw_result is None:
            raise none_before("draw_completed")
        return self.draw_result

    def _check_committee_drawn(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        result = self._result()
        assert self.draw_input is not None
        if (
            p.get("seed") != result.seed
            or p.get("pool_sha256") != result.pool_sha256
            or p.get("server_random") != self.draw_input[2]
        ):
            raise Problem(
                "公布的种子、专家库哈希或服务器随机数与抽取结果不符",
                "the published seed, pool hash or server random differs from the draw",
            )

    def _check_room_assigned(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        drawn = {
            (d.room_id, d.site_id, d.role)
            for d in (self._result().lead, *self._result().secondary_sites)
        }
        if (p.get("room_id"), p.get("site_id"), p.get("role")) not in drawn:
            raise Problem("分配的评标室不是抽取结果中的", "the room assigned is not a drawn room")

    def _check_member_drawn(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        expert = typed_field(p, "expert_id", str)
        result = self._result()
        if p.get("kind", "expert") == "owner_rep":
            ok = p.get("room_id") == result.lead.room_id and p.get("site_id") == result.lead.site_id
        else:
            ok = any(
                (m.expert_id, m.category, m.site_id, m.room_id)
                == (expert, p.get("category"), p.get("site_id"), p.get("room_id"))
                for m in result.committee
            )
        if not ok:
            raise Problem(
                f"成员 {expert} 不是抽取结果中的成员（或评标室不符）",
                f"member {expert} is not in the drawn committee (or sits in another room)",
            )

    def _check_member_replaced(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        expert = typed_field(p, "expert_id", str)
        by = typed_field(p, "by", str)
        claimed = typed_field(p, "result", dict)
        before = self._result()
        assert self.draw_input is not None
        after = self._recomputed(self.draw_input, claimed, fresh=False)
        last = after.replacements[-1] if after.replacements else None
        new = next((m for m in after.committee if m.expert_id == by), None)
        if (
            len(after.replacements) != len(before.replacements) + 1
            or last is None
            or (last.declined_expert_id, last.replacement_expert_id) != (expert, by)
            or new is None
            or (new.category, new.site_id, new.room_id)
            != (p.get("category"), p.get("site_id"), p.get("room_id"))
        ):
            raise Problem(
                "替换记录与抽取结果中的替换不符",
                "the replacement differs from the one the draw result records",
            )
        self.draw_result = after
        self.draws_recomputed += 1

    def _check_member_signed_in(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        expert = typed_field(p, "expert_id", str)
        room = typed_field(p, "room_id", str)
        cert = hex64_field(p, "cert_sha256")
        nonce = typed_field(p, "nonce", str)
        if event.actor != f"room:{room}":
            raise Problem(
                "签到不是在该成员的评标室进行的", "the sign-in is not from the member's room"
            )
        if not typed_field(p, "signature", str):
            raise Problem("签到没有专家的签名", "the sign-in carries no signature of the expert")
        if self.server_id is None:
            raise Problem(
                f"{ARCHIVE_JSON} 未载明服务器标识（server_id），无法核对签到签名",
                f"{ARCHIVE_JSON} does not name the server (server_id): the sign-in's "
                "signature cannot be checked",
            )
        expected = sign_in_document(self.server_id, self.session_id, room, expert, nonce)
        doc = self._signed(where, p, "signature", expected, at, "login")
        if cert_sha256(doc.signer) != cert:
            raise Problem(
                f"签到签名的证书不是事件所记的证书（cert_sha256 {cert}）",
                f"the sign-in's signer is not the certificate the event records (cert_sha256 "
                f"{cert})",
            )
        serial = doc.signer.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
        if not serial or serial[0].value != expert:
            raise Problem(
                f"签到签名的证书不属于成员 {expert}（subject serialNumber）",
                f"the sign-in's certificate is not member {expert}'s (subject serialNumber)",
            )
        self.signin_certs[expert] = cert

    def _member_signer(self, expert: str, doc: SignedDocument) -> None:
        expected = self.signin_certs.get(expert)
        if expected is None:
            raise Problem(f"成员 {expert} 此前没有签到", f"member {expert} had not signed in")
        if cert_sha256(doc.signer) != expected:
            raise Problem(
                f"签名证书不是成员 {expert} 签到时使用的证书（cert_sha256 {expected}）",
                f"the signer's certificate is not the one member {expert} signed in with "
                f"(cert_sha256 {expected})",
            )

    def _check_sheet_content(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        expert = typed_field(p, "expert_id", str)
        stage = typed_field(p, "stage", str)
        content = typed_field(p, "content", dict)
        digest = hex64_field(p, "sha256")
        if event.actor != f"expert:{expert}":
            raise Problem("评审表的提交者不是该专家", f"the sheet was not submitted by {expert}")
        if sha256_hex(canonical_json(content)) != digest:
            raise Problem("评审表内容与 sha256 不符", "the sheet's content does not match sha256")
        expected = sheet_document(self.session_id, expert, stage, content)
        self._member_signer(expert, self._signed(where, p, "signature", expected, at))

    def _check_report_generated(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        digest = hex64_field(p, "sha256")
        path = self._blob(digest, "评标报告", "evaluation report")
        if path.stat().st_size > MAX_IN_MEMORY:
            raise Problem("评标报告过大", "the report is too large")
        raw = path.read_bytes()
        report = parse_json(raw)
        if not isinstance(report, dict) or canonical_json(report) != raw:
            raise Problem("评标报告不是规范 JSON 对象", "the report is not a canonical JSON object")
        if report.get("session_id") != self.session_id:
            raise Problem("评标报告不属于本会话", "the report is not this session's")
        head = report.get("log_head")
        head = head if isinstance(head, dict) else {}
        seq = head.get("seq")
        earlier = self._earlier(seq, event) if isinstance(seq, int) else None
        if earlier is None or earlier.hash != head.get("hash"):
            raise Problem(
                "评标报告所载的事件日志链头不是此前的事件",
                "the report's log head is not an earlier event of this log",
            )
        drawn = report.get("draw")
        if self.draw_result is not None and (
            not isinstance(drawn, dict)
            or drawn.get("seed") != self.draw_result.seed
            or drawn.get("pool_sha256") != self.draw_result.pool_sha256
        ):
            raise Problem(
                "评标报告所载的抽取种子或专家库哈希与抽取记录不符",
                "the report's draw seed or pool hash differs from the draw",
            )
        self._server_signer(self._signed(where, p, "signature", raw, at))
        self.report_sha = digest

    def _check_report_signed(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        expert = typed_field(p, "expert_id", str)
        agree = typed_field(p, "agree", bool)
        reason = typed_field(p, "reason", str)
        if event.actor != f"expert:{expert}":
            raise Problem("签字人不是该成员", f"the response is not by {expert}")
        if self.report_sha is None:
            raise none_before("report_generated")
        if p.get("signature") is None:
            # 实施条例 art. 53: a refusal without a reason counts as agreement.
            deemed = typed_field(p, "deemed", bool)
            if p.get("refused") is not True or agree != (not reason) or deemed != (not reason):
                raise Problem(
                    "拒签记录不一致：无理由拒签应视为同意",
                    "inconsistent refusal: a refusal without a reason counts as agreement",
                )
            return
        if not agree and not reason.strip():
            raise Problem("不同意须书面说明理由", "a disagreement needs a written reason")
        doc = self._signed(where, p, "signature", None, at)
        expected = report_document(self.session_id, expert, self.report_sha, agree, reason)
        if doc.content != expected and not self._same_but_reason_spacing(doc.content, expert, p):
            raise Problem(
                "签名所签内容不是本评标报告的签字文档",
                "the signature does not cover this member's response to the last report",
            )
        self._member_signer(expert, doc)

    def _same_but_reason_spacing(self, content: bytes, expert: str, p: Any) -> bool:
        """The log keeps a reason with its surrounding spaces trimmed; the member signed it as
        typed. The signed document is then the same but for that whitespace."""
        try:
            signed = parse_json(content)
        except ValueError:
            return False
        typed = signed.get("reason") if isinstance(signed, dict) else None
        return (
            isinstance(typed, str)
            and typed.strip() == p["reason"]
            and content
            == report_document(self.session_id, expert, str(self.report_sha), p["agree"], typed)
        )

    def _check_media_segment(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        room = typed_field(p, "room_id", str)
        index = typed_field(p, "index", int)
        digest = hex64_field(p, "sha256")
        size = typed_field(p, "size", int)
        for key in ("started_at", "ended_at"):
            parse_iso(typed_field(p, key, str))
        error = p.get("error")
        if error is not None and not isinstance(error, str):
            raise Problem("error 须为文本或 null", "error must be a string or null")
        if p.get("backend", "builtin") not in ("builtin", "janus"):
            raise Problem("backend 须为 builtin 或 janus", "backend must be builtin or janus")
        if event.actor != "server:server":
            raise Problem(
                "录像片段不是由服务器记录的", "the segment was not recorded by the server"
            )
        zh, en = f"录像片段 {room} #{index}", f"recording segment {room} #{index}"
        name = blob_member(digest)
        if name not in self.files:
            if error is None:
                raise Problem(f"存档缺少{zh}（{name}）", f"the archive lacks the {en} ({name})")
            return  # a segment that could not be recorded has no file
        if self.actual_sha[name] != digest or self.sizes[name] != size:
            raise Problem(
                f"{zh}（{name}）的哈希或大小与事件不符",
                f"the {en} ({name}) differs from the event's hash or size",
            )
        self.blobs_used.add(digest)
        self.segments_checked += 1
        if self.deep:
            try:
                _demux(self.files[name])
            except Exception as exc:
                raise Problem(
                    f"{zh}（{name}）不是可读的 WebM/Matroska 录像",
                    f"the {en} ({name}) is not a readable WebM/Matroska recording",
                    exc,
                ) from None


def _demux(path: Path) -> None:
    """Read every packet of a recording (``--deep``): a WebM/Matroska file with media in it."""
    import av  # PyAV (aiortc's dependency): imported only for deep checks

    with av.open(str(path), mode="r") as container:
        if not {"matroska", "webm"} & set(container.format.name.split(",")):
            raise ValueError(f"container {container.format.name}, not WebM/Matroska")
        if not container.streams:
            raise ValueError("no streams")
        packets = sum(1 for packet in container.demux() if packet.size)
    if packets == 0:
        raise ValueError("no media packets")
