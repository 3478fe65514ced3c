"""Typed refusals: every "no" the domain says has a stable code and a message in zh and en."""

from __future__ import annotations


class Refusal(Exception):
    """A command the rules do not allow. ``status`` is the HTTP status the API answers with."""

    code = "REFUSED"
    status = 409
    zh = "操作被拒绝"
    en = "the operation was refused"

    def __init__(self, detail: str = "", *, zh: str | None = None, en: str | None = None) -> None:
        self.detail = detail
        if zh is not None:
            self.zh = zh
        if en is not None:
            self.en = en
        super().__init__(self.line())

    def line(self) -> str:
        tail = f" ({self.detail})" if self.detail else ""
        return f"{self.code}: {self.zh} / {self.en}{tail}"


def refusal(
    name: str, code: str, status: int, zh: str, en: str, base: type[Refusal] = Refusal
) -> type[Refusal]:
    """A refusal class with its stable code, HTTP status and messages (the one factory)."""
    return type(name, (base,), {"code": code, "status": status, "zh": zh, "en": en})


class NotAllowedInState(Refusal):
    code = "NOT_ALLOWED_IN_STATE"
    status = 409
    zh = "当前阶段不允许此操作"
    en = "this is not allowed at the current stage of the session"


class NotPermitted(Refusal):
    code = "NOT_PERMITTED"
    status = 403
    zh = "您的角色无权执行此操作"
    en = "your role may not do this"


class DeadlinePassed(Refusal):
    code = "DEADLINE_PASSED"
    status = 409
    zh = "已过投标截止时间，不再接受上传、替换或撤回"
    en = "the bid deadline has passed: uploads, replacements and withdrawals are closed"


class BeforeDeadline(Refusal):
    code = "BEFORE_DEADLINE"
    status = 409
    zh = "投标截止前不能开标或解密"
    en = "nothing can be opened or decrypted before the bid deadline"


class SupervisorAbsent(Refusal):
    code = "SUPERVISOR_ABSENT"
    status = 409
    zh = "监管人员未在线签到，不能开始开标"
    en = "no supervisor is signed in: the opening cannot start"


class NoBid(Refusal):
    code = "NO_BID"
    status = 404
    zh = "未找到您的投标文件"
    en = "no bid file of yours is on record for this lot"


class TooManyVersions(Refusal):
    code = "TOO_MANY_VERSIONS"
    status = 409
    zh = "本标段投标文件的上传次数已达上限，不能再替换；已上传的最新文件仍然有效"
    en = (
        "you have uploaded as many versions of your bid for this lot as allowed: "
        "the latest one you uploaded still stands"
    )


class OutsideRemit(Refusal):
    code = "OUTSIDE_REMIT"
    status = 403
    zh = "该项目不在您的监管范围内：项目的监管主体（地区、行业）与您的不同"
    en = "this project is outside your remit: its supervising body (region and industry) is not yours"


class ObjectionsTooFrequent(Refusal):
    code = "OBJECTIONS_TOO_FREQUENT"
    status = 429
    zh = "异议提交过于频繁，请稍后再提出"
    en = "objections are being raised too often: raise the next one a little later"


class TooManyObjections(Refusal):
    code = "TOO_MANY_OBJECTIONS"
    status = 429
    zh = "您已有异议尚未答复，请等待主持人答复后再提出新的异议"
    en = "your objections are still awaiting the host's answer: raise a new one once they are answered"


class WindowClosed(Refusal):
    code = "WINDOW_CLOSED"
    status = 409
    zh = "时间窗口已关闭"
    en = "the time window has closed"


class ReasonRequired(Refusal):
    code = "REASON_REQUIRED"
    status = 422
    zh = "必须填写理由"
    en = "a reason is required"


class AlreadyDone(Refusal):
    code = "ALREADY_DONE"
    status = 409
    zh = "该操作已完成"
    en = "this has already been done"


class UnknownObjection(Refusal):
    code = "OBJECTION_UNKNOWN"
    status = 404
    zh = "未找到该异议"
    en = "no such objection"


class ObjectionsPending(Refusal):
    code = "OBJECTIONS_PENDING"
    status = 409
    zh = "仍有未答复的异议"
    en = "some objections have not been answered yet"


class TableMismatch(Refusal):
    code = "TABLE_MISMATCH"
    status = 409
    zh = "确认的开标记录表与当前公布的不一致，请刷新后重新确认"
    en = "the table you confirmed is not the one published; reload and confirm again"


class BackupUnavailable(Refusal):
    code = "BACKUP_UNAVAILABLE"
    status = 409
    zh = "备用解密不可用"
    en = "backup decryption is not available"


class NotACustodian(Refusal):
    code = "NOT_A_CUSTODIAN"
    status = 403
    zh = "您不是本项目备用密钥的保管人"
    en = "you are not a custodian of this project's backup key"


class TimetableInvalid(Refusal):
    code = "TIMETABLE_INVALID"
    status = 422
    zh = "时间安排无效"
    en = "the timetable is not valid"
