"""The fast walk (orjson, batches cut by the text between steps) against the exact walk (ijson).

What must hold: whenever the fast walk gets to the end of a file, the exact walk accepts the file too and
hands over the same header parts and the same steps, value for value (floats bit for bit, integers as
integers). Wherever it cannot vouch for that it raises NotFast, and the ingest starts over with the
exact walk. And on the files users write it does get to the end, or it would be slower than before.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipeline.ingestion.parts as parts
from benchmarks.generate import write_episode
from pipeline import PipelineError, ingest
from pipeline.ingestion.fastwalk import NotFast, fast_batches
from pipeline.ingestion.framesapart import FramesApart, StepsApart
from pipeline.ingestion.parts import STEPS, read_batches
from pipeline.ingestion.source import open_source

PROFILES = [("vector", 0, 300), ("teams_metrics", 0, 40), ("pixels", 0, 6), ("frames64", 0, 30), ("frames_jpeg", 0, 30),
            ("random", 0, 40), ("random", 1, 20), ("random", 4, 40), ("random", 8, 200), ("sparse_frames", 0, 45),
            ("swarm", 0, 6)]


def _document(profile: str, seed: int, steps: int) -> dict[str, Any]:
    buffer = io.BytesIO()
    write_episode(buffer, profile, steps=steps, seed=seed)
    return json.loads(buffer.getvalue())


def _flat(walk: Any, path: Path, *, null_images: bool = True, **options: Any) -> tuple[list[tuple[str, str]], int]:
    """What ``walk`` hands over for ``path``: (part, value as canonical JSON text) per header part and per
    step (a float stays a float, -0.0 stays -0.0), and how many batches. Frames handed over apart
    (framesapart.StepsApart) are put back in their steps; ``null_images=False`` writes an image of null as
    none (apart, the two are one)."""
    out, batches = [], 0
    with open_source(path) as source:
        for part, value in walk(source, **options):
            if part == STEPS:
                batches += 1
                steps = _with_frames(value)
                if not null_images:
                    steps = [{k: v for k, v in step.items() if k != "image" or v is not None} for step in steps]
                out += [("step", json.dumps(step, sort_keys=True)) for step in steps]
            else:
                out.append((part, json.dumps(value, sort_keys=True)))
    return out, batches


def _with_frames(steps: list[Any]) -> list[Any]:
    if type(steps) is not StepsApart:
        return steps
    texts = iter(steps.texts)
    return [{**step, "image": bytes(next(texts)).decode()} if length >= 0 else step
            for step, length in zip(steps, steps.lengths, strict=True)]


def _exact(path: Path, *, null_images: bool = True) -> list[tuple[str, str]] | None:
    try:
        return _flat(read_batches, path, null_images=null_images)[0]
    except PipelineError:
        return None


def _fast(path: Path, batch_bytes: int = parts.BATCH_BYTES, *, apart: bool = False) -> list[tuple[str, str]] | None:
    try:
        if apart:  # frames apart from the first batch on, as one process walks (run._parts)
            return _flat(fast_batches, path, null_images=False, batch_bytes=batch_bytes,
                         frames_apart=FramesApart(enabled=True))[0]
        return _flat(fast_batches, path, batch_bytes=batch_bytes)[0]
    except NotFast:
        return None


def _dumps(document: Any, style: str) -> bytes:
    if style == "compact":
        return json.dumps(document, separators=(",", ":")).encode()
    if style == "spaced":
        return json.dumps(document).encode()
    if style == "indented":
        return json.dumps(document, indent=2).encode()
    if style == "sorted":  # every object's keys in another order: steps start with "agent_steps"
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    if style == "tabs":
        return json.dumps(document, indent="\t", ensure_ascii=False).replace("\n", "\r\n").encode()
    raise ValueError(style)


STYLES = ["compact", "spaced", "indented", "sorted", "tabs"]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(("profile", "seed", "steps"), PROFILES, ids=[f"{p}{s}" for p, s, _ in PROFILES])
def test_the_fast_walk_reads_what_generators_write_exactly_as_the_exact_walk(tmp_path: Path, profile: str,
                                                                           seed: int, steps: int,
                                                                           style: str) -> None:
    path = tmp_path / "e.json"
    path.write_bytes(_dumps(_document(profile, seed, steps), style))
    exact = _exact(path)
    assert exact is not None
    for batch_bytes in (parts.BATCH_BYTES, 300):  # 300: cut after nearly every step, windows doubled
        assert _fast(path, batch_bytes) == exact, (style, batch_bytes)
        assert _fast(path, batch_bytes, apart=True) == _exact(path, null_images=False), (style, batch_bytes, "apart")


@pytest.mark.parametrize(("profile", "steps"), [("vector", 3000), ("teams_metrics", 200)])
def test_batches_are_about_the_exact_walks_size(tmp_path: Path, profile: str, steps: int) -> None:
    """The fast walk's batches are about as many as the exact walk's (BATCH_STEPS steps, or a read of
    text): the checks' and the writer's work per batch, and the two processes' pace, depend on it."""
    path = tmp_path / "e.json"
    path.write_bytes(_dumps(_document(profile, 0, steps), "compact"))
    _, fast = _flat(fast_batches, path)
    _, exact = _flat(read_batches, path)
    assert exact * 0.7 <= fast <= exact * 1.3 + 2, (fast, exact)


def _reordered(document: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The same document with its root and inference keys in another order."""
    inference = dict(document["inference"])
    keys = list(inference)
    rng.shuffle(keys)
    root = {**{k: v for k, v in document.items() if k != "inference"}, "inference": {k: inference[k] for k in keys}}
    order = list(root)
    rng.shuffle(order)
    return {k: root[k] for k in order}


# Text a file may hold that the fast walk must either read exactly or leave to the exact walk: integers
# at and past int64's ends, a string holding the text between two steps, escapes, long decimals.
AWKWARD_VALUES = [
    2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**19, 18446744073709551615, 18446744073709551616, 10**40,
    -9223372036854775807, 0.0020043393597006798, 1e-300, -0.0, 123456789012345678901234.5,
    '},{"number":5,"agent_steps":[]}', '"]}', "\\", "\u00e9\U0001f600", "[{", "a\"b", "",
]


def _awkward(document: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Put awkward values where the file's rules allow any JSON (metrics, configs) or numbers."""
    steps = document["inference"]["steps"]
    for _ in range(rng.randint(1, 4)):
        value = rng.choice(AWKWARD_VALUES)
        where = rng.choice(["metrics", "config", "mapping", "reward"])
        step = rng.choice(steps)
        agent = rng.choice(step["agent_steps"]) if step.get("agent_steps") else None
        if where == "metrics" and agent is not None:
            agent["custom_metrics"] = {"x": value, "y": [value]}
        elif where == "config":
            document["inference"]["config"] = {"awkward": value}
        elif where == "mapping":
            document.setdefault("action_mapping", {})["0"] = str(value)
        elif agent is not None and isinstance(value, (int, float)) and "reward" in agent:
            agent["reward"] = value
    return document


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(PROFILES[:5]), st.sampled_from(STYLES), st.integers(0, 2**32), st.booleans(),
       st.sampled_from([parts.BATCH_BYTES, 500]))
def test_when_the_fast_walk_finishes_the_exact_walk_hands_over_the_same(tmp_path: Path, profile: Any, style: str,
                                                                        seed: int, reorder: bool,
                                                                        batch_bytes: int) -> None:
    rng = random.Random(seed)
    name, shape_seed, steps = profile
    document = _awkward(_document(name, shape_seed, min(steps, 60)), rng)
    if reorder:
        document = _reordered(document, rng)
    path = tmp_path / "e.json"
    path.write_bytes(_dumps(document, style))
    fast = _fast(path, batch_bytes)
    if fast is not None:
        assert _exact(path) == fast


MUTATIONS = ["flip", "delete", "insert", "duplicate", "cut"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**32), st.sampled_from(MUTATIONS), st.integers(1, 3))
def test_a_damaged_file_the_fast_walk_accepts_is_one_the_exact_walk_accepts_alike(tmp_path: Path, seed: int,
                                                                                  mutation: str, count: int) -> None:
    """Bytes flipped, deleted, inserted or repeated anywhere in the text (most of it is steps): the fast
    walk may finish only where the exact walk finds the same values."""
    rng = random.Random(seed)
    data = bytearray(_dumps(_document("teams_metrics", 0, 8), rng.choice(STYLES)))
    for _ in range(count):
        at = rng.randrange(len(data))
        if mutation == "flip":
            data[at] = rng.choice(b'{}[]",:0123456789-.eE \\tnul')
        elif mutation == "delete":
            del data[at : at + rng.randint(1, 12)]
        elif mutation == "insert":
            data[at:at] = rng.choice([b",", b"}", b"]", b'"', b'},{"number":', b"1e400", b"99999999999999999999"])
        elif mutation == "duplicate":
            end = min(len(data), at + rng.randint(1, 400))
            data[end:end] = data[at:end]
        else:
            del data[at:]
    path = tmp_path / "e.json"
    path.write_bytes(bytes(data))
    fast = _fast(path, rng.choice([parts.BATCH_BYTES, 200]))
    if fast is not None:
        assert _exact(path) == fast


def test_header_values_and_a_first_step_longer_than_a_read_are_read_whole(tmp_path: Path) -> None:
    """A value's end is found by its brackets, outside strings: strings holding brackets, quotes and
    backslashes, cut between two reads anywhere, and a first step with a long observation."""
    text = '}]{["\\\" ' * 70_000  # ~700 KB, over two reads
    document = {"training": {"config": {"notes": [text, {"more": text}], "n": list(range(30_000))}},
                "inference": {"steps": [{"number": 0, "agent_steps": [{"agent": "a", "action": 1, "reward": 0.5,
                                                                       "observation_space": [0.25] * 100_000}]},
                                        {"number": 1}]}}
    path = tmp_path / "e.json"
    for style in ("compact", "indented"):
        path.write_bytes(_dumps(document, style))
        exact = _exact(path)
        assert exact is not None and _fast(path) == exact, style


@pytest.mark.parametrize("text", [
    b'\xef\xbb\xbf  {"training": {}, "inference": {"steps": [{"number": 0}]}}\n',
    b'{"inference": {"steps": [{"number": 0}, {"number": 1}]}, "training": {}}',
    b'{"training": {}, "inference": {"steps": [{"number": 0}, {"number": 1}], "config": {"k": [1, [2]]}}}',
    b'{"training": {}, "inference": {"steps": [{"number": 0},{"number": 1} ,\n{"number": 2}]}}',
    b'{"training": {}, "inference": {"steps": [{"number": 0}, {"number": 1}, {"image": null, "number": 2}, '
    b'{"image": null, "number": 3}, {"number": 4, "m": "}, {\\"number\\": 9}"}, {"image": null, "number": 5}]}}',
    # -2**63, which yajl needs rewritten (int64min) and orjson reads as itself, in a header and a step.
    b'{"training": {"config": {"seed": -9223372036854775808}}, "inference": {"steps": [{"number": 0, '
    b'"custom_metrics": {"m": -9223372036854775808, "n": -9223372036854775807}}, {"number": 1}]}}',
])
def test_the_fast_walk_reads_unusual_but_valid_layouts(tmp_path: Path, text: bytes) -> None:
    """A byte-order mark, the steps before training, a key after the steps, uneven spacing between steps."""
    path = tmp_path / "e.json"
    path.write_bytes(text)
    exact = _exact(path)
    assert exact is not None and _fast(path) == exact and _fast(path, 1) == exact


@pytest.mark.parametrize("text", [
    b'{"training": {}, "inference": {"steps": []}}',
    b'{"training": {}, "training": {}, "inference": {"steps": [{"number": 0}]}}',
    b'{"training": {}, "inference": {"steps": [{"number": 0}], "steps": [{"number": 1}]}}',
    b'{"training": {}, "bogus": 1, "inference": {"steps": [{"number": 0}]}}',
    b'{"training": {}, "inference": {"steps": [{"number": 0}]}} x',
    b'{"training": {}, "inference": {"steps": [{"number": 9223372036854775808}]}}',
    b'{"training": {}, "inference": {"steps": [{"number": 0}, {"number": 1e400}]}}',
    b'{"training": {}, "inference": {"steps": [{"number": 0}, {"number": "\\ud800"}]}}',
    b'{"training": {}, "inference": {"steps": [1, 2]}}',
    b'{"training": {}, "inference": {"steps": [{"number": 0},]}}',
    b'{"training": {}, "inference": {"steps": [{"number": 0}',
    b'[]',
    b'',
])
def test_the_fast_walk_leaves_every_doubtful_file_to_the_exact_walk(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "e.json"
    path.write_bytes(text)
    with pytest.raises(NotFast), open_source(path) as source:
        for _ in fast_batches(source):
            pass


def test_an_ingest_of_a_local_file_takes_the_fast_walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact walk is not run at all for a valid local file (one process and two), and a file the fast
    walk leaves to it is still ingested."""
    path = tmp_path / "e.json"
    path.write_bytes(_dumps(_document("vector", 0, 200), "compact"))
    calls = []
    monkeypatch.setattr(parts, "read_batches", lambda *a, **k: calls.append(1) or read_batches(*a, **k))
    for parallel in (False, True):
        result = ingest(path, lake=tmp_path / f"lake{parallel}", parallel=parallel)
        assert result.status == "ingested" and result.steps == 200
    assert calls == []
    doubtful = tmp_path / "d.json"
    document = _document("vector", 0, 50)
    document["inference"]["config"] = {"notes": ["n" * 1000] * 5000}  # a header value too long to look for
    doubtful.write_bytes(_dumps(document, "compact"))
    result = ingest(doubtful, lake=tmp_path / "lake-d", parallel=False)
    assert result.status == "ingested" and result.steps == 50 and calls == [1]


def test_an_invalid_file_is_refused_with_the_exact_walks_error(tmp_path: Path) -> None:
    """A rule broken in a step the fast walk reads well: the error is the one the exact walk reports
    (the same message, step and path), for a file and for the same bytes from a stream."""
    document = _document("vector", 0, 300)
    document["inference"]["steps"][250]["agent_steps"][0]["action"] = "left"
    path = tmp_path / "e.json"
    path.write_bytes(_dumps(document, "compact"))
    from_file = ingest(path, lake=tmp_path / "lake")
    with open(path, "rb") as stream:
        from_stream = ingest(stream, lake=tmp_path / "lake2")
    assert from_file.status == from_stream.status == "invalid"
    assert from_file.error is not None and from_stream.error is not None
    assert (from_file.error.rule, from_file.error.path, from_file.error.step, from_file.error.message) == (
        from_stream.error.rule, from_stream.error.path, from_stream.error.step, from_stream.error.message)
    assert not list((tmp_path / "lake").rglob("*.parquet"))


def _number_texts() -> st.SearchStrategy[str]:
    """Numbers as generators write them: repr, fixed and exponent forms with many or few digits, integers."""
    finite = st.floats(allow_nan=False, allow_infinity=False)
    return st.one_of(
        finite.map(repr),
        st.tuples(finite, st.integers(0, 30)).map(lambda fd: f"{fd[0]:.{fd[1]}e}"),
        st.tuples(st.floats(-1e6, 1e6, allow_nan=False), st.integers(0, 25)).map(lambda fd: f"{fd[0]:.{fd[1]}f}"),
        st.integers(-(2**63), 2**63 - 1).map(str),
        st.sampled_from(["0", "-0", "-0.0", "5e-324", "2.2250738585072014e-308", "1.7976931348623157e308",
                         "0.1000000000000000055511151231257827", "1e-400", "9007199254740993"]),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_number_texts(), min_size=1, max_size=20))
def test_numbers_are_read_bit_for_bit_as_the_exact_walk_reads_them(tmp_path: Path, numbers: list[str]) -> None:
    """orjson and yajl (strtod) must agree on every number the file writes: the same type (int or float)
    and the same float, bit for bit; where the fast walk cannot vouch for one, it leaves the file."""
    values = ",".join(numbers)
    text = ('{"training": {"config": {"v": [VALUES]}}, "inference": {"steps": [{"number": 0, "x": [VALUES]}, '
            '{"number": 1, "x": [VALUES]}]}}').replace("VALUES", values)
    path = tmp_path / "e.json"
    path.write_text(text)
    fast = _fast(path)
    exact = _exact(path)
    if exact is None:  # a number beyond a float's range ("2e+308", rounded up from the largest float)
        assert fast is None
        return
    assert fast == exact  # -2**63 and its neighbours too, which yajl needs rewritten (int64min)


@pytest.mark.parametrize("profile", ["teams_metrics", "frames64"])
def test_a_group_commits_small_files_through_the_fast_walk_with_the_same_tables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, profile: str) -> None:
    """Batch runs tabulate small files in memory for a group commit (run.tabulate_file): a valid local
    file takes the fast walk (frames apart, decoded by the builder), with the tables the exact walk makes;
    a doubtful one the exact walk."""
    from pipeline.ingestion.run import IngestResult, _tabulate, tabulate_file

    path = tmp_path / "e.json"
    path.write_bytes(_dumps(_document(profile, 0, 300 if profile == "frames64" else 30), "indented"))
    exact = _tabulate(str(path), IngestResult(source="", status="failed"), read_batches)
    calls = []
    monkeypatch.setattr(parts, "read_batches", lambda *a, **k: calls.append(1) or read_batches(*a, **k))
    result, tables = tabulate_file(str(path))
    assert result.status == "valid" and calls == [] and tables is not None
    assert set(tables) == set(exact)
    for name in exact:  # the same rows, but for the time each was made
        kept = [column for column in exact[name].column_names if column != "ingested_at"]
        assert tables[name].select(kept).equals(exact[name].select(kept)), name
    document = _document("vector", 0, 20)
    document["inference"]["steps"][5]["agent_steps"][0]["reward"] = "high"
    path.write_bytes(_dumps(document, "compact"))
    result, tables = tabulate_file(str(path))
    assert result.status == "invalid" and tables is None and calls == [1]
    assert result.error is not None and result.error.step == 5


@pytest.mark.parametrize("value", ["x" * 6_000_000, 'a\\"b' * 1_500_000])
def test_a_first_step_with_a_long_string_is_read_alike_or_left(tmp_path: Path, value: str) -> None:
    """A string of megabytes in the first step (a large frame): found whole, or (full of escaped quotes,
    past the length the walk looks for an end in) left to the exact walk; never read differently."""
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"training": {}, "inference": {"steps": [{"number": 0, "m": value}, {"number": 1}]}}))
    exact = _exact(path)
    fast = _fast(path)
    assert exact is not None and (fast is None or fast == exact)
    if '"' not in value:
        assert fast == exact


def test_a_pipe_given_by_its_path_is_read_once_by_the_exact_walk(tmp_path: Path) -> None:
    """A path that is a pipe (``<(zcat ep.json.gz)``, a FIFO) cannot be read again after a doubt: it takes
    the exact walk, and a file the fast walk would leave (here, -2**63) is still ingested from it."""
    import os
    import threading

    document = _document("vector", 0, 50)
    document["inference"]["config"] = {"seed": -(2**63)}
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    data = _dumps(document, "compact")
    results = []
    writer = threading.Thread(target=fifo.write_bytes, args=(data,), daemon=True)
    reader = threading.Thread(target=lambda: results.append(ingest(fifo, lake=tmp_path / "lake", parallel=False)),
                              daemon=True)
    writer.start()
    reader.start()
    reader.join(timeout=60)
    assert results, "the ingest waits for the pipe to be written again (it opened it a second time)"
    assert results[0].status == "ingested" and results[0].steps == 50, results[0].error


def _nested(levels: int) -> str:
    """A value of ``levels`` nested arrays and objects, with brackets in strings on the way."""
    text = "0"
    for level in range(levels):
        text = f'[{text}, "]]{{"]' if level % 2 else f'{{"k{level}": {text}, "s": "[[}}"}}'
    return text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(["training", "action_mapping", "inference.config", "first step", "later step"]),
       levels=st.integers(245, 258), apart=st.booleans())
def test_the_fast_walk_checks_nesting_where_the_exact_walk_would(tmp_path: Path, where: str, levels: int,
                                                                 apart: bool) -> None:
    """The fast walk checks the depth of what it parses, not of the stream (so a file of frames is not
    checked through its base64): a value nested to the limit, in any part and in any step, is read as
    the exact walk reads it; one level more, the exact walk refuses the file and the fast walk leaves it."""
    deep = _nested(levels)
    header = {"training": '{"config": DEEP}', "action_mapping": '{"0": DEEP}', "inference.config": '{"seed": DEEP}'}
    parts_text = {name: header[name].replace("DEEP", deep) if name == where else "{}" for name in header}
    steps = [f'{{"number": {n}, "image": "iVBORw0KGgo=", "custom_metrics": {{"m": 1}}}}' for n in range(40)]
    index = {"first step": 0, "later step": 33}.get(where)
    if index is not None:
        steps[index] = steps[index].replace('{"m": 1}', '{"m": ' + deep + "}")
    text = (f'{{"training": {parts_text["training"]}, "action_mapping": {parts_text["action_mapping"]}, '
            f'"inference": {{"config": {parts_text["inference.config"]}, "steps": [{", ".join(steps)}]}}}}')
    path = tmp_path / "e.json"
    path.write_text(text)
    exact = _exact(path, null_images=not apart)
    with open_source(path) as probe:  # the exact walk's depth guard alone, on the same bytes
        from pipeline.ingestion.guards import DepthGuard, TooDeep
        guard = DepthGuard()
        try:
            guard.feed(probe.reader.read(len(text) + 1))
            guard.feed(b"")
            too_deep = False
        except TooDeep:
            too_deep = True
    fast = _fast(path, 2048, apart=apart)
    if too_deep:
        assert exact is None and fast is None
    else:
        assert fast == exact


@pytest.mark.parametrize("where", ["header string", "step string"])
def test_a_value_that_never_ends_stops_the_fast_walk_within_a_part_of_reading(tmp_path, monkeypatch, where):
    """A string that goes on and on (no closing quote in sight) is read no further than a part's bound
    (source.MAX_PART_BYTES, here 1 MiB) past where its part began: the fast walk gives up there, and
    its memory with it, instead of holding the whole file."""
    import pipeline.ingestion.source as source_module

    monkeypatch.setattr(source_module, "MAX_PART_BYTES", 1024 * 1024)
    endless = b"A" * (8 * 1024 * 1024)
    if where == "header string":
        text = b'{"training": {"note": "' + endless + b'"}}'
    else:
        text = b'{"training": {}, "inference": {"steps": [{"number": 0}, {"number": 1, "image": "' + endless + b'"}]}}'
    path = tmp_path / "endless.json"
    path.write_bytes(text)
    with open_source(path) as source:
        with pytest.raises(NotFast):
            for _ in fast_batches(source, frames_apart=FramesApart(enabled=True)):
                pass
        assert source.reader.consumed <= 2 * 1024 * 1024 + parts.READ_SIZE
