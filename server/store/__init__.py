"""The persistence layer: database (SQLite or PostgreSQL) and content-addressed blob files."""

from server.store.blobs import BadBlobId, Blob, BlobStore, BlobTooLarge
from server.store.db import (
    AccountRow,
    BindingEventRow,
    BindingRow,
    CompanyRow,
    LotRow,
    ProjectRow,
    RoomInfo,
    SiteInfo,
    Store,
    account_id,
    open_store,
    pem_sha256,
)
from server.store.errors import (
    AlreadyExists,
    NotFound,
    StoreError,
    StoreUnavailable,
    VersionConflict,
)
from server.store.log import SessionRow

__all__ = [
    "AccountRow",
    "AlreadyExists",
    "BadBlobId",
    "BindingEventRow",
    "BindingRow",
    "Blob",
    "BlobStore",
    "BlobTooLarge",
    "CompanyRow",
    "LotRow",
    "NotFound",
    "ProjectRow",
    "RoomInfo",
    "SessionRow",
    "SiteInfo",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "VersionConflict",
    "account_id",
    "open_store",
    "pem_sha256",
]
