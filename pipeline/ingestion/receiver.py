"""The child's end of the pipe from the reader of the two-process ingest (:mod:`.parallel`).

:class:`Receiver` reads the framed messages :class:`.sender.Sender` writes straight into buffers with
``os.readv``. ``Connection.recv_bytes`` reads a message in pieces of at most the pipe's size, each into
a new bytes object of the whole remaining size, copied again into a ``BytesIO``: for the frames'
text of a 100 MB file (93 MB through the pipe) that was ~0.14 s of the child's CPU (cProfile), most
of it page faults on memory allocated afresh for every read. Messages read once and let go (the
steps, marshalled, and the frames' text, decoded at once) come in one buffer that is reused;
a message that is kept (frames the reader decoded, stored as they are) is copied out of it.
"""

from __future__ import annotations

import os
import struct

_SIZE = struct.Struct("!i")
_LONG_SIZE = struct.Struct("!Q")
# The reused buffer starts at this size and grows to the largest message read into it.
_FIRST_BYTES = 1024 * 1024


class Receiver:
    """Reads messages framed as :class:`multiprocessing.connection.Connection` frames them (a signed
    4-byte big-endian length, or -1 then an 8-byte one) from the blocking descriptor ``fd``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._head = bytearray(_LONG_SIZE.size)
        self._buffer = bytearray(_FIRST_BYTES)

    def recv_view(self) -> memoryview:
        """The next message, in the reused buffer: valid until the next call."""
        size = self._size()
        if size > len(self._buffer):
            self._buffer = bytearray(size)  # views of the old one stay valid: it is let go, not resized
        view = memoryview(self._buffer)[:size]
        self._fill(view)
        return view

    def recv_bytes(self) -> bytes:
        """The next message, as bytes of its own."""
        return bytes(self.recv_view())

    def _size(self) -> int:
        head = memoryview(self._head)
        self._fill(head[: _SIZE.size])
        size: int = _SIZE.unpack_from(head)[0]
        if size == -1:
            self._fill(head)
            size = _LONG_SIZE.unpack_from(head)[0]
        return size

    def _fill(self, view: memoryview) -> None:
        """Read exactly ``len(view)`` bytes into ``view``; EOFError if the writer hung up first."""
        fd = self._fd
        while len(view):
            count = os.readv(fd, [view])
            if not count:
                raise EOFError
            view = view[count:]
