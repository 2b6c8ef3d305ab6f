"""The two-process ingest (pipeline/split.py) behaves exactly like the single-process one."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from pipeline import ingest, validate
from pipeline.ingestion import parallel, parts
from pipeline.lake.check import check
from pipeline.lake.layout import list_episodes
from pipeline.lake.maintenance import gc
from tests.helpers import PNG, PNG_B64, episode, full_episode, png_bytes, write_json
from tests.ingestion.test_bad_input import BUGS as KNOWN_LIMITATIONS
from tests.ingestion.test_roundtrip import pixel_episode
from tests.lake.test_reliability import big_episode, episode_is_whole

ROOT = Path(__file__).resolve().parents[2]
BAD = sorted(p for p in (ROOT / "tests" / "data" / "bad").iterdir() if p.name not in KNOWN_LIMITATIONS)
TABLES = ("episodes", "episode_agents", "steps", "agent_steps", "unit_steps")


def _tables(lake: Path) -> dict[str, object]:
    (location,) = list_episodes(lake)
    tables = {t: pq.read_table(location.table(t)) for t in TABLES}
    tables["episodes"] = tables["episodes"].drop(["ingested_at"])
    return tables


def _large_pixel_episode() -> dict[str, object]:
    """pixel_episode's kinds after a first observation large enough for the reader to check (checks_here)."""
    document = pixel_episode()
    first = document["inference"]["steps"][0]["agent_steps"][0]
    first["observation_space"] = [[(row * 32 + column) % 256 for column in range(32)] for row in range(32)]
    return document


# pixels: observations that cross the pipe as bytes, next to ones that cross as numbers (checked by
# the reader when the first is large, by the child when it is a few integers).
@pytest.mark.parametrize("make", [full_episode, pixel_episode, _large_pixel_episode, lambda: None],
                         ids=["full", "pixels", "large-pixels", "multi-agent-units"])
def test_both_paths_write_identical_tables(tmp_path, make):
    document = make()
    path = write_json(tmp_path / "e.json", document) if document else big_episode(tmp_path / "e.json", 400)
    single = ingest(path, lake=tmp_path / "one", parallel=False)
    split = ingest(path, lake=tmp_path / "two", parallel=True)
    assert single.status == split.status == "ingested"
    assert (single.episode_id, single.steps, single.agent_steps, single.unit_steps) == \
        (split.episode_id, split.steps, split.agent_steps, split.unit_steps)
    one, two = _tables(tmp_path / "one"), _tables(tmp_path / "two")
    for table in TABLES:
        assert one[table].equals(two[table]), table


def _steps_with(observation: object, image: str | None = None) -> list[dict[str, object]]:
    steps = episode(steps=3)["inference"]["steps"]
    for step in steps:
        step["agent_steps"][0]["observation_space"] = observation
        if image is not None:
            step["image"] = image
    return steps


@pytest.mark.parametrize("observation,image,here", [
    ([[1] * 84] * 84, None, True),  # pixels: one byte a value across the pipe
    ([5] * parallel.INTEGER_VALUES_HERE, None, True),
    ([5] * (parallel.INTEGER_VALUES_HERE - 1), None, False),  # a few integers: sent as they are
    ([[1, 2], [3, 4]], None, False),
    ([0.5] * 4096, None, False),  # floats: always the child's
    ([], None, False),
    ([0.5, 1.5], PNG_B64, False),  # frames: decoded by the child
    ([[1] * 84] * 84, PNG_B64, True),  # frames next to pixels: both here
])
def test_who_checks_is_chosen_by_the_first_batch(observation, image, here):
    assert parallel.checks_here(_steps_with(observation, image)) is here


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_both_paths_report_the_same_first_error(path):
    single, split = validate(path, parallel=False), validate(path, parallel=True)
    assert single.status == split.status == "invalid"
    assert (split.error.rule, split.error.path, split.error.step, str(split.error)) == \
        (single.error.rule, single.error.path, single.error.step, str(single.error))


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_the_same_first_error_when_the_reader_takes_the_schema_check(path, monkeypatch):
    """While the child is behind, the reader schema-checks batches for it (Sender.behind); a batch
    that fails is left whole to the child, so the file's first error is still the one reported."""
    monkeypatch.setattr(parallel.Sender, "behind", lambda self: True)
    single, split = validate(path, parallel=False), validate(path, parallel=True)
    assert single.status == split.status == "invalid"
    assert (split.error.rule, split.error.path, split.error.step, str(split.error)) == \
        (single.error.rule, single.error.path, single.error.step, str(single.error))


@pytest.mark.parametrize("frames", [False, True], ids=["no-frames", "frames"])
def test_tables_are_the_same_when_the_reader_takes_the_schema_check(tmp_path, monkeypatch, frames):
    """... and decodes the frames (steps without one among them)."""
    path = big_episode(tmp_path / "e.json", 600)
    if frames:
        document = json.loads(path.read_text())
        for k, step in enumerate(document["inference"]["steps"]):
            if k % 7:
                step["image"] = PNG_B64
        path = write_json(tmp_path / "frames.json", document)
    assert ingest(path, lake=tmp_path / "one", parallel=False).status == "ingested"
    monkeypatch.setattr(parallel.Sender, "behind", lambda self: True)
    assert ingest(path, lake=tmp_path / "two", parallel=True).status == "ingested"
    one, two = _tables(tmp_path / "one"), _tables(tmp_path / "two")
    for table in TABLES:
        assert one[table].equals(two[table]), table


SCRIPT = ("import sys; from pipeline import ingest; "
          "print(ingest(sys.argv[1], lake=sys.argv[2], parallel=True).status)")


@pytest.mark.slow
def test_sigkill_of_the_reader_leaves_whole_episode_or_nothing(tmp_path):
    source = big_episode(tmp_path / "big.json", 2000)
    lake = tmp_path / "lake"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", SCRIPT, str(source), str(tmp_path / "timing")], env=env, check=True)
    duration = time.monotonic() - started
    rng = random.Random(7)
    for _ in range(10):
        process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(source), str(lake)], env=env,
                                   stdout=subprocess.DEVNULL)
        time.sleep(duration * rng.uniform(0.05, 1.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        locations = list_episodes(lake)
        assert all(episode_is_whole(location) for location in locations)
        assert not lake.exists() or check(lake, deep=True).ok
        # The orphaned child sees the pipe close and exits; its copy of the lock is already closed.
        deadline = time.monotonic() + 30
        while gc(lake).running:
            assert time.monotonic() < deadline, "a staging folder stayed locked after its reader died"
            time.sleep(0.1)
        assert not (lake / "_staging").exists() or list((lake / "_staging").iterdir()) == []
        for location in locations:
            from pipeline.lake.maintenance import remove_episodes
            remove_episodes(lake, [location])


def test_large_files_are_split_by_default_when_two_cores_are_free(tmp_path, monkeypatch):
    import importlib

    from pipeline.ingestion import parallel as split

    ingest_module = importlib.import_module("pipeline.ingestion.run")
    path = big_episode(tmp_path / "e.json", 300)
    monkeypatch.setattr(split, "SPLIT_MIN_BYTES", path.stat().st_size)  # "large" = this file
    calls = []
    real = split.build_in_two_processes
    monkeypatch.setattr(ingest_module, "build_in_two_processes", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(split, "usable_cores", lambda: 2)
    monkeypatch.setattr(split, "fork_is_safe", lambda: True)  # this test process has imported polars
    default = ingest(path, lake=tmp_path / "default")
    assert default.status == "ingested" and calls == [1]
    assert ingest(path, lake=tmp_path / "single", parallel=False).status == "ingested"
    assert calls == [1]
    one, two = _tables(tmp_path / "single"), _tables(tmp_path / "default")
    for table in TABLES:
        assert one[table].equals(two[table]), table
    # One core, a smaller file, or a stream of unknown size: one process.
    monkeypatch.setattr(split, "usable_cores", lambda: 1)
    assert not split.split_pays(path.stat().st_size)
    monkeypatch.setattr(split, "usable_cores", lambda: 2)
    assert split.split_pays(path.stat().st_size)
    assert not split.split_pays(path.stat().st_size - 1)
    assert not split.split_pays(None)
    with open(path, "rb") as stream:
        assert ingest(stream, lake=tmp_path / "stream", name="e.json").status == "ingested"
    assert calls == [1]


def test_the_writer_process_works_without_importing_pandas(tmp_path):
    """In a process that has not imported pandas, the forked writer keeps pyarrow from importing it
    (0.27 s it would spend before writing anything) and still writes the same tables."""
    path = write_json(tmp_path / "e.json", full_episode())
    script = (
        "import sys; from pipeline import ingest; "
        f"r = ingest({str(path)!r}, lake={str(tmp_path / 'split')!r}, parallel=True); "
        "print(r.status, 'pandas' in sys.modules); "
        "import pyarrow as pa; from pipeline.ingestion.nopandas import keep_pandas_out; keep_pandas_out(); "
        "print(pa.array([1.0]).type, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    # The child ran with pandas blocked (the parent had not imported it), and blocking works:
    assert out.stdout.split() == ["ingested", "False", "double", "False"], out.stderr
    assert ingest(path, lake=tmp_path / "single", parallel=False).status == "ingested"
    one, two = _tables(tmp_path / "single"), _tables(tmp_path / "split")
    for table in TABLES:
        assert one[table].equals(two[table]), table


# Frames are decoded and checked by the child, or, next to large integer observations, by the reading
# process (parallel.checks_here), which leaves the schema check of deferred batches to the child: whichever
# finds it, the first broken rule in file order is the one reported.
_BREAKS = {
    "base64": lambda step: step.update(image=PNG_B64[:-3] + "!=="),
    "damaged": lambda step: step.update(image=base64.b64encode(PNG[:-5] + b"\0" * 5).decode()),
    "schema": lambda step: step["agent_steps"][0].update(reward="high"),
    "number": lambda step: step.update(number=3),
}


@pytest.mark.parametrize("who", ["child", "reader-behind", "reader-pixels"])
@pytest.mark.parametrize("first,second", [(10, 700), (700, 10), (300, 301), (301, 300), (0, 899)])
@pytest.mark.parametrize("kinds", [("base64", "schema"), ("schema", "damaged"), ("damaged", "number"),
                                   ("number", "base64")], ids="-then-".join)
def test_frames_report_the_first_error_in_file_order_on_both_paths(tmp_path, monkeypatch, kinds, first, second, who):
    """Frames decoded by the child; by the reader while the child is behind (stateless checks, batch by
    batch); or by the reader next to large integer observations (every check)."""
    document = episode(900)
    for step in document["inference"]["steps"]:
        step["image"] = PNG_B64
        if who == "reader-pixels":
            step["agent_steps"][0]["observation_space"] = [[7] * 32] * 32
    if who == "reader-behind":
        monkeypatch.setattr(parallel.Sender, "behind", lambda self: True)
    for kind, at in zip(kinds, (first, second), strict=True):
        _BREAKS[kind](document["inference"]["steps"][at])
    path = write_json(tmp_path / "frames.json", document)
    single, split = validate(path, parallel=False), validate(path, parallel=True)
    assert single.status == split.status == "invalid"
    assert single.error.step is not None
    assert (split.error.rule, split.error.path, str(split.error)) == \
        (single.error.rule, single.error.path, str(single.error))


class _Pipe:
    """A real pipe standing in for the one to the child: the sender writes its end; the test reads the
    messages back with ``multiprocessing``'s ``Connection.recv_bytes``, as the child does."""

    def __init__(self) -> None:
        from multiprocessing.connection import Connection

        self._read, self._write = os.pipe()
        self.reader = Connection(self._read, writable=False)
        self._replies, self._reply = os.pipe()  # the child's replies: none here

    def outgoing_fileno(self) -> int:
        return self._write

    def incoming_fileno(self) -> int:
        return self._replies

    def messages(self, count: int) -> list[bytes]:
        return [self.reader.recv_bytes() for _ in range(count)]

    def hang_up(self) -> None:
        """The child is gone: its end closes."""
        self.reader.close()

    def close(self) -> None:
        os.close(self._write)
        os.close(self._replies)
        os.close(self._reply)
        if not self.reader.closed:
            self.reader.close()


def _reading(pipe: _Pipe, count: int) -> tuple[threading.Thread, list[bytes]]:
    received: list[bytes] = []
    thread = threading.Thread(target=lambda: received.extend(pipe.messages(count)))
    thread.start()
    return thread, received


def test_the_sender_writes_every_message_in_order():
    """Every message arrives whole and in order, framed as the child's ``recv_bytes`` reads it, also
    those larger than the pipe and than what the sender queues at once."""
    from pipeline.ingestion.sender import Sender

    pipe = _Pipe()
    messages = [bytes([i % 256]) * (i * 997) for i in range(150)] + [b""]  # ~11 MB, and an empty one
    reader, received = _reading(pipe, len(messages))
    sender = Sender(pipe)
    assert all(sender.send(m) for m in messages)
    assert sender.flush()
    sender.close()
    reader.join()
    pipe.close()
    assert received == messages


def test_a_message_sent_in_pieces_arrives_as_one_after_the_one_it_follows():
    """A batch's frames follow its message, written from the frames themselves (never joined) and
    received by the child as one bytes object; pieces may be empty or larger than the pipe."""
    from pipeline.ingestion.sender import Sender

    pipe = _Pipe()
    batches = [[bytes([k]) * (k * 7919) for k in range(n)] for n in (0, 1, 3, 90)] + [[b"a", b"", b"b" * 2_000_000]]
    reader, received = _reading(pipe, 2 * len(batches))
    sender = Sender(pipe)
    for i, pieces in enumerate(batches):
        assert sender.send(b"message %d" % i, pieces)
    assert sender.flush()
    sender.close()
    reader.join()
    pipe.close()
    assert received == [m for i, pieces in enumerate(batches) for m in (b"message %d" % i, b"".join(pieces))]


@pytest.mark.parametrize("started", [True, False], ids=["child-started", "child-starting"])
def test_the_sender_queues_a_bounded_amount_while_the_writer_does_not_read(started):
    from pipeline.ingestion.sender import Sender

    pipe = _Pipe()  # nobody reads yet: the writer is busy (or still starting)
    sender = Sender(pipe)
    if started:
        sender.child_started()
    bound = Sender.MAX_PENDING_BYTES if started else Sender.STARTING_PENDING_BYTES
    chunk = b"x" * (256 * 1024)
    count = 2 * Sender.STARTING_PENDING_BYTES // len(chunk)
    sent: list[bool] = []
    feeder = threading.Thread(target=lambda: sent.extend(sender.send(chunk) for _ in range(count)))
    feeder.start()
    feeder.join(timeout=1.0)
    assert feeder.is_alive()  # it waits for room: the queue never holds all of it
    assert bound - len(chunk) < sender._pending <= bound + len(chunk)
    reader, received = _reading(pipe, count)
    feeder.join()
    assert sender.flush()
    sender.close()
    reader.join()
    pipe.close()
    assert sent == [True] * count and received == [chunk] * count


def test_the_sender_holds_the_queue_to_its_usual_size_once_the_child_started():
    import time

    from pipeline.ingestion.sender import Sender

    pipe = _Pipe()
    sender = Sender(pipe)
    chunk = b"x" * (256 * 1024)
    count = Sender.STARTING_PENDING_BYTES // len(chunk) - 1
    assert all(sender.send(chunk) for _ in range(count))  # room for all while the child starts
    sender.child_started()
    later = threading.Thread(target=sender.send, args=(chunk,))
    later.start()
    later.join(timeout=0.5)
    assert later.is_alive()  # no room now, until the queue is below its usual size
    reader, received = _reading(pipe, count + 1)
    deadline = time.monotonic() + 10
    while later.is_alive():
        assert sender._pending <= Sender.STARTING_PENDING_BYTES
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert sender.flush()
    sender.close()
    reader.join()
    pipe.close()
    assert len(received) == count + 1


def test_the_child_counts_as_behind_only_after_the_reader_waited_for_it():
    """The reader takes on the schema check only while it would otherwise wait for room in the pipe."""
    from pipeline.ingestion.sender import Sender

    pipe = _Pipe()
    sender = Sender(pipe)
    sender.child_started()
    reader, received = _reading(pipe, 2)
    assert sender.send(b"small")  # fits in the pipe: no wait
    assert not sender.behind()
    assert sender.send(b"x" * (3 * Sender.MAX_PENDING_BYTES)) and sender.flush()  # larger than pipe and queue
    reader.join()
    assert [sender.behind() for _ in range(Sender.BEHIND_MESSAGES + 2)] == \
        [True] * Sender.BEHIND_MESSAGES + [False, False]
    sender.close()
    pipe.close()
    assert len(received) == 2


def test_the_sender_reports_a_broken_pipe():
    from pipeline.ingestion.sender import Sender

    pipe = _Pipe()
    reader, received = _reading(pipe, 3)
    sender = Sender(pipe)
    for _ in range(3):
        assert sender.send(b"m")
    assert sender.flush()
    reader.join()
    pipe.hang_up()  # the writer is gone
    sender.send(b"m" * 200_000)  # more than the pipe holds: the write fails
    assert not sender.flush()  # the reader asks it for its error instead
    assert not sender.send(b"later")
    sender.close()
    pipe.close()
    assert received == [b"m"] * 3


def test_a_last_message_larger_than_the_pipe_is_written_before_the_reply_is_awaited(tmp_path, monkeypatch):
    """The reader's pipe end is non-blocking and what does not fit waits in the sender's queue: the
    end of the file (here a last frame of ~2 MB, in a pipe of one page) must still reach the child,
    or the reader would wait for a reply that never comes."""
    import io

    from PIL import Image

    from pipeline.ingestion import parallel

    monkeypatch.setattr(parallel, "PIPE_BYTES", 4096)
    noise = Image.frombytes("RGB", (900, 800), random.Random(3).randbytes(900 * 800 * 3))
    big = io.BytesIO()
    noise.save(big, format="PNG")
    document = episode(40)
    document["inference"]["steps"][-1]["image"] = base64.b64encode(big.getvalue()).decode()
    path = write_json(tmp_path / "big-last-frame.json", document)
    results: list = []
    worker = threading.Thread(target=lambda: results.append(ingest(path, lake=tmp_path / "lake", parallel=True)),
                              daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the ingest hung waiting for the child's reply"
    assert results[0].status == "ingested"
    steps = pq.read_table(next((tmp_path / "lake").rglob("steps.parquet"))).column("image").to_pylist()
    assert steps[-1] == big.getvalue()


@pytest.mark.parametrize("split", [False, True], ids=["one-process", "two-processes"])
def test_rows_written_ahead_of_the_end_change_nothing_but_row_groups(tmp_path, monkeypatch, split):
    """Near the end of the file the pending rows go to the writer early (parts.FLUSH_AHEAD_BYTES),
    so that less is left to write after the parse: the tables are the same, in more row groups."""
    path = big_episode(tmp_path / "e.json", 1500)  # past the small-episode limits
    monkeypatch.setattr(parts, "FLUSH_AHEAD_BYTES", ())
    assert ingest(path, lake=tmp_path / "plain", parallel=split).status == "ingested"
    size = path.stat().st_size
    monkeypatch.setattr(parts, "FLUSH_AHEAD_BYTES", (size // 2, size // 4))
    assert ingest(path, lake=tmp_path / "ahead", parallel=split).status == "ingested"
    plain, ahead = _tables(tmp_path / "plain"), _tables(tmp_path / "ahead")
    for table in TABLES:
        assert ahead[table].equals(plain[table]), table
    groups = {lake: pq.ParquetFile(list_episodes(tmp_path / lake)[0].table("agent_steps")).num_row_groups
              for lake in ("plain", "ahead")}
    assert groups["ahead"] == groups["plain"] + 2


def test_the_flush_ahead_marks_fire_once_each_and_never_for_a_stream(monkeypatch):
    monkeypatch.setattr(parts, "FLUSH_AHEAD_BYTES", (800, 300))
    source = SimpleNamespace(size=1000, bytes_read=0)
    due = parts.flush_ahead_due(source)
    fired = []
    for read in (100, 150, 300, 600, 650, 750, 1000, 1000):
        source.bytes_read = read
        fired.append(due())
    assert fired == [False, False, True, False, False, True, False, False]
    source.bytes_read = 0
    jump = parts.flush_ahead_due(source)  # both marks passed between two batches: one flush
    source.bytes_read = 900
    assert [jump(), jump()] == [True, False]
    stream = SimpleNamespace(size=None, bytes_read=10**9)  # a pipe: its size is unknown
    assert not parts.flush_ahead_due(stream)()


def test_small_rows_are_checked_by_the_reader_only_when_the_fast_walk_parses():
    """A few numbers an agent step (~150 bytes marshalled): the writer's per-row work is the slower half
    once orjson parses, so the reader checks them; with ijson parsing, the reader stays the slower half.
    Large rows (a 600-float observation) stay with the writer either way."""
    small = _steps_with([0.5, 1.5])
    large = _steps_with([0.5] * 600)
    assert parallel.checks_here(small, fast_reader=True) is True
    assert parallel.checks_here(small) is False
    assert parallel.checks_here(large, fast_reader=True) is False
    assert parallel.checks_here([{"number": 0}], fast_reader=True) is False  # no agent steps: nothing to weigh


def _frames_document(variant: str) -> tuple[dict[str, object], str]:
    """An episode of 1,000 steps (several batches of the fast walk) with frames of many colours, and
    the way it is written (see test_frames_kept_apart_...)."""
    frames = [base64.b64encode(png_bytes(4, 3, (i, 255 - i, (7 * i) % 256))).decode() for i in range(64)]
    if variant == "escaped-slashes":
        frames = [frame for frame in frames if "/" in frame] or frames
        assert any("/" in frame for frame in frames)
    document = episode(1000)
    for i, step in enumerate(document["inference"]["steps"]):
        step["image"] = None if i % 7 == 3 else frames[i % len(frames)]
        # Rows of more than parallel.SMALL_ROW_BYTES, which the child checks.
        step["agent_steps"][0]["observation_space"] = [i + j / 8 for j in range(24)]
        if variant == "metric-named-image" and i == 900:
            step["agent_steps"][0]["custom_metrics"] = {"image": frames[0]}
    return document, variant


# Shared slots for the frames' text (sharedtext.py), as (slots, bytes each): the usual ones; one slot (often
# taken: the reader decodes the batch itself); slots smaller than any batch's text
# (every text through the pipe).
SLOT_SIZES = {"slots": None, "one-slot": (1, 256 * 1024), "no-slot-fits": (2, 64)}


def _slot_sizes(monkeypatch, how: str) -> list[int]:
    """Use the slots ``how`` names (see SLOT_SIZES); the list returned counts the texts put in one."""
    from pipeline.ingestion import sharedtext

    if SLOT_SIZES[how] is not None:
        monkeypatch.setattr(sharedtext, "SLOTS", SLOT_SIZES[how][0])
        monkeypatch.setattr(sharedtext, "SLOT_BYTES", SLOT_SIZES[how][1])
    put, puts = sharedtext.TextSlots.put, []

    def counted(self, pieces, size):
        slot = put(self, pieces, size)
        puts.extend([] if slot is None else [slot])
        return slot

    monkeypatch.setattr(sharedtext.TextSlots, "put", counted)
    return puts


@pytest.mark.parametrize("slots", list(SLOT_SIZES))
@pytest.mark.parametrize("variant", ["compact", "indented", "escaped-slashes", "metric-named-image"])
def test_frames_kept_apart_by_the_reader_are_stored_as_in_one_process(tmp_path, monkeypatch, variant, slots):
    """The two-process reader hands frames over as their text, apart from the steps (framesapart.py),
    in shared slots or through the pipe; a file whose frames cannot all be cut (escaped slashes, a metric
    named image) is parsed whole from where that shows. Either way the lake holds what one process
    stores, frame for frame."""
    puts = _slot_sizes(monkeypatch, slots)
    sent_apart = []
    send_apart = parallel._send_apart
    monkeypatch.setattr(parallel, "_send_apart", lambda sender, steps, first: (sent_apart.append(first),
                                                                                send_apart(sender, steps, first)))
    document, how = _frames_document(variant)
    text = json.dumps(document, indent=2 if how == "indented" else None,
                      separators=(",", ": ") if how == "indented" else (",", ":"))
    if how == "escaped-slashes":
        text = text.replace("/", "\\/")
    path = tmp_path / "e.json"
    path.write_text(text)
    single = ingest(path, lake=tmp_path / "one", parallel=False)
    split = ingest(path, lake=tmp_path / "two", parallel=True)
    assert single.status == split.status == "ingested", (single.error, split.error)
    one, two = _tables(tmp_path / "one"), _tables(tmp_path / "two")
    for table in TABLES:
        assert one[table].equals(two[table]), table
    # Apart after the first step and batch (on which the choice of who checks is made); from the
    # batch with the metric on, whole; never with escaped slashes.
    if how == "escaped-slashes":
        assert sent_apart == []
    else:
        assert sent_apart[0] > 1 and len(sent_apart) > 1
        assert max(sent_apart) < 900 if how == "metric-named-image" else max(sent_apart) > 900
    images = one["steps"].column("image").to_pylist()
    assert images.count(None) == sum(1 for i in range(1000) if i % 7 == 3)
    assert images[0] == base64.b64decode(document["inference"]["steps"][0]["image"])
    assert (len(puts) > 0) == (slots != "no-slot-fits" and how != "escaped-slashes")


@pytest.mark.parametrize("slots", list(SLOT_SIZES))
@pytest.mark.parametrize("first,second", [(10, 700), (700, 10), (0, 899)])
@pytest.mark.parametrize("kinds", [("base64", "damaged"), ("damaged", "schema")], ids="-then-".join)
def test_frames_in_shared_slots_report_the_first_error_in_file_order(tmp_path, monkeypatch, kinds, first, second,
                                                                     slots):
    _slot_sizes(monkeypatch, slots)
    document, _ = _frames_document("compact")
    for kind, at in zip(kinds, (first, second), strict=True):
        _BREAKS[kind](document["inference"]["steps"][at])
    path = write_json(tmp_path / "frames.json", document)
    single, split = validate(path, parallel=False), validate(path, parallel=True)
    assert single.status == split.status == "invalid"
    assert (split.error.rule, split.error.path, str(split.error)) == \
        (single.error.rule, single.error.path, str(single.error))


@pytest.mark.parametrize("where", [3, 700], ids=["first-batch", "later-batch"])
def test_a_damaged_frame_kept_apart_is_refused_with_the_usual_error(tmp_path, where):
    document, _ = _frames_document("compact")
    steps = document["inference"]["steps"]
    frame = base64.b64decode(steps[where - 1]["image"])
    steps[where]["image"] = base64.b64encode(frame[:-5] + b"\x00" * 5).decode()  # IEND damaged
    path = write_json(tmp_path / "e.json", document)
    single = validate(path, parallel=False)
    split = validate(path, parallel=True)
    assert single.status == split.status == "invalid"
    assert str(split.error) == str(single.error)
    assert split.error.path == f"inference.steps[{where}].image"


def test_who_checks_weighs_the_first_batch_not_the_first_step(tmp_path, monkeypatch):
    """The fast walk hands the first step over alone; a first step unlike the rest (here: no frame yet)
    must not decide who checks the whole file."""
    document, _ = _frames_document("compact")
    first = document["inference"]["steps"][0]
    first["image"] = None
    first["agent_steps"][0]["observation_space"] = [0.5]
    assert parallel._row_bytes([json.loads(json.dumps(first))]) <= parallel.SMALL_ROW_BYTES  # alone: "here"
    chosen, sent_apart = [], []
    checks_here, send_apart = parallel.checks_here, parallel._send_apart
    monkeypatch.setattr(parallel, "checks_here", lambda steps, **kw: chosen.append((len(steps), checks_here(steps, **kw)))
                        or chosen[-1][1])
    monkeypatch.setattr(parallel, "_send_apart", lambda sender, steps, first: (sent_apart.append(first),
                                                                                send_apart(sender, steps, first)))
    path = write_json(tmp_path / "e.json", document)
    single = ingest(path, lake=tmp_path / "one", parallel=False)
    split = ingest(path, lake=tmp_path / "two", parallel=True)
    assert single.status == split.status == "ingested"
    ((weighed, here),) = chosen
    assert weighed > 1 and not here and sent_apart
    one, two = _tables(tmp_path / "one"), _tables(tmp_path / "two")
    for table in TABLES:
        assert one[table].equals(two[table]), table


@pytest.mark.parametrize("outcome", ["ingested", "exists", "valid", "invalid"])
def test_the_child_is_waited_for_whatever_the_outcome(tmp_path, monkeypatch, outcome):
    """The child that built the episode is left to exit while the reader commits, and waited for after:
    when ingest returns no child of ours is left running (nor unreaped), whatever the outcome."""
    import multiprocessing

    joined: list[object] = []
    real_join = parallel.join_children

    def counting(children):
        joined.extend(children)
        real_join(children)

    monkeypatch.setattr(parallel, "join_children", counting)
    monkeypatch.setattr("pipeline.ingestion.run.join_children", counting)
    document = episode(steps=30)
    if outcome == "invalid":
        document["inference"]["steps"][20]["reward"] = "much"
    path = write_json(tmp_path / "episode.json", document)
    lake = tmp_path / "lake"
    if outcome == "exists":
        ingest(path, lake=lake, parallel=True)
        joined.clear()
    result = validate(path, parallel=True) if outcome == "valid" else ingest(path, lake=lake, parallel=True)
    assert result.status == outcome
    # Each child waited for once (an invalid file is walked twice: fast, then exact, one child each).
    assert joined and len({child.pid for child in joined}) == len(joined)
    assert multiprocessing.active_children() == []  # reaped: no zombie, no process still running
    if outcome in ("ingested", "exists"):
        (location,) = list_episodes(lake)
        assert episode_is_whole(location)
