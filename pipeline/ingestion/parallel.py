"""One large file on two cores: this process parses, a second one checks, tabulates and writes.

Parsing (ijson), the rules (schema and the rest) and the Arrow conversion all hold the GIL, so
one process keeps one core busy while the other mostly idles. Here the reading process parses
and streams the parts, in the batches :func:`~pipeline.ingestion.parts.read_batches` hands over, marshalled
through a pipe to a forked child that runs :class:`~pipeline.ingestion.builder.EpisodeChecks` and the
:class:`~pipeline.ingestion.builder.EpisodeTabulator` (Arrow conversion and the Parquet writer thread).

Parsing alone is the slower half on most files, so the reader does nothing else (issue 15: with
the checks in the reader, it was the bottleneck on small steps and short numbers). Two kinds
of file are the exception, chosen on the first batch (:func:`checks_here`): small rows, when the fast walk
(:mod:`.fastwalk`) parses, which makes the reader the faster half and the writer's work per row the
slower; and large integer observations
(pixels), which checked and flattened here cross the pipe as one byte a value, where nested
lists of integers take longer to marshal than to check; their frames, if any, are decoded and
checked here too, and cross as a message of their own (:func:`_frames_out`). Either way the reader leaves the
schema check of plain batches (1-D float observations, no image, no metrics) to the child. The
other way round, while the child is behind (:meth:`Sender.behind`), the reader takes the checks
that need no state from the batches it leaves to the child (decoding the frames, the schema check):
either side can run those. When the fast walk parses and the child checks, the frames' base64 text
is not parsed at all (:mod:`.framesapart`): it goes to the child as it was read, after its steps, and is
decoded by the child, or by the reader while the child is behind (:func:`_send_apart`). Frames, as text
or decoded, go in slots of memory the two processes share (:mod:`.sharedtext`) rather than through the
pipe, which would copy them into the kernel and out again; the pipe carries the rest. The
reader imports neither pyarrow nor the tables, not even after its commit (the batch counts entries
before it imports compaction): the child imports them while the reader parses. The reader's
messages go to a non-blocking pipe (:class:`Sender`), so the parser goes on while the writer is busy
for a moment, up to :attr:`Sender.MAX_PENDING_BYTES` ahead (more while the child starts, until its
first message says it has).

Measured on the 2-core development machine, CPU seconds per 100 MB (reader, child): vector
(~230 B a step) 1.9 and 1.6; teams_plain 2.1 and 2.0; pixels, checked here, 1.9 and 0.4; the parse
floor of those files 1.3, 1.9 and 1.4 s. Splitting costs ~0.5 s of CPU per 100 MB (marshal and
pipe) and pays only when a second core is free: from 4 to 16 MB of small steps, one process used
20-35% less CPU and was as fast on a busy machine, so files from :data:`SPLIT_MIN_BYTES` are
split by default when there are two cores to use and forking is safe.

The reader keeps everything that makes the ingest atomic: the staging folder and its lock, the
content hash, and the commit. Errors still come in file order: the child checks the parts in file
order and stops at its first error; before reporting an error of its own (a parse error, a part
it checked), which always lies later in the file than what it sent, the reader asks the child for
an earlier one. Header parts that come before the first steps wait for the choice of who checks;
the fast walk's first step waits too, for the batch after it (the choice weighs a batch of steps,
not one); if the file ends in an error before the choice, the reader checks what waited first.
"""

from __future__ import annotations

import contextlib
import gc
import marshal
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cores import usable_cores
from ..errors import LakeError, PipelineError
from .nopandas import keep_pandas_out
from .receiver import Receiver
from .sender import Sender
from .sharedtext import TextSlots

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from .builder import Built, EpisodeChecks
    from .framesapart import StepsApart
    from .source import Source

# builder, source and multiprocessing are imported when a file is split, not with this module:
# ingest and batch import it for split_pays and usable_cores, on every start of the command line.

# Whether ingest(parallel=None) may split at all; see the measurements above.
# Files at least this large (as stored) are split when forking is safe.
SPLIT_MIN_BYTES = 32 * 1024 * 1024
# Steps travel in the batches the parser hands over (pipeline.ingestion.parts.read_batches: up to 256 steps
# or ~64 KiB of the file): large enough to amortise a pipe write, small enough to keep both sides busy.


# The pipe that carries the parts holds this many bytes (Linux's limit for a user, by default): a
# batch is ~256 KiB of the file, and in the default 64 KiB pipe the reader could not get ahead of
# the child by a single one. Each then waited for the other, and the two processes took turns
# instead of running side by side (frames, 100 MB: 0.75 s of the reader's 1.6 s spent waiting in
# write, 0.75 s of the child's in read, measured). With room for four batches they overlap.
PIPE_BYTES = 1024 * 1024

# The child's malloc keeps what it frees, up to these sizes, for its next allocations (glibc's mallopt):
# by default a block of 128 KiB or more is a fresh mmap, each of whose pages faults in, zeroed, when
# first written, and is unmapped when freed. The child frees and makes again blocks of a batch's size
# all the time (the image column's join: ~8 MB a batch of frames). Joining 70 MB of 2.5 KB frames
# in 8 MB pieces took 0.050 s of CPU and 15,700 page faults, 0.026 s for twice as much with these
# settings (measured alone); frames 100 MB, whole command 0.604 -> 0.585 s (8 pairs), 1 GB 4.40-4.54
# -> 4.21-4.35 s, for 5-10 MB more peak RSS in the child (see BENCHMARKS.md, session 13).
_MMAP_THRESHOLD = (-3, 16 * 1024 * 1024)  # M_MMAP_THRESHOLD: blocks below this come from the heap
_TRIM_THRESHOLD = (-1, 32 * 1024 * 1024)  # M_TRIM_THRESHOLD: free memory kept at the heap's top


def split_pays(size: int | None) -> bool:
    """Whether ``ingest(parallel=None)`` splits a file of ``size`` bytes (None: unknown, a stream)."""
    return (size is not None and size >= SPLIT_MIN_BYTES and usable_cores() >= 2
            and fork_is_safe())


def fork_is_safe() -> bool:
    """Whether this process can fork a worker without inheriting threads mid-operation.

    Only the calling thread survives a fork; a lock held by another thread (or by a native
    thread pool such as polars') would stay locked in the child forever.
    """
    return threading.active_count() == 1 and "polars" not in sys.modules


def build_in_two_processes(src: Source, folder: Path | None,
                           progress: Callable[[int, int | None], None] | None,
                           close_in_child: tuple[int, ...] = (),
                           walk: Callable[[Source], Iterator[tuple[str, Any]]] | None = None,
                           exiting: list[Any] | None = None) -> Built:
    """Parse ``src`` here (with ``walk``, by default the exact :func:`~.parts.read_batches`) and build
    the episode in a forked child; return what was built.

    ``close_in_child`` names inherited file descriptors the child must not keep: the staging
    lock, so that once this process dies the lock dies with it and ``gc`` can clean up.

    ``exiting``: where to leave a child that built the episode, instead of waiting here for it to exit;
    the caller commits meanwhile and then waits (:func:`join_children`). Its files are closed and fsynced
    before it replies, and it writes nothing after; its exit (the kernel freeing ~130 MB of mappings)
    took ~6 ms of the frames profile's command, measured between its reply and the join.
    """
    import multiprocessing

    # Both processes check parts (EpisodeChecks): imported before the fork, the child has it for free
    # (the schema validator and the rules are ~25 ms of imports, which each process paid after the fork).
    from . import builder  # noqa: F401

    context = multiprocessing.get_context("fork")
    down_out, down_in = context.Pipe(duplex=False)  # parts, to the child
    up_out, up_in = context.Pipe(duplex=False)  # its replies
    _widen(down_in.fileno())
    ours, theirs = _Channel(up_out, down_in), _Channel(down_out, up_in)
    slots = TextSlots()  # the frames' text, in memory both processes share (see sharedtext)
    # The child inherits our ends of the pipes too; unless it closes them, it never sees us hang up.
    close_in_child = (*close_in_child, *ours.filenos())
    child = context.Process(target=_child, args=(theirs, folder, close_in_child, slots), name="ingest-builder",
                            daemon=True)
    child.start()
    theirs.close()
    slots.as_reader()
    built = None
    try:
        built = _feed(ours, src, progress, walk, slots)
        return built
    finally:
        ours.close()
        if built is not None and exiting is not None:
            exiting.append(child)
        else:
            join_children([child])
        slots.close()


def join_children(children: list[Any]) -> None:
    """Wait for each child process in ``children`` to exit (kill one that has not after a minute); empty
    the list."""
    while children:
        child = children.pop()
        child.join(timeout=60)
        if child.is_alive():  # pragma: no cover - only if the child hangs
            child.kill()
            child.join()


def _widen(fd: int) -> None:
    """Give the pipe ``fd`` :data:`PIPE_BYTES` of buffer, when the system allows (Linux only)."""
    import fcntl

    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):  # above the user's limit: the default buffer stays
            fcntl.fcntl(fd, set_size, PIPE_BYTES)


class _Channel:
    """One end of the two-way link: two one-way pipes, so that the one carrying parts can be widened.

    (``multiprocessing.Pipe()`` is a socket pair, whose buffer an unprivileged process can only
    grow up to ``net.core.wmem_max``, 208 KiB on most systems.) It offers what ``_feed``,
    ``_child`` and their helpers use of a duplex ``Connection``.
    """

    def __init__(self, incoming: Connection, outgoing: Connection) -> None:
        self._in, self._out = incoming, outgoing

    def filenos(self) -> tuple[int, int]:
        return self._in.fileno(), self._out.fileno()

    def outgoing_fileno(self) -> int:
        return self._out.fileno()

    def incoming_fileno(self) -> int:
        return self._in.fileno()

    def send_bytes(self, data: bytes) -> None:
        self._out.send_bytes(data)

    def send(self, value: Any) -> None:
        self._out.send(value)

    def recv_bytes(self) -> bytes:
        return self._in.recv_bytes()

    def receiver(self) -> Receiver:
        """The incoming pipe read as :class:`~.receiver.Receiver` does (the child's end)."""
        return Receiver(self._in.fileno())

    def recv(self) -> Any:
        return self._in.recv()

    def poll(self) -> bool:
        return self._in.poll()

    def close(self) -> None:
        self._in.close()
        self._out.close()


def _feed(conn: _Channel, src: Source, progress: Callable[[int, int | None], None] | None,
          walk: Callable[[Source], Iterator[tuple[str, Any]]] | None, slots: TextSlots | None = None) -> Built:
    sender = Sender(conn)
    sender.slots = slots
    try:
        return _feed_through(sender, src, progress, walk)
    finally:
        sender.close()


def _feed_through(sender: Sender, src: Source, progress: Callable[[int, int | None], None] | None,
                  walk: Callable[[Source], Iterator[tuple[str, Any]]] | None) -> Built:
    from .builder import EpisodeChecks
    from .fastwalk import fast_batches
    from .framesapart import FramesApart
    from .parts import PROGRESS_EVERY, STEPS, flush_ahead_due, read_batches

    conn = sender.conn
    checks: EpisodeChecks | None = None  # set when this process checks the parts (see checks_here)
    held: list[tuple[str, Any]] = []  # the parts before the choice of who checks: headers, first steps
    chosen = False
    steps = 0
    flush_due = flush_ahead_due(src)
    walk = walk or read_batches
    # The fast walk keeps the frames apart from the parse once the child is to check the steps.
    apart = FramesApart() if walk is fast_batches else None

    def send(part: str, value: Any) -> None:
        nonlocal steps
        if part != STEPS:
            _send_part(sender, checks, part, value)
            return
        _send_steps(sender, checks, value, steps)
        if flush_due():
            _send(sender, ("ahead",))
        before, steps = steps, steps + len(value)
        if progress is not None and steps // PROGRESS_EVERY != before // PROGRESS_EVERY:
            progress(src.bytes_read, src.size)

    def choose() -> EpisodeChecks | None:
        """Who checks (see checks_here), on the steps held: the exact walk's first batch, or the fast
        walk's first step and the batch after it (it hands the first step over alone)."""
        first_steps = [step for part, value in held if part == STEPS for step in value]
        here = bool(first_steps) and checks_here(first_steps, fast_reader=walk is not read_batches)
        if apart is not None:
            apart.enabled = not here
        return EpisodeChecks(integer_rows=False) if here else None

    try:
        parts = fast_batches(src, frames_apart=apart) if apart is not None else walk(src)
        for part, value in _parts_before_errors(parts, held):
            if chosen:
                send(part, value)
                continue
            held.append((part, value))
            if part == STEPS and (apart is None or sum(len(v) for p, v in held if p == STEPS) > 1):
                checks, chosen = choose(), True
                for held_part, held_value in held:
                    send(held_part, held_value)
                held.clear()
        if not chosen:  # the file ended first: choose on what there is
            checks, chosen = choose(), True
            for held_part, held_value in held:
                send(held_part, held_value)
            held.clear()
        digest = src.reader.hexdigest()
        _send(sender, ("finish", (src.name, digest, src.reader.consumed)))
        if not sender.flush():  # all of it, "finish" last, must be written before its reply can come
            raise _ChildReported(_receive(conn)[1])
    except PipelineError as own:
        # Our own error (a broken rule, a parse error) comes later in the file than anything
        # already sent; only a failure to write what was sent can come first.
        earlier = _stop(sender)
        raise (earlier or own) from None
    except _ChildReported as reported:
        raise reported.error from None
    reply = _receive(conn)
    if reply[0] == "error":
        raise reply[1]
    return reply[1]


def _send_steps(sender: Sender, checks: EpisodeChecks | None, steps: list[Any], first: int) -> None:
    """Send a batch of steps (from step ``first`` on): checked here, if ``checks`` is given (see
    :func:`checks_here`), else left to the child, but for the checks that need no state while the
    child is behind (:meth:`Sender.behind`): then the reader has time to spare, and decodes the
    frames and runs the schema check. A batch that fails either is left whole to the child, which
    reports the file's first error in order. Steps whose frames the fast walk kept apart
    (:class:`~.framesapart.StepsApart`) are sent without them, their frames' text after them."""
    from .framesapart import StepsApart
    from .schema import steps_are_valid

    if type(steps) is StepsApart:
        _send_apart(sender, steps, first)
        return
    if checks is not None:
        state = checks.steps_batch(steps, defer_schema=True)
        frames = _frames_out(steps)
        message: tuple[Any, ...] = ("steps", steps, state, None if frames is None else frames[0])
    else:
        behind = sender.behind()
        frames = _frames_decoded_here(steps, first) if behind else None
        message = ("check", steps, behind and steps_are_valid(steps), None if frames is None else frames[0])
    _send(sender, message, None if frames is None else frames[1])


def _send_apart(sender: Sender, steps: StepsApart, first: int) -> None:
    """Send steps whose frames the fast walk kept apart: with the frames decoded here while the child is
    behind (as :func:`_send_steps` would, if they all pass), else with their text, for the child to decode.
    Every slot of shared memory taken (:mod:`.sharedtext`) means the child is behind too."""
    from .rules import decode_frame_texts
    from .schema import steps_are_valid

    plain = list(steps)  # marshal takes lists, not their subclasses
    if sender.behind() or (sender.slots is not None and sender.slots.full()):
        decoded = decode_frame_texts(steps.lengths, steps.texts, first)
        if decoded is not None:
            _send(sender, ("check", plain, steps_are_valid(plain), decoded[0]), decoded[1])
            return
    _send(sender, ("texts", plain, steps.lengths), steps.texts)


def _frames_out(steps: list[Any]) -> tuple[list[int], list[bytes]] | None:
    """Take the checked steps' decoded frames out of them: their lengths (-1: none) and the frames,
    or None if no step has one.

    The frames follow their message as one more message, written straight from these bytes objects
    (:meth:`Sender.send`, ``writev``) and received as one bytes object, from which the writer builds
    its image column (:class:`~.columns.ImageColumn`) without a bytes object per frame. Marshalled
    one by one, ``marshal.loads`` and the join into the column took ~0.2 s of the writer's CPU on
    100 MB of frames (py-spy, loaded machine); joined and marshalled, every frame was copied three
    times on the way (the join, marshal's buffer, ``marshal.loads``).
    """
    images = [step.pop("image", None) for step in steps]
    if images.count(None) == len(images):
        return None
    return [-1 if image is None else len(image) for image in images], [image for image in images if image]


def _frames_decoded_here(steps: list[Any], first: int) -> tuple[list[int], list[bytes]] | None:
    """Decode and check the frames of ``steps`` (the batch from step ``first`` on) here, and take them
    out of the steps as :func:`_frames_out` does; None, with the steps left whole, if no step has a
    frame or one does not pass (the child then decodes them and reports the file's first error)."""
    from .rules import decode_frame_texts

    try:
        images = [step.get("image") for step in steps]
        if images.count(None) == len(images):
            return None
        decoded = decode_frame_texts([-1 if image is None else 0 for image in images],
                                     [image for image in images if image is not None], first)
    except (TypeError, AttributeError):  # not schema-valid (a step or an image of another type)
        return None
    if decoded is not None:
        for step in steps:
            step.pop("image", None)
    return decoded


def _parts_before_errors(parts: Iterator[tuple[str, Any]],
                         waiting: list[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    """``parts``; if they end in an error while parts still wait for the choice of who checks
    (``waiting``, emptied once sent: header parts, and the fast walk's first steps), check those first
    (here), so that one of them that is invalid is reported before the later error."""
    try:
        yield from parts
    except PipelineError:
        from .builder import EpisodeChecks
        from .parts import STEPS

        checks = EpisodeChecks()
        for name, value in waiting:
            if name == STEPS:
                checks.steps_batch(value)
            else:
                checks.part(name, value)
        raise


# Integer observations of at least this many values are checked by the reader (see checks_here). Measured
# against checking in the child (5 pairs of whole-process runs each): 17 integers per agent step, 0.93x
# the wall time in the child; 128, 0.97x; 42x42, 0.99x; the pixels profile's 84x84 images, 1.05x slower
# and 1.28x the CPU.
INTEGER_VALUES_HERE = 1024


# With the fast walk (fastwalk.py), files whose agent and unit steps are this small, marshalled, on average
# over the first batch, are checked by the reader (see checks_here). Measured, checks in the reader against
# in the child, 5 pairs of whole-process runs each, 100 MB: random seed 8 (~150 bytes a row) 0.895x the
# wall time, random seed 2 (~75) 0.901x, vector (~145) 0.944x; but teams (~280) 1.062x, frames (~3,500)
# 1.041x, long_floats 1.032x.
SMALL_ROW_BYTES = 200


def checks_here(steps: list[Any], *, fast_reader: bool = False) -> bool:
    """Whether the reading process should check the parts itself (True) or leave it to the writer.

    Parsing is the reading process's own work and the slower half on most files, so the checks go
    to the writer, which gets each part as the parser made it. Not for integer observations of
    :data:`INTEGER_VALUES_HERE` values or more (pixels): checked here, they cross the pipe as one byte
    a value (see :func:`pipeline.ingestion.rules.flatten_observation`) instead of nested lists of
    integers, which take longer to send and to receive than to check. (A few integers a step take
    less time to send as they are than to check here, where the parser is the slower half.)
    Frames are the child's to decode and check too, but while it is behind (see :func:`_send_steps`):
    decoded here always, they crossed the pipe as their bytes, a quarter fewer than their base64
    text, but the reader, the slower half on most such files, took the per-step work of it (against
    that, 9 pairs of whole-process runs each, 100 MB: 64x64 PNG on every step 0.934x the wall time;
    32x32, 0.956x; 96x72 next to 128 short floats, 0.933x; frames' 600x400, 0.964x). A file of
    frames and large integer observations has both checked here (:func:`_frames_out`).
    Either way every error is reported in file order: the writer's come first (see :func:`_feed`).

    ``fast_reader``: the steps are parsed by the fast walk, which leaves the reader the faster half on
    most files; then rows of :data:`SMALL_ROW_BYTES` or less (a classic-control run, a few numbers an
    agent) are checked here too, where the writer's work per row made it the slower half.
    """
    return _large_integers(steps) or (fast_reader and _row_bytes(steps) <= SMALL_ROW_BYTES)


def _large_integers(steps: list[Any]) -> bool:
    """Whether the first agent step's observation holds :data:`INTEGER_VALUES_HERE` integers or more."""
    try:
        for step in steps:
            for agent_step in step.get("agent_steps") or ():
                obs = agent_step["observation_space"]
                if type(obs[0]) is int:
                    return len(obs) >= INTEGER_VALUES_HERE
                return (type(obs[0]) is list and type(obs[0][0]) is int
                        and len(obs) * len(obs[0]) >= INTEGER_VALUES_HERE)
    except (TypeError, KeyError, AttributeError, IndexError):
        pass
    return False


def _row_bytes(steps: list[Any]) -> float:
    """The marshalled size of ``steps`` per agent and unit step in them (infinite without any)."""
    try:
        agents = [agent for step in steps for agent in step.get("agent_steps") or ()]
        rows = len(agents) + sum(len(agent.get("unit_steps") or ()) for agent in agents)
        return len(marshal.dumps(steps)) / rows if rows else float("inf")
    except (TypeError, AttributeError, ValueError):  # not schema-valid: the child checks it, as usual
        return float("inf")


def _send_part(sender: Sender, checks: Any, name: str, value: Any) -> None:
    """A header part: checked here (``checks``), or sent as it is for the writer to check."""
    if checks is None:
        _send(sender, ("part", name, value))
    else:
        _send(sender, ("header", checks.part(name, value)))


class _ChildReported(Exception):
    def __init__(self, error: PipelineError) -> None:
        self.error = error


def _send(sender: Sender, message: tuple[Any, ...], frames: Sequence[bytes | memoryview] | None = None) -> None:
    """Send ``message`` and its second part, ``frames`` (decoded frames, or their text; see
    :func:`_frames_out`): in a slot of shared memory when one is free (:mod:`.sharedtext`), the
    message then saying which, else as the message after it."""
    conn = sender.conn
    if sender.replied():  # the child has started, or stopped at an error (then nothing after it matters)
        reply = _receive(conn, started=sender)
        if reply != _STARTED:
            raise _ChildReported(reply[1])
    slots = sender.slots
    if frames is not None and slots is not None:
        size = sum(map(len, frames))
        slot = slots.put(frames, size)
        if slot is not None:
            message, frames = ("slot", slot, size, message), None
    if not sender.send(marshal.dumps(message), frames):
        raise _ChildReported(_receive(conn)[1])


_STARTED = ("started",)  # the child's first message, once it has imported what it needs


def _receive(conn: _Channel, started: Sender | None = None) -> tuple[Any, ...]:
    """The child's next reply, past its "started" message (which tells ``started``, if given)."""
    try:
        reply = conn.recv()
        if reply == _STARTED:
            if started is not None:
                started.child_started()
                return reply
            reply = conn.recv()
        return reply
    except (EOFError, ConnectionResetError):
        return ("error", LakeError("the process checking and writing the episode died"))


def _stop(sender: Sender) -> PipelineError | None:
    """Ask the child to stop, after what was queued for it; return the error it found first, if any."""
    conn = sender.conn
    if sender.send(marshal.dumps(("stop",))):
        sender.flush()
    reply = _receive(conn)
    return reply[1] if reply[0] == "error" and reply[1] is not None else None


def _child(conn: _Channel, folder: Path | None, close_in_child: tuple[int, ...], slots: TextSlots) -> None:
    from .builder import EpisodeChecks, EpisodeTabulator, Facts
    from .rules import decode_frame_texts

    for fd in close_in_child:
        os.close(fd)
    slots.as_child()
    keep_pandas_out()  # pyarrow would import it on our first pa.array while the reader waits
    _keep_freed_memory()
    gc.disable()  # as in the single-process path: parsed JSON is acyclic
    tabulator = EpisodeTabulator(folder)
    checks = EpisodeChecks()  # for the parts the reader leaves to us ("check", "part")
    conn.send(_STARTED)
    receiver = conn.receiver()
    try:
        while True:
            data = receiver.recv_view()  # until the next read: marshal copies what it loads
            size = len(data)
            message = marshal.loads(data)
            slot, length = None, 0
            if message[0] == "slot":  # its second part is in shared memory, not the next message (_send)
                _, slot, length, message = message
            kind = message[0]
            # The message's size stands for the text the steps came from (see tabulate.BATCH_TEXT_BYTES).
            if kind == "check":
                lengths = message[3]
                # Frames the reader decoded, stored as they are: memory of their own.
                decoded = None if lengths is None else (lengths, [_attachment(receiver, slots, slot, length)])
                state = checks.steps_batch(message[1], schema_valid=message[2])
                tabulator.steps_batch(message[1], state, decoded,
                                      text_bytes=size + (len(decoded[1][0]) if decoded is not None else 0))
            elif kind == "texts":  # steps without their frames, whose base64 text is the second part
                texts = _attachment(receiver, slots, slot, length, keep=False)
                steps, lengths = message[1], message[2]
                try:  # decoded into frames of their own: the slot can be used again at once
                    decoded = decode_frame_texts(lengths, _cut_at(texts, lengths), checks.steps, steps)
                finally:
                    if slot is not None:
                        slots.release(slot)
                state = checks.steps_batch(steps)
                tabulator.steps_batch(steps, state, decoded, text_bytes=size + len(texts))
            elif kind == "steps":
                lengths = message[3]
                if lengths is None:
                    tabulator.steps_batch(message[1], message[2], text_bytes=size)
                else:  # the batch's frames: the second part (see _frames_out)
                    frames = _attachment(receiver, slots, slot, length)
                    tabulator.steps_batch(message[1], message[2], (lengths, [frames]),
                                          text_bytes=size + len(frames))
            elif kind == "part":
                tabulator.header(checks.part(message[1], message[2]))
            elif kind == "header":
                tabulator.header(message[1])
            elif kind == "ahead":  # the file ends soon: write what is pending (parts.FLUSH_AHEAD_BYTES)
                tabulator.flush_ahead()
            elif kind == "finish":
                source, digest, consumed = message[1]
                conn.send(("done", tabulator.finish(Facts(source, digest, consumed))))
                return
            else:  # "stop": the reader failed on its own
                tabulator.abort()
                conn.send(("stopped", None))
                return
    except EOFError:  # the reader is gone (killed): leave its staging folder to gc
        tabulator.abort()
    except PipelineError as exc:
        tabulator.abort()
        _report(conn, exc)
    except BaseException as exc:  # every failure must reach the reader
        tabulator.abort()
        _report(conn, LakeError(f"writing the episode failed unexpectedly: {exc!r}"))
    finally:
        conn.close()


def _keep_freed_memory() -> None:
    """Have malloc reuse the blocks this process frees (see _MMAP_THRESHOLD); only in the child, which
    is ours alone (a library does not change its caller's malloc). glibc only: elsewhere nothing."""
    import ctypes  # pyarrow, imported next, imports it too

    with contextlib.suppress(OSError, AttributeError):
        mallopt = ctypes.CDLL(None).mallopt
        for option, value in (_MMAP_THRESHOLD, _TRIM_THRESHOLD):
            mallopt(option, value)


def _attachment(receiver: Receiver, slots: TextSlots, slot: int | None, length: int, *,
                keep: bool = True) -> Any:
    """A message's second part (see :func:`_send`): the ``length`` bytes in shared ``slot``, or the next
    message if ``slot`` is None. ``keep``: as bytes of its own (and the slot given back), else a view
    that is valid until the next message is read, or until the caller gives the slot back."""
    if slot is None:
        return receiver.recv_bytes() if keep else receiver.recv_view()
    view = slots.view(slot, length)
    if not keep:
        return view
    data = bytes(view)
    slots.release(slot)
    return data


def _cut_at(data: bytes | memoryview, lengths: list[int]) -> list[memoryview]:
    """``data`` cut into pieces of ``lengths`` (those of -1 skipped)."""
    view, at, pieces = memoryview(data), 0, []
    for length in lengths:
        if length >= 0:
            pieces.append(view[at : at + length])
            at += length
    return pieces


def _report(conn: _Channel, error: PipelineError) -> None:
    """Send the error, then drain the pipe until the reader hangs up (so it never blocks on us)."""
    try:
        conn.send(("error", error))
        while True:
            conn.recv_bytes()
    except (EOFError, OSError):
        pass
