"""Zip archives read in memory, never extracted, under the archive limits.

Every entry's name, kind and declared size are checked against ``Limits.max_archive_*``
from the central directory before one byte is decompressed, and decompression counts what
it produces (a declared size that lies is cut off and refused). A bomb is a 413 after
reading the directory.
"""

from __future__ import annotations

import io
import posixpath
import stat
import zipfile
import zlib

from service.config import Limits
from service.errors import ErrorCode, InvalidInput, LimitExceeded, UnsupportedMediaType
from service.limits import Deadline
from service.ops.vision.imageio import IMAGE_EXTENSIONS

DIRECTORY_RECORD = b"PK\x01\x02"
"""The signature of a zip's central directory record, one per entry."""
CHUNK_BYTES = 1 << 20
"""Decompressed bytes read at a time, so that an entry longer than declared is stopped
within a chunk of its limit."""
_ENCRYPTED = 0x1
"""The general-purpose flag bit of an encrypted entry."""


def _unsafe(name: str, reason: str) -> InvalidInput:
    return InvalidInput(
        f"archive entry {name[:200]!r} refused: {reason}",
        code=ErrorCode.UNSAFE_ARCHIVE_ENTRY,
        details={"entry": name[:200], "reason": reason},
    )


def entry_path(info: zipfile.ZipInfo) -> str:
    """The entry's name as a safe relative path, or a 422 ``unsafe_archive_entry``: a NUL,
    an absolute path, a ``..`` component, a link or other special file, or encryption."""
    name = info.filename
    if "\x00" in name:
        raise _unsafe(name, "a NUL character in the name")
    path = name.replace("\\", "/")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise _unsafe(name, "an absolute path")
    if ".." in path.split("/"):
        raise _unsafe(name, "a '..' component (path traversal)")
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise _unsafe(name, "a symbolic link")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _unsafe(name, "not a regular file")
    if info.flag_bits & _ENCRYPTED:
        raise _unsafe(name, "encrypted")
    return posixpath.normpath(path)


def read_archive(
    data: bytes, limits: Limits, deadline: Deadline | None = None
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The picture entries of a zip ``(path, bytes)`` in name order, and the names skipped
    (not a picture by extension, hidden, or outside a class folder).

    Before decompressing anything: more than ``max_archive_entries`` entries, an entry
    declared larger than ``max_archive_entry_bytes`` or a total declared over
    ``max_archive_bytes`` is a 413; ``..``, absolute names, links and encrypted entries are
    a 422. While decompressing, an entry that yields more than it declared is a 413 (and a
    corrupt one a 422). Not a zip at all is a 415 ``unsupported_archive``.
    """
    # Before zipfile builds an object per directory record: a 64 MiB body of tiny entries
    # holds a million of them. Every record starts with this signature, so the count is an
    # upper bound of the entries (it can only over-count, by chance bytes in file data).
    records = data.count(DIRECTORY_RECORD)
    if records > limits.max_archive_entries:
        raise LimitExceeded(
            "max_archive_entries", limits.max_archive_entries, records, "the archive's entries"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise UnsupportedMediaType(
            f"archive: not a zip archive ({exc})",
            code=ErrorCode.UNSUPPORTED_ARCHIVE,
            details={"expected": "a zip archive in ImageFolder layout: class/file.png"},
        ) from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_archive_entries:
            raise LimitExceeded(
                "max_archive_entries",
                limits.max_archive_entries,
                len(infos),
                "the archive's entries",
            )
        total = 0
        wanted: list[tuple[str, zipfile.ZipInfo]] = []
        skipped: list[str] = []
        for info in infos:
            path = entry_path(info)
            if info.is_dir() or path.endswith("/"):
                continue
            if info.file_size > limits.max_archive_entry_bytes:
                raise LimitExceeded(
                    "max_archive_entry_bytes",
                    limits.max_archive_entry_bytes,
                    info.file_size,
                    f"archive entry {path[:200]!r} uncompressed",
                )
            total += info.file_size
            if total > limits.max_archive_bytes:
                raise LimitExceeded(
                    "max_archive_bytes",
                    limits.max_archive_bytes,
                    total,
                    "the archive's entries uncompressed",
                )
            parts = path.split("/")
            hidden = any(part.startswith(".") or part == "__MACOSX" for part in parts)
            if hidden or not path.lower().endswith(IMAGE_EXTENSIONS) or len(parts) < 2:
                skipped.append(path)
                continue
            wanted.append((path, info))
        entries = []
        for path, info in sorted(wanted, key=lambda item: item[0]):
            if deadline is not None:
                deadline.check()
            allowed = min(info.file_size, limits.max_archive_entry_bytes)
            entries.append((path, _read_entry(archive, info, path, allowed)))
    return entries, skipped


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, allowed: int) -> bytes:
    """The entry decompressed, refused (413) as soon as it yields more than ``allowed``."""
    chunks = []
    produced = 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(CHUNK_BYTES):
                produced += len(chunk)
                if produced > allowed:
                    raise LimitExceeded(
                        "max_archive_entry_bytes",
                        allowed,
                        produced,
                        f"archive entry {path[:200]!r} (more than it declared)",
                    )
                chunks.append(chunk)
    except LimitExceeded:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,
        OSError,
        EOFError,
        NotImplementedError,
        ValueError,
    ) as exc:
        raise InvalidInput(
            f"archive entry {path[:200]!r} cannot be read: {exc}",
            code=ErrorCode.CORRUPT_ARCHIVE,
            details={"entry": path[:200]},
        ) from exc
    return b"".join(chunks)
