"""A worker's answer buffers, in one process: lent, released, bounded; the release frame."""

from __future__ import annotations

import gc

from service.workers import buffers
from service.workers.buffers import AnswerBuffers, LentFiles, file_of, release_frame
from service.workers.transport import Frame

MB = 1 << 20


def test_a_buffer_is_lent_until_released_and_sizes_are_powers_of_two() -> None:
    pool = AnswerBuffers(keep_bytes=64 * MB)
    first = pool.take(3 * MB)
    assert first is not None and first.nbytes() == 4 * MB
    second = pool.take(3 * MB)  # the first is lent: another one
    assert second is not None and file_of(second) != file_of(first)
    inode = file_of(first)
    assert inode is not None
    pool.release([inode, 123456789])  # a file that is not ours is ignored
    again = pool.take(2 * MB + 1)
    assert again is not None and file_of(again) == inode  # a free one of its size
    assert pool.kept_bytes == 8 * MB
    pool.release([file_of(second) or 0])
    small = pool.take(MB)  # a smaller answer never takes a larger buffer
    assert small is not None and small.nbytes() == MB and file_of(small) != file_of(second)


def test_what_is_kept_is_bounded() -> None:
    pool = AnswerBuffers(keep_bytes=8 * MB)
    lent = [pool.take(4 * MB) for _ in range(3)]  # the third is not kept: over the bound
    assert pool.kept_bytes == 8 * MB
    pool.release([i for i in (file_of(s) for s in lent if s is not None) if i is not None])
    big = pool.take(8 * MB)  # free ones make room for it
    assert big is not None
    assert pool.kept_bytes == 8 * MB
    pool.clear()
    assert pool.kept_bytes == 0


def test_the_server_releases_the_files_whose_storages_died() -> None:
    storages = [buffers.new_shared(MB) for _ in range(3)]
    assert all(s is not None for s in storages)
    lent = LentFiles()
    mapped = [(file_of(s), s) for s in storages if s is not None]
    lent.add([(inode, s) for inode, s in mapped if inode is not None])
    inodes = [inode for inode, _ in mapped]
    del mapped
    assert lent.released() == []
    del storages[0]
    gc.collect()
    assert lent.released() == [inodes[0]]
    assert lent.released() == []  # told once
    storages.clear()
    gc.collect()
    assert sorted(lent.released()) == sorted(inodes[1:])


def test_release_frames() -> None:
    frame = release_frame([3, 5])
    assert buffers.released_files(frame) == [3, 5]
    assert buffers.released_files(Frame(b"\x80\x05pickle", [])) is None  # a task
    assert buffers.released_files(Frame(b"R not json", [])) == []
    assert buffers.released_files(Frame(b'R["x"]', [])) == []


def test_a_worker_lends_its_buffers_and_any_other_process_makes_fresh_ones() -> None:
    assert buffers.lender is None  # this process is no worker
    fresh = buffers.shared_storage(MB)
    assert fresh is not None and fresh.is_shared()
    pool = buffers.lender = AnswerBuffers()
    try:
        lent = buffers.shared_storage(MB)
        assert lent is not None and pool.kept_bytes == MB
    finally:
        buffers.lender = None


def test_a_storage_that_keeps_coming_back_is_tracked_once() -> None:
    # A view of one of the server's own buffers handed back by every answer: one entry,
    # however many answers, and released once it dies.
    storage = buffers.new_shared(MB)
    assert storage is not None
    inode = file_of(storage)
    assert inode is not None
    lent = LentFiles()
    for _ in range(1000):
        lent.add([(inode, storage)])
    assert len(lent._refs) == 1
    assert lent.released() == []
    del storage
    gc.collect()
    assert lent.released() == [inode]
    assert not lent._refs
