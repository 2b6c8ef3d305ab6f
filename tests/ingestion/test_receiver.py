"""The child's end of the two-process pipe (pipeline.ingestion.receiver) against what the reader writes.

Messages arrive whole and in order, whatever their sizes against the pipe's and the buffer's, in both
framings; a view handed out earlier keeps its bytes when the buffer is outgrown; a writer that hangs up
mid-message is an EOFError, never a short message."""

from __future__ import annotations

import os
import struct
import threading
from multiprocessing.connection import Connection

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingestion import receiver as receiver_module
from pipeline.ingestion.receiver import Receiver


def _pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    return read_fd, write_fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.one_of(st.integers(0, 300), st.integers(60_000, 300_000)), min_size=1, max_size=12),
       kept=st.lists(st.booleans(), min_size=12, max_size=12), long_framing=st.lists(st.booleans(), min_size=12,
                                                                                     max_size=12))
def test_messages_arrive_whole_and_in_order(sizes: list[int], kept: list[bool], long_framing: list[bool]) -> None:
    """Sizes around the pipe's (64 KiB) and beyond the first buffer (shrunk here to 1 KiB); the
    Connection framing (a 4-byte length) and the long one (-1, then 8 bytes) that messages of 2 GiB
    and more take; each read as a view or as bytes of its own."""
    messages = [os.urandom(size) for size in sizes]
    read_fd, write_fd = _pipe()

    def write() -> None:
        with Connection(write_fd, readable=False) as out:
            for message, long in zip(messages, long_framing, strict=False):
                if long:
                    _write_all(write_fd, struct.pack("!iQ", -1, len(message)) + message)
                else:
                    out.send_bytes(message)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        receiver = Receiver(read_fd)
        receiver._buffer = bytearray(1024)
        reads = []  # (the buffer read into, the view or None, the message)
        for message, keep in zip(messages, kept, strict=False):
            got = receiver.recv_bytes() if keep else receiver.recv_view()
            assert bytes(got) == message
            assert type(got) is (bytes if keep else memoryview)
            reads.append((receiver._buffer, None if keep else got, message))
        with pytest.raises(EOFError):
            receiver.recv_view()
    finally:
        writer.join()
        os.close(read_fd)
    # A view is valid until the next read into its buffer: the last one read into an outgrown buffer
    # still holds its message (the buffer is replaced, never resized under it).
    last = {id(buffer): (view, message) for buffer, view, message in reads}
    for view, message in last.values():
        if view is not None:
            assert bytes(view) == message


@pytest.mark.parametrize("cut", [0, 2, 4, 7, 50])
def test_a_writer_gone_mid_message_is_an_eof_error(cut: int) -> None:
    """The header or the body cut short: EOFError (the child then aborts), not a shorter message."""
    read_fd, write_fd = _pipe()
    _write_all(write_fd, (struct.pack("!i", 100) + b"x" * 100)[:cut])
    os.close(write_fd)
    try:
        with pytest.raises(EOFError):
            Receiver(read_fd).recv_view()
    finally:
        os.close(read_fd)


def test_the_buffer_is_reused_for_messages_that_fit() -> None:
    """Messages read once (the marshalled steps, the frames' text) do not allocate a buffer each."""
    read_fd, write_fd = _pipe()
    try:
        with Connection(write_fd, readable=False) as out:
            receiver = Receiver(read_fd)
            first = receiver._buffer
            for size in (10, receiver_module._FIRST_BYTES // 64, 3):
                out.send_bytes(b"m" * size)
                assert bytes(receiver.recv_view()) == b"m" * size
            assert receiver._buffer is first
    finally:
        os.close(read_fd)
