"""-2**63 is read like any other int64 (pipeline/ingestion/int64min.py), and nothing else changes.

ijson's yajl backend refuses -9223372036854775808 as an "integer overflow"; the reader hands it a stand-in
(an integer near it, rewritten in place) and ``read_batches`` restores it. Pinned here:

* the reader: whatever JSON text, however the stream and ijson cut it into reads, what ijson parses, once
  stand-ins are restored, is exactly what Python's ``json`` reads from the text (ints stay ints, floats
  floats, strings and keys untouched); the hash and byte count are those of the text as written;
* a file holding -2**63 is judged exactly as the same file with -2**63+1 in its place (same length): the
  same status, rule, path, step, byte position and message, valid or not, in both process modes;
* stand-ins never collide with the file's own integers near -2**63, and the window running out fails
  loudly instead of storing a wrong number;
* a token cut across reads of the real reader, plain or compressed, is stored exactly in both modes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
from typing import Any

import ijson
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import ingest, validate
from pipeline.ingestion.int64min import PREFIX
from pipeline.ingestion.source import READ_SIZE, HashingReader
from pipeline.ingestion.tabulate import SMALL_ROWS_VARIABLE
from pipeline.lake.layout import list_episodes
from tests.helpers import episode

INT64_MIN = -(2**63)
TOKEN = str(INT64_MIN)  # "-9223372036854775808"
NEIGHBOUR = str(INT64_MIN + 1)  # same length: yajl reads it natively
# Integers of the window that stand-ins are taken from (the first ones taken, and the far end).
WINDOW = [-9223372036854700000, -9223372036854700001, -9223372036854700002, INT64_MIN + 1, INT64_MIN + 2]
WS = st.sampled_from(["", "", " ", "\n", "\t", "\r\n", "  "])
# Numbers whose text starts like the window's (or is -2**63) but which are not integers of it.
LOOKALIKES = [TOKEN + ".5", TOKEN + ".0", TOKEN + "e0", TOKEN + "E-2", "1e" + TOKEN, "-1.5E" + TOKEN,
              "-922337203685477580", "-92233720368547", "-9223372036854", "-9223372036854699999"]
# Strings made of the pieces that could fool a scan: the token, quotes, backslashes, separators.
STRING_PIECES = [TOKEN, "\\", '"', ",", ":", " ", "-", "[", "9223", "a", "\u00e9", "\\u0022"]


@st.composite
def json_texts(draw: Any, depth: int = 0) -> str:
    """A JSON value as text, with -2**63 and its look-alikes everywhere a number, string or key can be."""
    kinds = ["token", "window", "lookalike", "int", "float", "string"] + (["array", "object"] if depth < 4 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "token":
        return TOKEN
    if kind == "window":
        return str(draw(st.sampled_from(WINDOW)))
    if kind == "lookalike":
        return draw(st.sampled_from(LOOKALIKES))
    if kind == "int":
        return str(draw(st.integers(INT64_MIN, 2**63 - 1)))
    if kind == "float":
        return json.dumps(draw(st.floats(allow_nan=False, allow_infinity=False)))
    if kind == "string":
        return _string(draw)
    items = draw(st.lists(json_texts(depth + 1), max_size=4))
    if kind == "array":
        inner = ",".join(draw(WS) + item + draw(WS) for item in items)
        return "[" + draw(WS) + inner + "]"
    inner = ",".join(draw(WS) + _string(draw) + draw(WS) + ":" + draw(WS) + item + draw(WS) for item in items)
    return "{" + draw(WS) + inner + "}"


def _string(draw: Any) -> str:
    text = "".join(draw(st.lists(st.sampled_from(STRING_PIECES), max_size=6)))
    return json.dumps(text, ensure_ascii=draw(st.booleans()))


class _Reads(io.RawIOBase):
    """A stream whose reads return the given sizes in turn (as a pipe or a decompressor may)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data, self._sizes, self._at, self._turn = data, sizes, 0, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), self._sizes[self._turn % len(self._sizes)], len(self._data) - self._at)
        self._turn += 1
        buffer[:size] = self._data[self._at : self._at + size]
        self._at += size
        return size


def _handed_to_ijson(data: bytes, reads: list[int], buffers: list[int]) -> tuple[bytes, HashingReader]:
    """What ijson would read from ``data``, in buffers of the given sizes (negative: through ``read``)."""
    reader = HashingReader(_Reads(data, reads), "t.json")
    reader.first_byte()
    out, turn = bytearray(), 0
    while True:
        size = buffers[turn % len(buffers)]
        turn += 1
        if size < 0:
            piece = reader.read(-size)
            assert len(piece) <= -size
        else:
            buffer = bytearray(size)
            piece = buffer[: reader.readinto(buffer)]
        if not piece:
            return bytes(out), reader
        out += piece


def _typed(value: Any) -> Any:
    """``value`` with each number tagged with its type (1 and 1.0 differ), floats by their bits."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_typed(item) for item in value]
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=json_texts(), reads=st.lists(st.integers(1, 90), min_size=1, max_size=6),
       buffers=st.lists(st.integers(64, 200) | st.integers(-70, -1), min_size=1, max_size=4),
       lead=WS)
def test_ijson_reads_exactly_what_json_reads_however_the_text_is_cut(text, reads, buffers, lead):
    data = (lead + text).encode()
    handed, reader = _handed_to_ijson(data, reads, buffers)
    # The hash and the count are over the text as written; ijson gets as many bytes (the BOM and leading
    # whitespace dropped) and a different byte only inside an integer token of -2**63 or the window.
    assert reader.hexdigest() == hashlib.sha256(data).hexdigest() and reader.consumed == len(data)
    written = text.encode()
    assert len(handed) == len(written)
    digits = {at + i for at in range(len(written)) if written.startswith(PREFIX, at) for i in range(15, 20)}
    assert {i for i, (a, b) in enumerate(zip(handed, written, strict=True)) if a != b} <= digits
    parsed = next(ijson.get_backend("yajl2_c").items(io.BytesIO(handed), "", use_float=True))
    assert _typed(reader.standins.restore(parsed)) == _typed(json.loads(text))
    if TOKEN not in text:  # nothing to stand in for: ijson reads the text as it is
        assert handed == written


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.sampled_from([INT64_MIN, *WINDOW]), min_size=1, max_size=12),
       reads=st.lists(st.integers(1, 40), min_size=1, max_size=4))
def test_stand_ins_never_take_an_integer_of_the_file(values, reads):
    """The first stand-ins are the window's far end: the file's own uses of them, before or after, stay its own."""
    text = json.dumps(values)
    handed, reader = _handed_to_ijson(text.encode(), reads, [64])
    parsed = next(ijson.get_backend("yajl2_c").items(io.BytesIO(handed), "", use_float=True))
    assert reader.standins.restore(parsed) == values
    assert all(type(v) is int for v in parsed)


# ---------------------------------------------------------------------------------------------
# Through the pipeline: -2**63 lands where -2**63+1 does, valid or not
# ---------------------------------------------------------------------------------------------


def _placed_everywhere(number: str) -> str:
    """A valid episode's text with ``number`` in config, metrics, float columns, strings and keys."""
    value, inside = "@@V@@", "@@S@@"  # a number token; text inside a string
    doc = episode(steps=2, config={"seed": value, "list": [1, value, {"k": value}], inside: "key",
                                   "s": f'{inside} and \\"{inside}\\"'})
    row = doc["inference"]["steps"][1]["agent_steps"][0]
    row.update(action=value, reward=value, observation_space=[value, 0.5], health=value,
               action_distribution=[value], custom_metrics={"m": {"x": [value], "y": [value, 1]}})
    doc["inference"]["config"] = {"n": value, "f": value + ".5", "e": value + "e0"}
    text = json.dumps(doc)
    for quoted in (f'"{value}.5"', f'"{value}e0"', f'"{value}"'):
        text = text.replace(quoted, quoted[1:-1])
    return text.replace(value, number).replace(inside, number)


MUTATIONS = st.one_of(
    st.tuples(st.just("cut"), st.floats(0, 1)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.sampled_from(["x", ",", "]", "}", '"', "0", ".5", "e", "-",
                                                                    " ", "\\", "[", "{", ":", TOKEN])),
    st.tuples(st.just("number"), st.sampled_from(["number", "iterations"]), st.just(0)),
    st.just(("clean",)),
)


def _mutated(text: str, mutation: tuple[Any, ...]) -> str:
    kind = mutation[0]
    if kind == "cut":
        return text[: int(mutation[1] * len(text))]
    if kind == "insert":
        at = int(mutation[1] * len(text))
        return text[:at] + mutation[2] + text[at:]
    if kind == "number":  # -2**63 where the schema wants an integer of at least 0 (or 1)
        field = mutation[1]
        return text.replace(f'"{field}": 1,' if field == "number" else '"iterations": 10', f'"{field}": {TOKEN}', 1)
    return text


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation=MUTATIONS, parallel=st.booleans(), pad=st.integers(0, 40))
def test_smallest_int64_is_judged_like_its_neighbour(tmp_path_factory, mutation, parallel, pad):
    folder = tmp_path_factory.mktemp("judged")
    text = " " * pad + _mutated(_placed_everywhere(TOKEN), mutation)
    results = []
    for name, body in (("min.json", text), ("neighbour.json", text.replace(TOKEN, NEIGHBOUR))):
        (folder / name).write_text(body, encoding="utf-8")
        results.append(validate(folder / name, parallel=parallel))
    smallest, neighbour = results
    assert smallest.status == neighbour.status, (mutation, smallest.error, neighbour.error)
    if mutation[0] in ("clean", "number"):
        assert smallest.status == ("valid" if mutation[0] == "clean" else "invalid"), smallest.error
    if smallest.error is not None:
        a, b = smallest.error, neighbour.error
        same = (b.path or "").replace(NEIGHBOUR, TOKEN) or None  # the number may be in a key of the path
        assert (a.rule, a.path, a.step) == (b.rule, same, b.step)
        assert str(a).replace("min.json", "X") == str(b).replace("neighbour.json", "X").replace(NEIGHBOUR, TOKEN)


def _steps_with_tokens_across_reads() -> tuple[str, int]:
    """An episode whose k-th step holds -2**63 starting 22 - k bytes before the end of the k-th 256 KiB read."""
    text = '{"training": {"environment": "E", "algorithm": "A", "iterations": 1}, "inference": {"steps": ['
    count = 24
    for k in range(count):
        head = (f'{{"number": {k}, "agent_steps": [{{"agent": "a", "action": 0, "reward": 0, '
                '"observation_space": [], "custom_metrics": {"pad": "')
        before = '", "y": ['
        start = (k + 1) * READ_SIZE - 22 + k  # where the token is to start
        pad = start - len(text) - len(head) - len(before)
        text += head + "p" * pad + before + TOKEN + "]}}]}" + ("," if k + 1 < count else "]}}")
        assert text.index(TOKEN, start - 1) == start
    return text, count


@pytest.mark.parametrize("parallel", [False, True], ids=["one-process", "two-process"])
@pytest.mark.parametrize("codec", [None, "gz"])
def test_smallest_int64_cut_across_reads_is_stored_exactly(tmp_path, parallel, codec):
    """The token ends at every byte around the reader's reads (for gzip, wherever they fall); each is kept."""
    text, count = _steps_with_tokens_across_reads()
    path = tmp_path / ("e.json.gz" if codec else "e.json")
    path.write_bytes(gzip.compress(text.encode(), compresslevel=1) if codec else text.encode())
    result = ingest(path, lake=tmp_path / "lake", parallel=parallel)
    assert result.status == "ingested", result.error
    assert result.episode_id == hashlib.sha256(text.encode()).hexdigest()[: len(result.episode_id)]
    (location,) = list_episodes(tmp_path / "lake")
    metrics = pq.read_table(location.table("agent_steps")).column("custom_metrics").to_pylist()
    assert [json.loads(m)["y"] for m in metrics] == [[INT64_MIN]] * count


@pytest.mark.parametrize("parallel", [False, True], ids=["one-process", "two-process"])
@pytest.mark.parametrize("writer", ["small", "pyarrow"])
def test_smallest_int64_in_every_place_is_stored_as_its_neighbour_is(tmp_path, monkeypatch, parallel, writer):
    if writer == "pyarrow":  # every episode through pyarrow, not pipeline/lake/smallparquet.py
        monkeypatch.setenv(SMALL_ROWS_VARIABLE, "0")
    stored = {}
    for name, number in (("min", TOKEN), ("neighbour", NEIGHBOUR)):
        path = tmp_path / f"{name}.json"
        path.write_text(_placed_everywhere(number), encoding="utf-8")
        assert ingest(path, lake=tmp_path / name, parallel=parallel).status == "ingested"
        (location,) = list_episodes(tmp_path / name)
        stored[name] = {t: pq.read_table(location.table(t)).to_pylist()
                        for t in ("episodes", "agent_steps")}
    smallest, neighbour = stored["min"], stored["neighbour"]
    row = smallest["agent_steps"][1]
    # float columns: float(-2**63) is exact, and float(-2**63 + 1) rounds to it
    assert row["action"] == row["reward"] == row["health"] == row["observation"][0] == float(INT64_MIN)
    assert smallest["agent_steps"] == [
        {k: v.replace(NEIGHBOUR, TOKEN) if isinstance(v, str) else v for k, v in r.items()}
        for r in neighbour["agent_steps"]]
    assert json.loads(row["custom_metrics"]) == {"m": {"x": [INT64_MIN], "y": [INT64_MIN, 1]}}
    (episode_row,) = smallest["episodes"]
    config = json.loads(episode_row["training_config"])
    assert config["seed"] == INT64_MIN and type(config["seed"]) is int
    assert config["list"] == [1, INT64_MIN, {"k": INT64_MIN}]
    assert config[TOKEN] == "key" and config["s"] == f'{TOKEN} and \\"{TOKEN}\\"'
    inference = json.loads(episode_row["inference_config"])
    assert inference["n"] == INT64_MIN and type(inference["n"]) is int
    assert inference["f"] == inference["e"] == float(INT64_MIN) and type(inference["f"]) is float


@pytest.mark.parametrize("parallel", [False, True], ids=["one-process", "two-process"])
def test_a_file_using_the_whole_window_fails_rather_than_store_a_wrong_number(tmp_path, parallel):
    window = [-9223372036854700000 - k for k in range(75808)]
    path = tmp_path / "e.json"
    path.write_text(json.dumps(episode(steps=1, config={"all": window, "min": INT64_MIN})), encoding="utf-8")
    with open(path, "rb") as stream:  # read once, by the exact walk (ijson), which needs the stand-ins
        result = validate(stream, parallel=parallel)
    assert result.status == "failed"
    assert "cannot read -9223372036854775808 in this file" in str(result.error)
    # A local file is read by the fast walk first, whose parser (orjson) reads -2**63 as itself.
    assert validate(path, parallel=parallel).status == "valid"
    # One integer of the window fewer, and that one stands in: everything is kept exactly.
    path.write_text(json.dumps(episode(steps=1, config={"all": window[:-1], "min": INT64_MIN})), encoding="utf-8")
    assert ingest(path, lake=tmp_path / "lake", parallel=parallel).status == "ingested"
    (location,) = list_episodes(tmp_path / "lake")
    (config,) = pq.read_table(location.table("episodes")).column("training_config").to_pylist()
    assert json.loads(config) == {"all": window[:-1], "min": INT64_MIN}


@pytest.mark.parametrize("memmem", [True, False], ids=["memmem", "bytearray.find"])
def test_the_search_finds_the_first_window_integer_in_a_read(monkeypatch, memmem):
    """Reads of 64 KiB and more are searched with the C library's memmem once a process has searched 16 MiB."""
    from pipeline.ingestion import int64min

    if memmem:  # as after 16 MiB of a file
        monkeypatch.setattr(int64min, "_searched", int64min._MEMMEM_AFTER)
    else:
        monkeypatch.setattr(int64min, "_memmem", False)
    buffer = bytearray(b"0.5,-9223372036854699999," * 12_000)
    assert int64min._find(buffer, len(buffer)) == -1
    for at in (0, 1, 70_000, len(buffer) - len(PREFIX)):
        buffer[at : at + len(PREFIX)] = PREFIX
        assert int64min._find(buffer, len(buffer)) == at == buffer.find(PREFIX)
        assert int64min._find(buffer, at + len(PREFIX) - 1) == -1  # not the whole prefix before the end
        buffer[at : at + len(PREFIX)] = b"x" * len(PREFIX)
    if memmem and sys.platform == "linux":
        assert int64min._memmem not in (None, False)
