"""The zip reader: picture entries in name order, what it skips, and every unsafe or
oversized archive refused from its directory, before anything is decompressed."""

from __future__ import annotations

import io
import stat
import struct
import time
import zipfile
from collections.abc import Callable

import pytest

from service.errors import InvalidInput, LimitExceeded, UnsupportedMediaType
from service.ops.data.archives import DIRECTORY_RECORD, read_archive
from tests.unit.ops.data.helpers import limits, make_zip, zip_of


def _special(name: str, kind: int) -> bytes:
    info = zipfile.ZipInfo(name)
    info.external_attr = (kind | 0o644) << 16
    return zip_of(info)


def _flagged_encrypted(data: bytes) -> bytes:
    """Set the "encrypted" bit of every central-directory record's general-purpose flags."""
    out = bytearray(data)
    at = out.find(DIRECTORY_RECORD)
    while at != -1:
        (flags,) = struct.unpack_from("<H", out, at + 8)
        struct.pack_into("<H", out, at + 8, flags | 0x1)
        at = out.find(DIRECTORY_RECORD, at + 4)
    return bytes(out)


def _declaring(data: bytes, size: int) -> bytes:
    """Rewrite every central-directory record's uncompressed size (no ZIP64 entries)."""
    out = bytearray(data)
    at = out.find(DIRECTORY_RECORD)
    while at != -1:
        struct.pack_into("<I", out, at + 24, size)
        at = out.find(DIRECTORY_RECORD, at + 4)
    return bytes(out)


def _bomb(megabytes: int) -> bytes:
    """One entry of ``megabytes`` MiB of zeros, about a thousandth of that compressed."""
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("cat/bomb.png", "w", force_zip64=True) as entry,
    ):
        for _ in range(megabytes):
            entry.write(bytes(1 << 20))
    return buffer.getvalue()


@pytest.fixture
def no_decompression(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any entry is opened for reading (writing a test zip still may)."""
    original = zipfile.ZipFile.open

    def guarded(self: zipfile.ZipFile, name: object, mode: str = "r", **kwargs: object) -> object:
        if mode == "r":
            raise AssertionError("an entry was decompressed")
        return original(self, name, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(zipfile.ZipFile, "open", guarded)


def test_pictures_in_name_order_and_what_is_skipped() -> None:
    entries = {
        "dog/b.png": b"B",
        "cat/a.png": b"A",
        "cat/sub/c.JPG": b"C",
        "top.png": b"outside a class folder",
        "cat/notes.txt": b"not a picture",
        "__MACOSX/cat/._a.png": b"resource fork",
        "dog/.hidden.png": b"hidden",
        "empty/": b"",
    }
    pictures, skipped = read_archive(make_zip(entries), limits())
    assert pictures == [("cat/a.png", b"A"), ("cat/sub/c.JPG", b"C"), ("dog/b.png", b"B")]
    assert sorted(skipped) == sorted(
        ["top.png", "cat/notes.txt", "__MACOSX/cat/._a.png", "dog/.hidden.png"]
    )


def test_backslashes_are_separators() -> None:
    pictures, _ = read_archive(make_zip({"cat\\a.png": b"A"}), limits())
    assert pictures == [("cat/a.png", b"A")]


UNSAFE: list[tuple[str, Callable[[], bytes], str]] = [
    ("dot-dot", lambda: make_zip({"../../etc/evil.png": b"x"}), "path traversal"),
    ("nested dot-dot", lambda: make_zip({"cat/../../x.png": b"x"}), "path traversal"),
    ("absolute", lambda: zip_of(zipfile.ZipInfo("/tmp/cat/x.png")), "absolute"),
    ("drive letter", lambda: zip_of(zipfile.ZipInfo("C:\\cat\\x.png")), "absolute"),
    ("symlink", lambda: _special("cat/link.png", stat.S_IFLNK), "symbolic link"),
    ("fifo", lambda: _special("cat/pipe.png", stat.S_IFIFO), "not a regular file"),
    ("encrypted", lambda: _flagged_encrypted(make_zip({"cat/a.png": b"x"})), "encrypted"),
]


@pytest.mark.usefixtures("no_decompression")
@pytest.mark.parametrize(("name", "make", "reason"), UNSAFE, ids=[u[0] for u in UNSAFE])
def test_unsafe_entries_are_refused_from_the_directory(
    name: str, make: Callable[[], bytes], reason: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        read_archive(make(), limits())
    assert info.value.code == "unsafe_archive_entry"
    assert reason in info.value.details["reason"]


@pytest.mark.usefixtures("no_decompression")
@pytest.mark.parametrize(
    ("data", "chosen", "limit", "requested"),
    [
        (
            make_zip({f"c/{i}.png": b"x" for i in range(4)}),
            {"max_archive_entries": 3},
            "max_archive_entries",
            4,
        ),
        (
            make_zip({"c/a.png": b"x" * 100}),
            {"max_archive_entry_bytes": 99},
            "max_archive_entry_bytes",
            100,
        ),
        (
            make_zip({f"c/{i}.png": b"x" * 10 for i in range(5)}),
            {"max_archive_bytes": 45},
            "max_archive_bytes",
            50,
        ),
    ],
    ids=["entries", "entry-bytes", "total-bytes"],
)
def test_sizes_over_the_limits_are_refused_before_decompressing(
    data: bytes, chosen: dict[str, int], limit: str, requested: int
) -> None:
    with pytest.raises(LimitExceeded) as info:
        read_archive(data, limits(**chosen))
    assert info.value.limit == limit
    assert info.value.details == {"limit": limit, "allowed": chosen[limit], "requested": requested}


def test_declared_sizes_are_what_is_checked() -> None:
    """A bomb declares its size honestly: refused from the directory in milliseconds."""
    bomb = _bomb(64)
    start = time.process_time()
    with pytest.raises(LimitExceeded) as info:
        read_archive(bomb, limits(max_archive_entry_bytes=32 << 20))
    assert time.process_time() - start < 0.5
    assert info.value.details["requested"] == 64 << 20


def test_a_directory_flood_is_counted_before_parsing() -> None:
    records = 5000
    with pytest.raises(LimitExceeded) as info:
        read_archive(DIRECTORY_RECORD * records, limits(max_archive_entries=1000))
    assert info.value.limit == "max_archive_entries"
    assert info.value.details["requested"] == records


def test_an_entry_longer_than_it_declares_is_cut_off() -> None:
    lying = _declaring(_bomb(8), 1000)
    start = time.process_time()
    with pytest.raises(InvalidInput) as info:
        read_archive(lying, limits())
    assert time.process_time() - start < 0.5
    assert info.value.code == "corrupt_archive"


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04 this is no zip", b"\x89PNG\r\n\x1a\n"])
def test_not_a_zip(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        read_archive(data, limits())
    assert info.value.code == "unsupported_archive"
