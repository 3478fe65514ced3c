"""The store's refusals (the database's and the blob files'): each with a stable code."""

from __future__ import annotations

from crypto.errors import BidBridgeError


class StoreError(BidBridgeError):
    code = "STORE_ERROR"
    zh = "数据存储出错"
    en = "storage error"


class AlreadyExists(StoreError):
    code = "ALREADY_EXISTS"
    zh = "记录已存在"
    en = "the record already exists"


class NotFound(StoreError):
    code = "NOT_FOUND"
    zh = "记录不存在"
    en = "no such record"


class VersionConflict(StoreError):
    """Another command changed the session first; reload and decide again."""

    code = "VERSION_CONFLICT"
    zh = "数据已被其他操作更新，请刷新后重试"
    en = "the session was changed by another operation; reload and retry"

    def __init__(self, session_id: str, expected: int, actual: int | None) -> None:
        self.session_id = session_id
        self.expected = expected
        self.actual = actual
        super().__init__(f"session {session_id}: expected version {expected}, found {actual}")


class StoreUnavailable(StoreError):
    code = "STORE_UNAVAILABLE"
    zh = "数据库暂时无法访问，操作未执行，请稍后重试"
    en = "the database is unreachable; nothing was changed, please retry later"
