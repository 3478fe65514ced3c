"""Content-addressed files on local disk: bid envelopes, documents, recordings, by SHA-256.

An upload is held apart (staged, ``tmp/<sha>.<id>.staged``) until the caller has recorded it:
``receive`` stages, ``keep`` places the file at its address once the event is committed, and
``discard`` removes it when the command was refused. What a crash or a lost database leaves
staged is settled by ``collect``: placed when an event names it, else removed after a grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from server.store.errors import NotFound, StoreError

_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
_STAGED = re.compile(r"([0-9a-f]{64})\.[0-9a-f]{32}\.staged")
_PARTIAL = re.compile(r"[0-9a-f]{32}")

STAGED_GRACE_SECONDS = 600.0
"""Real seconds a staged upload that no event names is kept (its command may still commit)."""
PARTIAL_GRACE_SECONDS = 24 * 3600.0
"""Real seconds an upload still being received may last before its temp file counts as lost."""


class BlobTooLarge(StoreError):
    code = "UPLOAD_TOO_LARGE"
    zh = "上传的文件超过大小上限"
    en = "the upload is larger than allowed"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"limit {limit} bytes")


class BadBlobId(StoreError, ValueError):
    code = "BAD_BLOB_ID"
    zh = "文件标识无效（应为 64 位小写十六进制 SHA-256）"
    en = "invalid file id (expected 64 lowercase hex digits of SHA-256)"


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int
    path: Path


class _Intake:
    """One blob being written: a temp file under ``root/tmp`` hashed as it grows."""

    def __init__(self, root: Path, limit: int | None) -> None:
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        self.root = root
        self.limit = limit
        self.temp = root / "tmp" / uuid.uuid4().hex
        self.file: BinaryIO = open(self.temp, "xb")  # noqa: SIM115 - closed in commit/abort
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            raise BlobTooLarge(self.limit)
        self.hash.update(chunk)
        self.file.write(chunk)

    def commit(self, check: Callable[[Path], None] | None = None) -> Blob:
        """Make the bytes durable, let ``check`` inspect them, then move them to their address.

        A ``check`` that raises leaves nothing behind: the bytes never reach the store.
        """
        staged = self.stage(check)
        return _place(self.root, staged.sha256, staged.path)

    def stage(self, check: Callable[[Path], None] | None = None) -> Blob:
        """Make the bytes durable and let ``check`` inspect them; the file stays in ``tmp``,
        named by its hash, until it is placed (``_place``) or discarded."""
        try:
            self.file.flush()
            if check is not None:
                check(self.temp)
            os.fsync(self.file.fileno())
            self.file.close()
            sha = self.hash.hexdigest()
            staged = self.temp.with_name(f"{sha}.{self.temp.name}.staged")
            os.replace(self.temp, staged)
            return Blob(sha, self.size, staged)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        self.file.close()
        self.temp.unlink(missing_ok=True)


def _place(root: Path, sha: str, staged: Path) -> Blob:
    """Move a staged file to its address (idempotent: the address may be taken already, by the
    same bytes, and the staged file may have been placed by ``collect`` meanwhile)."""
    target = root / sha[:2] / sha
    if target.exists():
        staged.unlink(missing_ok=True)
    else:
        target.parent.mkdir(exist_ok=True)
        try:
            os.replace(staged, target)
        except FileNotFoundError:
            if not target.exists():
                raise
        _fsync_dir(target.parent)
    return Blob(sha, target.stat().st_size, target)


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once its directory is synced (POSIX); Windows cannot open one.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _ingest(root: Path, chunks: Iterable[bytes]) -> Blob:
    intake = _Intake(root, None)
    try:
        for chunk in chunks:
            intake.write(chunk)
    except BaseException:
        intake.abort()
        raise
    return intake.commit()


def _read_chunks(path: Path) -> Iterable[bytes]:
    with open(path, "rb") as source:
        while chunk := source.read(_CHUNK):
            yield chunk


class BlobStore:
    """Files named by their SHA-256 at ``root/<sha[:2]>/<sha>``; written once, never changed."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def receive(
        self,
        chunks: AsyncIterator[bytes],
        *,
        limit: int,
        check: Callable[[Path], None] | None = None,
    ) -> Blob:
        """Stream an upload in and stage it; BlobTooLarge as soon as it passes ``limit`` bytes.

        ``check`` (run in a worker thread on the complete temp file) may refuse the content.
        Nothing is left behind on any failure, cancellation included. The answer is staged
        (its ``path`` is in ``tmp``): the caller records it, then ``keep``s it, or ``discard``s
        it when the record refused it.
        """
        intake = _Intake(self.root, limit)
        try:
            async for chunk in chunks:
                intake.write(chunk)
        except BaseException:
            intake.abort()
            raise
        # Shielded: once every byte is in, a cancelled caller must not tear the file away from
        # the thread that is syncing it; stage cleans up after itself if it fails.
        return await asyncio.shield(asyncio.to_thread(intake.stage, check))

    async def keep(self, staged: Blob) -> Blob:
        """Place a staged upload at its address: its event is committed."""
        return await asyncio.shield(
            asyncio.to_thread(_place, self.root, staged.sha256, staged.path)
        )

    async def discard(self, staged: Blob) -> None:
        """Remove a staged upload whose command was refused (it was never recorded)."""
        staged.path.unlink(missing_ok=True)

    async def collect(
        self, referenced: Callable[[str], Awaitable[bool]], *, now: float | None = None
    ) -> dict[str, int]:
        """Settle what uploads left in ``tmp``: a staged file that an event names is placed (its
        process stopped between the record and the placing); one that no event names is
        removed once older than ``STAGED_GRACE_SECONDS`` (its command may still be committing);
        a partial upload's temp file once older than ``PARTIAL_GRACE_SECONDS``."""
        now = time.time() if now is None else now
        done = {"placed": 0, "removed": 0, "partial": 0}
        tmp = self.root / "tmp"
        if not tmp.is_dir():
            return done
        for path in sorted(tmp.iterdir()):
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:  # placed or discarded meanwhile
                continue
            staged = _STAGED.fullmatch(path.name)
            if staged is not None:
                sha = staged.group(1)
                if await referenced(sha):
                    await asyncio.to_thread(_place, self.root, sha, path)
                    done["placed"] += 1
                elif age > STAGED_GRACE_SECONDS:
                    path.unlink(missing_ok=True)
                    done["removed"] += 1
            elif _PARTIAL.fullmatch(path.name) and age > PARTIAL_GRACE_SECONDS:
                path.unlink(missing_ok=True)
                done["partial"] += 1
        return done

    async def put_file(self, path: Path) -> Blob:
        """Copy a local file in."""
        return await asyncio.to_thread(_ingest, self.root, _read_chunks(path))

    async def put_bytes(self, data: bytes) -> Blob:
        return await asyncio.to_thread(_ingest, self.root, [data])

    def _location(self, sha: str) -> Path:
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise BadBlobId(repr(sha)[:80])
        return self.root / sha[:2] / sha

    def has(self, sha: str) -> bool:
        return self._location(sha).is_file()

    def path(self, sha: str) -> Path:
        """Where blob ``sha`` is; NotFound if it is not stored."""
        location = self._location(sha)
        if not location.is_file():
            raise NotFound(f"blob {sha}")
        return location

    def open(self, sha: str) -> BinaryIO:
        """The blob for reading (binary); the caller closes it."""
        return open(self.path(sha), "rb")
