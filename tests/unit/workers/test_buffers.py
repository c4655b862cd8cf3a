"""A worker's answer buffers, in one process: lent, released, bounded; the release frame."""

from __future__ import annotations

import asyncio
import gc

import torch

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


def test_the_last_answers_own_files_stay_mapped_and_are_released_once_unused() -> None:
    answer = buffers.new_shared(MB)  # a worker's answer buffer, mapped by the answer
    own = buffers.new_shared(MB)  # one of the server's own buffers, handed back
    assert answer is not None and own is not None
    answer_file, own_file = file_of(answer), file_of(own)
    assert answer_file is not None and own_file is not None
    lent = LentFiles()
    view = torch.empty(0, dtype=torch.uint8).set_(answer)  # the response's tensor
    lent.add([(answer_file, answer), (own_file, own)], fresh={answer_file})
    assert lent.kept == [answer_file]  # never the server's own: its pool reuses it
    del answer
    gc.collect()
    assert lent.released() == []  # the response still uses it
    del view
    gc.collect()
    assert lent.released() == [answer_file]  # unused, though kept mapped
    assert lent.released() == []  # told once
    assert lent.kept == [answer_file]
    # The next answer in the same file: kept still, lent again.
    storage = next(iter(lent._kept.values()))
    lent.add([(answer_file, storage)], fresh=set())
    assert lent.kept == [answer_file]
    del storage
    gc.collect()
    assert lent.released() == [answer_file]
    lent.forget()
    assert lent.kept == []
    del own
    gc.collect()
    assert lent.released() == [own_file]


def test_the_kept_files_go_once_no_answer_has_come_for_a_while() -> None:
    async def scenario() -> tuple[list[int], list[int], list[int]]:
        lent = LentFiles(idle_s=0.05)
        storage = buffers.new_shared(MB)
        assert storage is not None
        inode = file_of(storage)
        assert inode is not None
        lent.add([(inode, storage)], fresh={inode})
        del storage
        await asyncio.sleep(0.03)
        lent.add([(inode, next(iter(lent._kept.values())))])  # another answer: the clock restarts
        await asyncio.sleep(0.03)
        early = lent.kept
        await asyncio.sleep(0.1)
        gc.collect()
        return early, lent.kept, lent.released()

    early, late, released = asyncio.run(scenario())
    assert early and late == [] and released == early
