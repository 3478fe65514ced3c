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


_refusal = refusal


NotAllowedInState = _refusal(
    "NotAllowedInState",
    "NOT_ALLOWED_IN_STATE",
    409,
    "当前阶段不允许此操作",
    "this is not allowed at the current stage of the session",
)
NotPermitted = _refusal(
    "NotPermitted", "NOT_PERMITTED", 403, "您的角色无权执行此操作", "your role may not do this"
)
DeadlinePassed = _refusal(
    "DeadlinePassed",
    "DEADLINE_PASSED",
    409,
    "已过投标截止时间，不再接受上传、替换或撤回",
    "the bid deadline has passed: uploads, replacements and withdrawals are closed",
)
BeforeDeadline = _refusal(
    "BeforeDeadline",
    "BEFORE_DEADLINE",
    409,
    "投标截止前不能开标或解密",
    "nothing can be opened or decrypted before the bid deadline",
)
SupervisorAbsent = _refusal(
    "SupervisorAbsent",
    "SUPERVISOR_ABSENT",
    409,
    "监管人员未在线签到，不能开始开标",
    "no supervisor is signed in: the opening cannot start",
)
NoBid = _refusal(
    "NoBid", "NO_BID", 404, "未找到您的投标文件", "no bid file of yours is on record for this lot"
)
WindowClosed = _refusal(
    "WindowClosed",
    "WINDOW_CLOSED",
    409,
    "时间窗口已关闭",
    "the time window has closed",
)
ReasonRequired = _refusal(
    "ReasonRequired", "REASON_REQUIRED", 422, "必须填写理由", "a reason is required"
)
AlreadyDone = _refusal(
    "AlreadyDone", "ALREADY_DONE", 409, "该操作已完成", "this has already been done"
)
UnknownObjection = _refusal(
    "UnknownObjection", "OBJECTION_UNKNOWN", 404, "未找到该异议", "no such objection"
)
ObjectionsPending = _refusal(
    "ObjectionsPending",
    "OBJECTIONS_PENDING",
    409,
    "仍有未答复的异议",
    "some objections have not been answered yet",
)
TableMismatch = _refusal(
    "TableMismatch",
    "TABLE_MISMATCH",
    409,
    "确认的开标记录表与当前公布的不一致，请刷新后重新确认",
    "the table you confirmed is not the one published; reload and confirm again",
)
BackupUnavailable = _refusal(
    "BackupUnavailable",
    "BACKUP_UNAVAILABLE",
    409,
    "备用解密不可用",
    "backup decryption is not available",
)
NotACustodian = _refusal(
    "NotACustodian",
    "NOT_A_CUSTODIAN",
    403,
    "您不是本项目备用密钥的保管人",
    "you are not a custodian of this project's backup key",
)
TimetableInvalid = _refusal(
    "TimetableInvalid", "TIMETABLE_INVALID", 422, "时间安排无效", "the timetable is not valid"
)
