"""The wire format, in one process: tensors by value or by shared memory, descriptors beside."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from collections.abc import Iterator

import pytest
import torch

from service.workers import transport
from service.workers.transport import INLINE_TENSOR_BYTES, MAX_FDS_PER_SEND, Frame


def open_fds() -> int:
    """Open files of shared-memory storages (other threads of a test process may open and
    close other descriptors meanwhile)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(("/dev/shm/", "/memfd:"))
    return count


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    yield left, right
    left.close()
    right.close()


def test_small_tensors_go_by_value_and_large_ones_by_shared_memory(pair) -> None:
    small = torch.arange(INLINE_TENSOR_BYTES // 4, dtype=torch.float32)
    large = torch.arange(INLINE_TENSOR_BYTES // 4 + 1, dtype=torch.float32)
    frame = transport.dumps({"small": small, "large": large})
    assert len(frame.fds) == 1  # the large one's storage
    assert len(frame.payload) > small.nbytes  # the small one is in the pickle
    transport.send_frame(pair[0], frame)
    frame.close()
    out = transport.loads(transport.recv_frame(pair[1]))
    assert torch.equal(out["small"], small)
    assert torch.equal(out["large"], large)
    assert not out["small"].untyped_storage().is_shared()
    assert out["large"].untyped_storage().is_shared()
    assert large.untyped_storage().is_shared()  # moved into shared memory, in place


def test_more_descriptors_than_one_message_carries(pair) -> None:
    before = open_fds()
    tensors = [torch.full((INLINE_TENSOR_BYTES // 4 + 1,), float(i)) for i in range(300)]
    frame = transport.dumps(tensors)
    assert len(frame.fds) == 300 > MAX_FDS_PER_SEND
    transport.send_frame(pair[0], frame)
    frame.close()
    received = transport.recv_frame(pair[1])
    assert len(received.fds) == 300
    out = transport.loads(received)
    assert all(torch.equal(a, b) for a, b in zip(out, tensors, strict=True))
    del out, tensors, received
    gc.collect()
    assert open_fds() == before


def test_gradients_cross_for_leaves_and_graphs_do_not(pair) -> None:
    leaf = torch.ones(3, requires_grad=True)
    product = leaf * 2
    frame = transport.dumps((leaf, product))
    transport.send_frame(pair[0], frame)
    frame.close()
    leaf_out, product_out = transport.loads(transport.recv_frame(pair[1]))
    assert leaf_out.requires_grad
    assert not product_out.requires_grad
    assert torch.equal(product_out, torch.full((3,), 2.0))


def test_a_copy_over_the_limit_is_refused_without_leaking_descriptors() -> None:
    before = open_fds()
    tensors = [torch.zeros(1 << 18) for _ in range(3)]  # 1 MiB each
    with pytest.raises(transport.CopyTooLarge):
        transport.dumps(tensors, copy_limit=(1 << 20) + 1)
    shared = [t.untyped_storage().is_shared() for t in tensors]
    assert shared == [True, False, False]  # stopped at the second
    assert open_fds() == before + 1  # a shared storage keeps its file open while it lives
    frame = transport.dumps(tensors)  # no limit: a thread's way
    assert len(frame.fds) == 3
    frame.close()
    assert open_fds() == before + 3
    del tensors
    gc.collect()
    assert open_fds() == before


def test_the_event_loop_side_moves_large_frames_in_pieces(pair) -> None:
    payload = os.urandom(8 << 20)  # far more than a socket buffer holds
    left, right = pair
    left.setblocking(False)
    right.setblocking(False)

    async def exchange() -> Frame:
        r, w = os.pipe()
        sending = asyncio.create_task(transport.send_frame_async(left, Frame(payload, [r], 42)))
        received = await transport.recv_frame_async(right)
        await sending
        os.close(r)
        os.close(w)
        return received

    received = asyncio.run(exchange())
    assert bytes(received.payload) == payload
    assert received.rss == 42
    assert len(received.fds) == 1
    received.close()


def test_a_closed_peer_is_end_of_file(pair) -> None:
    pair[0].close()
    with pytest.raises(EOFError):
        transport.recv_frame(pair[1])


def test_descriptors_dropped_in_transit_are_an_error_and_closed() -> None:
    """A receive whose flags say the kernel truncated its descriptors (the receiver is out of
    them) fails, and closes the ones that did arrive; other flags are no error."""
    read, write = os.pipe()
    try:
        assert transport._checked([read], 0) == [read]
        with pytest.raises(OSError, match="descriptors were dropped"):
            transport._checked([read], int(socket.MSG_CTRUNC | socket.MSG_TRUNC))
        with pytest.raises(OSError):  # closed by the check
            os.fstat(read)
    finally:
        os.close(write)
