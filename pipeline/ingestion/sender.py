"""The reader's end of the pipe to the child of the two-process ingest (:mod:`.parallel`).

:class:`Sender` writes framed messages to a non-blocking pipe without a thread, keeps what does not
fit, and tells the reader whether the child is behind (:meth:`Sender.behind`).
"""

from __future__ import annotations

import itertools
import os
import select
import struct
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .parallel import _Channel
    from .sharedtext import TextSlots

# At most this many buffers a writev call (POSIX guarantees 16; Linux takes 1024).
_IOV_MAX = 64


class Sender:
    """Writes the reader's messages to the pipe, in order, without a thread and without stopping the
    parser while the pipe is full.

    The pipe holds :data:`.parallel.PIPE_BYTES` (where the system lets us widen it), a few batches of large
    steps; whenever the writer is busy for a moment (converting a full batch to Arrow, importing
    pyarrow at the start) a parser writing itself would wait on the full pipe, although it is the
    slower half. So the pipe's end is non-blocking: :meth:`send` writes what fits and keeps the rest,
    which the next calls write, and waits only once :attr:`MAX_PENDING_BYTES` of messages are kept
    (bounded memory). A helper thread did this before (issue 15): waking it for each message cost
    the parser a GIL hand-over and a futex wake-up (py-spy found the parser in ``sem_post`` under
    ``Condition.notify`` for 0.09-0.16 s of a 100 MB frames ingest); without it the whole command
    took ~5% less wall time on frames (BENCHMARKS.md, session 7).

    The framing is :class:`multiprocessing.connection.Connection`'s (a signed 4-byte big-endian
    length, or -1 then an 8-byte one), so the child reads with ``recv_bytes``.
    """

    MAX_PENDING_BYTES = 4 * 1024 * 1024
    # Until the child has started (imported pyarrow and the rest: ~0.15 s on a quiet machine, when the
    # reader parses MAX_PENDING_BYTES of frames in ~0.03 s and would then wait with a core idle),
    # the reader may run this far ahead instead.
    STARTING_PENDING_BYTES = 16 * 1024 * 1024
    # After the reader waits for room in the pipe, the child counts as behind for this many messages.
    BEHIND_MESSAGES = 4

    def __init__(self, conn: _Channel) -> None:
        self.conn = conn
        self._fd = conn.outgoing_fileno()
        os.set_blocking(self._fd, False)
        self._writable = select.poll()  # not select(): a descriptor may be above FD_SETSIZE
        self._writable.register(self._fd, select.POLLOUT)
        # The child's replies, checked before every message: Connection.poll() builds a selector each
        # time (~1,500 times per 100 MB of frames), one poll object registered once does not.
        self._replies = select.poll()
        self._replies.register(conn.incoming_fileno(), select.POLLIN)
        self._limit = self.STARTING_PENDING_BYTES
        self._queue: deque[memoryview] = deque()
        self._pending = 0
        self._broken = False
        self._waited = 0  # messages left for which the child counts as behind (see behind())
        self.slots: TextSlots | None = None  # shared memory beside the pipe, for the frames' text (sharedtext)

    def send(self, data: bytes, pieces: Sequence[bytes | memoryview] | None = None) -> bool:
        """Queue ``data`` (and, if given, a second message made of ``pieces``, never joined) and write
        what the pipe takes (waiting while too much is queued); False if the pipe broke (the writer died)."""
        if self._broken:
            return False
        self._queue_message([data])
        if pieces is not None:
            self._queue_message(pieces)
        self._write(wait=self._pending >= self._limit)
        return not self._broken

    def _queue_message(self, pieces: Sequence[bytes | memoryview]) -> None:
        size = sum(map(len, pieces))
        header = struct.pack("!i", size) if size <= 0x7FFFFFFF else struct.pack("!iQ", -1, size)
        self._queue.append(memoryview(header))
        self._queue.extend(memoryview(piece) for piece in pieces if piece)
        self._pending += len(header) + size

    def behind(self) -> bool:
        """Whether the child is the slower half just now: the reader had to wait for room in the pipe
        within its last :attr:`BEHIND_MESSAGES` messages, so work it takes on fills time it would
        spend waiting. (A queue that is merely long is no sign: it grows for a moment whenever the
        child converts or writes a batch, also where the reader is the slower half.)"""
        if not self._waited:
            return False
        self._waited -= 1
        return True

    def replied(self) -> bool:
        """Whether the child has written to us (or hung up): its replies are waiting."""
        return bool(self._replies.poll(0))

    def child_started(self) -> None:
        """The child is ready: hold the queue to :attr:`MAX_PENDING_BYTES` from now on."""
        self._limit = self.MAX_PENDING_BYTES

    def _write(self, *, wait: bool) -> None:
        """Write queued bytes until the pipe is full; with ``wait``, until the queue is under the
        limit (everything, when the limit is 0)."""
        queue = self._queue
        while queue:
            try:
                written = os.writev(self._fd, list(itertools.islice(queue, _IOV_MAX)))
            except BlockingIOError:
                if not wait:
                    return
                self._writable.poll()  # writable, or the other end closed (then writev fails)
                self._waited = self.BEHIND_MESSAGES
                continue
            except OSError:  # BrokenPipeError, ConnectionResetError: the writer is gone
                self._broken = True
                queue.clear()
                self._pending = 0
                return
            self._pending -= written
            while queue and written >= len(queue[0]):
                written -= len(queue.popleft())
            if written:
                queue[0] = queue[0][written:]
            if wait and self._pending < self._limit:
                wait = False

    def flush(self) -> bool:
        """Write everything queued (waiting for the pipe); False if the pipe broke."""
        limit, self._limit = self._limit, 0
        self._write(wait=True)
        self._limit = limit
        return not self._broken

    def close(self) -> None:
        """Write what is queued (or stop at a broken pipe)."""
        self.flush()
