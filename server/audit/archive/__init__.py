"""A session's archive (DESIGN.md section 8): a signed ZIP (layout: ``format``), verified offline."""

from server.audit.archive.draw import draw_differences, read_draw_input
from server.audit.archive.format import (
    BLOBS,
    ENVELOPES,
    EVENTS,
    KEYS,
    MAX_IN_MEMORY,
    ArchiveContent,
    ArchiveExportFailed,
    ArchiveInvalid,
    ArchiveReport,
    blob_references,
)
from server.audit.archive.verify import verify_archive
from server.audit.archive.writer import write_archive

__all__ = [
    "BLOBS",
    "ENVELOPES",
    "EVENTS",
    "KEYS",
    "MAX_IN_MEMORY",
    "ArchiveContent",
    "ArchiveExportFailed",
    "ArchiveInvalid",
    "ArchiveReport",
    "blob_references",
    "draw_differences",
    "read_draw_input",
    "verify_archive",
    "write_archive",
]
