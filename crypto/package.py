"""The bid package (投标文件包): a ZIP with ``summary.json``, the documents and ``manifest.json``.

Building it generates the manifest (each file's SHA-256) and validates the summary against
``schemas.bid.BidSummary``; reading it checks names, manifest and summary, and extracts safely.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from pydantic import ValidationError

from crypto.errors import ManifestMismatch, PackageError, SummaryInvalid
from schemas.bid import BidSummary, Manifest, ManifestEntry

SUMMARY_NAME = "summary.json"
MANIFEST_NAME = "manifest.json"
MAX_SUMMARY_BYTES = 1024 * 1024
MAX_ENTRIES = 10_000
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_PACKAGE_BYTES = 16 * 1024**3
"""Largest total uncompressed size accepted when opening (a guard against ZIP bombs)."""
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)
_COPY = 1024 * 1024


@dataclass(frozen=True)
class PackageInfo:
    summary: BidSummary
    manifest: Manifest


def parse_summary(data: bytes) -> BidSummary:
    """Validate ``summary.json`` bytes; raise ``SummaryInvalid`` with the first problem."""
    if len(data) > MAX_SUMMARY_BYTES:
        raise SummaryInvalid("summary.json is larger than 1 MiB")
    try:
        return BidSummary.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise SummaryInvalid(f"{where}: {first['msg']}") from None


def check_member_name(name: str) -> str:
    """A package path must be relative, inside the package, and portable."""
    p = PurePosixPath(name)
    if (
        not name
        or p.as_posix() != name
        or "\\" in name
        or name.startswith("/")
        or ":" in p.parts[0]
        or any(part in ("", ".", "..") for part in p.parts)
        or "\x00" in name
    ):
        raise PackageError(f"unsafe file name in package: {name!r}")
    return p.as_posix()


def _source_files(src: Path) -> Iterator[tuple[str, IO[bytes]]]:
    if src.is_dir():
        for path in sorted(src.rglob("*")):
            if path.is_symlink():
                raise PackageError(f"symbolic links are not packaged: {path.relative_to(src)}")
            if path.is_file():
                rel = path.relative_to(src).as_posix()
                if rel != MANIFEST_NAME:
                    with path.open("rb") as fh:
                        yield rel, fh
        return
    try:
        zf = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageError(f"{src}: not a folder or ZIP ({exc})") from None
    with zf:
        for zi in zf.infolist():
            if zi.is_dir() or zi.filename == MANIFEST_NAME:
                continue
            with zf.open(zi) as fh:
                yield zi.filename, fh


SealingMachine = str | Callable[[BidSummary], str | None] | None
"""A fingerprint (``crypto.fingerprint``), or how to make one from the bid's summary (its lot)."""


def build_package(
    src: Path, out: BinaryIO, *, sealing_machine: SealingMachine = None
) -> PackageInfo:
    """Write the package ZIP for a folder or ZIP ``src`` into ``out``, adding the manifest
    (with the sealing machine's fingerprint when one is given)."""
    if not src.exists():
        raise PackageError(f"{src}: no such folder or file")
    entries: list[ManifestEntry] = []
    summary: BidSummary | None = None
    seen: set[str] = set()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as zout:
        for name, fh in _source_files(src):
            name = check_member_name(name)
            if name in seen:
                raise PackageError(f"duplicate file in package: {name}")
            seen.add(name)
            if len(seen) > MAX_ENTRIES:
                raise PackageError(f"more than {MAX_ENTRIES} files")
            h = hashlib.sha256()
            size = 0
            head = b""
            zi = zipfile.ZipInfo(name, _FIXED_TIME)
            with zout.open(zi, "w", force_zip64=True) as dst:
                while chunk := fh.read(_COPY):
                    h.update(chunk)
                    size += len(chunk)
                    if name == SUMMARY_NAME and len(head) <= MAX_SUMMARY_BYTES:
                        head += chunk
                    dst.write(chunk)
            if name == SUMMARY_NAME:
                summary = parse_summary(head)
            entries.append(ManifestEntry(path=name, size=size, sha256=h.hexdigest()))
        if summary is None:
            raise SummaryInvalid("the package has no summary.json at its top level")
        machine = sealing_machine(summary) if callable(sealing_machine) else sealing_machine
        manifest = Manifest(files=entries, sealing_machine=machine)
        zout.writestr(zipfile.ZipInfo(MANIFEST_NAME, _FIXED_TIME), _manifest_bytes(manifest))
    return PackageInfo(summary, manifest)


def _manifest_bytes(manifest: Manifest) -> bytes:
    # Left out when absent: a package sealed without a fingerprint is byte for byte as before.
    return json.dumps(manifest.model_dump(exclude_none=True), ensure_ascii=False, indent=1).encode()


def verify_package(path: Path) -> PackageInfo:
    """Check a package ZIP: safe names, a manifest matching every file, a valid summary."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageError(f"the signed content is not a ZIP package ({exc})") from None
    with zf:
        infos = [zi for zi in zf.infolist() if not zi.is_dir()]
        if len(infos) > MAX_ENTRIES + 1:
            raise PackageError(f"more than {MAX_ENTRIES} files")
        if sum(zi.file_size for zi in infos) > MAX_PACKAGE_BYTES:
            raise PackageError(f"the package unpacks to more than {MAX_PACKAGE_BYTES} bytes")
        names = [check_member_name(zi.filename) for zi in infos]
        if len(set(names)) != len(names):
            raise PackageError("duplicate file names in package")
        folders = {str(parent) for n in names for parent in PurePosixPath(n).parents}
        if clash := folders.intersection(names):
            raise PackageError(f"a name is both a file and a folder: {sorted(clash)[0]}")
        if MANIFEST_NAME not in names:
            raise ManifestMismatch("manifest.json is missing")
        if SUMMARY_NAME not in names:
            raise SummaryInvalid("the package has no summary.json")
        try:
            if zf.getinfo(MANIFEST_NAME).file_size > MAX_MANIFEST_BYTES:
                raise ManifestMismatch("manifest.json is larger than 16 MiB")
            manifest = Manifest.model_validate_json(zf.read(MANIFEST_NAME))
            listed = {e.path: e for e in manifest.files}
            if set(listed) != set(names) - {MANIFEST_NAME} or len(listed) != len(manifest.files):
                raise ManifestMismatch("the manifest does not list exactly the package's files")
            for zi in infos:
                if zi.filename == MANIFEST_NAME:
                    continue
                entry = listed[zi.filename]
                h = hashlib.sha256()
                size = 0
                with zf.open(zi) as fh:
                    while chunk := fh.read(_COPY):
                        h.update(chunk)
                        size += len(chunk)
                if size != entry.size or h.hexdigest() != entry.sha256:
                    raise ManifestMismatch(f"{zi.filename}: content differs from the manifest")
            with zf.open(SUMMARY_NAME) as fh:
                summary = parse_summary(fh.read(MAX_SUMMARY_BYTES + 1))
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"]
            raise ManifestMismatch(f"manifest.json is not valid: {msg}") from None
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise PackageError(f"damaged ZIP: {exc}") from None
    return PackageInfo(summary, manifest)


def extract_package(path: Path, dest: Path) -> None:
    """Extract a verified package into a new folder ``dest``."""
    try:
        _extract(path, dest)
    except OSError as exc:
        raise PackageError(f"cannot extract {exc.filename or ''}: {exc.strerror or exc}") from None


def _extract(path: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=False)
    with zipfile.ZipFile(path) as zf:
        for zi in zf.infolist():
            if zi.is_dir():
                continue
            target = dest / check_member_name(zi.filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(zi) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, _COPY)
