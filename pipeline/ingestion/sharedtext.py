"""The frames of the two-process ingest (their base64 text, or decoded), handed to the child in shared
memory, not through the pipe.

A file of frames is mostly their text (93 of 100 MB on the frames profile), which the reader cuts out of
the parse (:mod:`.framesapart`) and the child decodes. Through the pipe, the reader's ``writev`` copies
it into the kernel and the child's ``readv`` out again: 100 MB cost ~0.11 s of CPU on each side (measured
alone, 256 KB writes into a 1 MB pipe), a tenth of a frames ingest's CPU. Here the reader copies a batch's
frames' text into a slot of memory both processes map (an anonymous shared ``mmap``, made before the
fork), and the pipe carries only the batch's steps and the slot's number; the child decodes the text
where it lies and gives the slot back, by writing its number to a second pipe. Frames the reader
decoded itself go the same way (the child copies them out, to keep).

When no slot is free the child is behind, and the reader decodes that batch's frames itself
(:func:`.parallel._send_apart`); a text larger than a slot goes through the pipe as before.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Sequence

# Slots of this many bytes: a batch of the fast walk is about a read (256 KiB) of text.
SLOT_BYTES = 1024 * 1024
SLOTS = 8


class TextSlots:
    """Made before the fork, held by both processes: the reader :meth:`put`\\ s a batch's texts in a
    free slot, the child takes a :meth:`view` of them and :meth:`release`\\ s the slot."""

    def __init__(self, slots: int | None = None, slot_bytes: int | None = None) -> None:
        slots = slots or SLOTS
        if slots > 256:  # a slot is given back as one byte
            raise ValueError(f"at most 256 slots, not {slots}")
        self.slot_bytes = slot_bytes = slot_bytes or SLOT_BYTES
        self._memory = mmap.mmap(-1, slots * slot_bytes)  # anonymous and shared: the child sees the same pages
        self._view = memoryview(self._memory)
        self._free_in, self._free_out = os.pipe()  # slot numbers given back, child -> reader
        os.set_blocking(self._free_in, False)  # the reader never waits for a slot (see put)
        self._free = list(range(slots))  # the reader's: slots it knows are free

    def as_reader(self) -> None:
        """In the reader, after the fork: drop the child's end of the pipe."""
        os.close(self._free_out)
        self._free_out = -1

    def as_child(self) -> None:
        """In the child, after the fork: drop the reader's end of the pipe."""
        os.close(self._free_in)
        self._free_in = -1

    def put(self, pieces: Sequence[bytes | memoryview], size: int) -> int | None:
        """Copy ``pieces`` (``size`` bytes in all) into a free slot and return its number; None if none is
        free (the child is behind) or they do not fit in one."""
        if size > self.slot_bytes:
            return None
        if not self._free:
            self._collect()
            if not self._free:
                return None
        slot = self._free.pop()
        view, at = self._view, slot * self.slot_bytes
        for piece in pieces:
            end = at + len(piece)
            view[at:end] = piece
            at = end
        return slot

    def full(self) -> bool:
        """Whether every slot is taken (the child has not given back any of them yet)."""
        if not self._free:
            self._collect()
        return not self._free

    def _collect(self) -> None:
        """Take the slots the child gave back."""
        with contextlib.suppress(BlockingIOError):
            self._free += os.read(self._free_in, 256)

    def view(self, slot: int, size: int) -> memoryview:
        """The child's view of the ``size`` bytes put in ``slot``: valid until it is released."""
        at = slot * self.slot_bytes
        return self._view[at : at + size]

    def release(self, slot: int) -> None:
        """The child is done with ``slot``: give it back to the reader (gone already: nothing to do)."""
        with contextlib.suppress(OSError):
            os.write(self._free_out, bytes((slot,)))

    def close(self) -> None:
        """Let go of the memory and of the descriptors still open here."""
        for fd in (self._free_in, self._free_out):
            if fd >= 0:
                os.close(fd)
        self._free_in = self._free_out = -1
        with contextlib.suppress(BufferError):  # a view of it still alive somewhere: the memory goes with it
            self._view.release()
            self._memory.close()
