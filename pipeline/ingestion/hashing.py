"""The input's sha256 (the episode's identity), computed on a helper thread while the parser reads."""

from __future__ import annotations

import hashlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor


class BackgroundSha256:
    """sha256 of a byte stream, updated in order on a helper thread.

    hashlib releases the GIL while it hashes, so the hash runs on another core while the parser
    holds the GIL (in line it cost ~0.075 s per 100 MB, ~3% of a teams-profile ingest, measured).
    The bytes given are copied into blocks of ``BATCH_BYTES`` that are hashed whole, each hand-over
    costing the parser two GIL switches; at most ``MAX_PENDING`` blocks exist, reused once hashed,
    so memory stays bounded if the helper falls behind, and the copy lands in memory already
    touched (joining fresh 4 MiB buffers instead cost ~0.05 s and ~8,000 page faults per 100 MB).
    """

    BATCH_BYTES = 4 * 1024 * 1024
    MAX_PENDING = 4
    FIRST_BLOCK_BYTES = 64 * 1024

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[Future[None], bytearray]] = deque()
        self._blocks = 0  # made so far
        self._block: bytearray | None = None
        self._filled = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add ``data`` (copied: the caller may reuse its buffer at once)."""
        view = memoryview(data)
        while view:
            block = self._block
            if block is None:
                block = self._block = self._take_block()
            elif self._filled == len(block):  # a first block, smaller than BATCH_BYTES: grown
                block = self._block = self._grown(block)
            count = min(len(block) - self._filled, len(view))
            block[self._filled : self._filled + count] = view[:count]
            self._filled += count
            view = view[count:]
            if self._filled == self.BATCH_BYTES:
                self._hand_over()

    def _grown(self, block: bytearray) -> bytearray:
        # The first block grows from FIRST_BLOCK_BYTES: a small file neither zeroes and touches
        # 4 MiB (~1,000 page faults) nor starts the helper thread to hash a few KB.
        bigger = bytearray(min(max(1, self.BATCH_BYTES), 2 * len(block)))
        bigger[: len(block)] = block
        return bigger

    def _take_block(self) -> bytearray:
        if self._blocks == 0:
            self._blocks = 1
            return bytearray(min(max(1, self.BATCH_BYTES), self.FIRST_BLOCK_BYTES))
        if self._blocks < max(1, self.MAX_PENDING) or not self._pending:
            self._blocks += 1
            return bytearray(max(1, self.BATCH_BYTES))
        future, block = self._pending.popleft()  # the oldest: hashed first, in order
        future.result()
        return block

    def _hand_over(self) -> None:
        block, filled = self._block, self._filled
        self._block, self._filled = None, 0
        if block is None or not filled:
            return
        if self._pool is None:  # started on the first hand-over: after the two-process ingest forks
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        data = block if filled == len(block) else memoryview(block)[:filled]
        self._pending.append((self._pool.submit(self._hash.update, data), block))

    def hexdigest(self) -> str:
        """The digest of everything given so far (waits for the helper)."""
        if self._pool is None:
            # A small input, still all in the first block: hashing it here beats starting a thread
            # for it (the thread's start and join were ~3 ms of a 9 kB episode's ingest, measured).
            if self._block is not None:
                self._hash.update(memoryview(self._block)[: self._filled])
            self._block, self._filled = None, 0
        else:
            self._hand_over()
        self.close()
        return self._hash.hexdigest()

    def close(self) -> None:
        """Finish the queued updates and stop the helper thread (it would outlive the ingest)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._pending.clear()
