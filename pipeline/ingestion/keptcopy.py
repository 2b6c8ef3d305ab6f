"""A copy of an input that can be read only once (a URL, a pipe, a stream), kept as it is read.

The fast walk (:mod:`.fastwalk`) reads a file 2-3x faster than the exact walk, but only accepts what it can
vouch for: at any doubt, and at every invalid file, the exact walk reads the file again from the start and
reports what is wrong. A local file is opened again; an input read once is not read again either (the
architecture's "one pass": a second download, or a pipe that cannot give its bytes twice). So while the
fast walk reads such an input, every byte it takes is also written to a file in the lake's staging
area (:meth:`KeptCopy.first`); the exact walk, if it is needed, reads that file, then the rest of the
input where the fast walk left it (:meth:`KeptCopy.again`). The copy is removed with its staging folder
when the ingest ends (or by ``gc`` after a crash), and costs one write of the input as stored (the page
cache's, mostly).

If the copy cannot be written (the disk is full), the fast walk still reads on without it; only if the
exact walk is then needed does the ingest fail, saying why.
"""

from __future__ import annotations

import io
from typing import IO, Any, cast

from ..errors import SourceError


class KeptCopy:
    """``raw`` (the input as stored, read once) with the copy of what was read of it in ``copy``, a file
    open for writing and reading."""

    def __init__(self, raw: IO[bytes], copy: io.BufferedRandom, name: str) -> None:
        self._raw = raw
        self._copy = copy
        self._name = name
        self._failure: OSError | None = None
        self._again = False

    def first(self) -> IO[bytes]:
        """The input, for the first reading: what it gives is kept."""
        return cast(IO[bytes], _Keeping(self))

    def again(self) -> IO[bytes]:
        """The input from its start again: the kept bytes, then the rest of it (once only)."""
        if self._again:
            raise RuntimeError("the kept copy is read again once only")
        self._again = True
        if self._failure is not None:
            raise SourceError(f"could not keep a copy of the input to read it a second time, which this file "
                              f"needs (the fast reader cannot vouch for it): {self._failure.strerror or self._failure}"
                              f"; free some space where the lake is, or save the file locally first",
                              source=self._name)
        self._copy.flush()
        self._copy.seek(0)
        return cast(IO[bytes], _Replaying(self))

    def _keep(self, data: Any) -> None:
        if self._failure is None:
            try:
                self._copy.write(data)
            except OSError as exc:
                self._failure = exc


class _Reading(io.RawIOBase):
    """A readable raw stream over the input; closing it leaves the input open (its owner closes it)."""

    def __init__(self, kept: KeptCopy) -> None:
        self._kept = kept
        self.name = getattr(kept._raw, "name", None)  # as the input's, for open_source's label

    def readable(self) -> bool:
        return True

    def _from_input(self, buffer: Any) -> int:
        raw = self._kept._raw
        if hasattr(raw, "readinto"):
            return raw.readinto(buffer) or 0
        data = raw.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Keeping(_Reading):
    def readinto(self, buffer: Any) -> int:
        count = self._from_input(buffer)
        if count:
            self._kept._keep(memoryview(buffer)[:count])
        return count


class _Replaying(_Reading):
    def __init__(self, kept: KeptCopy) -> None:
        super().__init__(kept)
        self._in_copy = True

    def readinto(self, buffer: Any) -> int:
        if self._in_copy:
            count = self._kept._copy.readinto(buffer) or 0
            if count:
                return count
            self._in_copy = False
        return self._from_input(buffer)
