"""Checked steps -> column batches: batches flushed by size, values exact, per-agent summaries right."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingestion.arrowrows import _binary, rows_to_batch
from pipeline.ingestion.columns import FloatListColumn, ImageColumn
from pipeline.ingestion.tabulate import EpisodeTables
from pipeline.lake.tables import AGENT_STEPS, EPISODE_AGENTS, STEPS, UNIT_STEPS


def _step(number: int, rows: list[dict[str, Any]], image: bytes | None = None) -> dict[str, Any]:
    """A step as the rules stage leaves it: observation flattened, shape given."""
    return {"number": number, "image": image, "agent_steps": [
        {"observation": [float(number), 1.0], "observation_shape": [2], **row} for row in rows]}


class Sink:
    def __init__(self) -> None:
        self.batches: dict[str, list[pa.Table]] = {}

    def __call__(self, table: str, batch: pa.RecordBatch | pa.Table) -> None:
        self.batches.setdefault(table, []).append(pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch)
                                                  else batch)

    def table(self, name: str) -> pa.Table:
        return pa.concat_tables(self.batches.get(name, []))


def test_batches_are_flushed_by_rows_and_keep_the_declared_schemas() -> None:
    sink = Sink()
    tables = EpisodeTables(sink, batch_rows=4)
    for n in range(10):
        tables.add_step(_step(n, [{"agent": "a", "action": 1, "reward": 0.5,
                                   "unit_steps": [{"unit": "u", "action": 2, "reward": 1.0}]}]), n)
    tables.flush()
    assert [b.num_rows for b in sink.batches["steps"]] == [4, 4, 2]
    assert sink.table("steps").schema.equals(STEPS)
    assert sink.table("agent_steps").schema.equals(AGENT_STEPS)
    assert sink.table("unit_steps").schema.equals(UNIT_STEPS)
    assert sink.table("agent_steps").column("step").to_pylist() == list(range(10))
    assert sink.table("unit_steps").column("agent").to_pylist() == ["a"] * 10
    assert (tables.steps, tables.agent_steps, tables.unit_steps) == (10, 10, 10)


def test_agents_are_summarised_in_order_of_appearance() -> None:
    tables = EpisodeTables(Sink())
    tables.add_step(_step(5, [{"agent": "b", "action": 0, "rewards": [1.0, 2.0], "health": 9.0}]), 0)
    tables.add_step(_step(3, [{"agent": "a", "action": 0, "reward": -1.0, "value_estimate": 4.0},
                              {"agent": "b", "action": 1, "rewards": [0.5, 0.5], "health": 7.0}]), 1)
    agents = tables.episode_agents()
    assert agents.schema.equals(EPISODE_AGENTS)
    rows = {r["agent"]: r for r in agents.to_pylist()}
    assert [r["agent"] for r in agents.to_pylist()] == ["a", "b"], "the agent of the earliest step comes first"
    assert rows["b"]["reward_totals"] == [1.5, 2.5] and rows["b"]["total_reward"] == 4.0
    assert rows["b"]["last_health"] == 9.0, "health of the highest step number, not the last in the file"
    assert rows["a"]["mean_value_estimate"] == 4.0 and rows["b"]["mean_value_estimate"] is None
    assert (tables.first_step, tables.last_step, tables.total_reward) == (3, 5, 3.0)


def test_pixel_bytes_and_numbers_share_one_column_exactly() -> None:
    column = FloatListColumn()
    column.append(bytes([0, 255, 7]))
    column.append([0.1, -2.5])
    column.append(bytes([1]))
    assert column.array().to_pylist() == [[0.0, 255.0, 7.0], [0.1, -2.5], [1.0]]


observation_value = st.one_of(st.integers(-3, 300), st.floats(-1e6, 1e6, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.lists(st.lists(observation_value, min_size=1, max_size=6), min_size=1,
                                                  max_size=5)), max_size=8))
def test_observation_rows_in_bulk_equal_rows_one_by_one(runs) -> None:
    """A batch of 1-D observations added at once (small integers packed into bytes) holds the same
    values, rows and offsets as the same rows added one at a time, whatever their mix of numbers."""
    bulk, single, expected = FloatListColumn(), FloatListColumn(), []
    for at_once, rows in runs:
        if at_once:
            bulk.extend([list(row) for row in rows])
        else:
            for row in rows:
                bulk.append(list(row))
        for row in rows:
            single.append(list(row))
        expected += [[float(v) for v in row] for row in rows]
    assert bulk.offsets == single.offsets and bulk.values == single.values
    assert bulk.array().to_pylist() == single.array().to_pylist() == expected
    assert bulk.lists() == [list(row) for _, rows in runs for row in rows]


def test_integers_beyond_2_53_are_rounded_not_refused() -> None:
    big = 2**63 - 1
    batch = rows_to_batch([{"step": 0, "agent": "a", "action": big, "total_reward": 0.0,
                            "observation_shape": [1]}], AGENT_STEPS,
                          {"observation": pa.array([[1.0]], pa.list_(pa.float64()))})
    assert batch.column(batch.schema.get_field_index("action")).to_pylist() == [float(big)]


finite = st.floats(min_value=-1e300, max_value=1e300, allow_nan=False)  # sums of ~90 stay finite


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from("abc"), finite), min_size=1, max_size=3), min_size=1,
                max_size=30), st.integers(1, 7))
def test_every_reward_comes_back_in_order_whatever_the_batch_size(steps: list[list[tuple[str, float]]],
                                                                  batch_rows: int) -> None:
    sink = Sink()
    tables = EpisodeTables(sink, batch_rows=batch_rows)
    expected = []
    for n, rows in enumerate(steps):
        unique = dict(rows)  # one row per agent in a step, as the rules guarantee
        tables.add_step(_step(n, [{"agent": a, "action": 0, "reward": r} for a, r in unique.items()]), n)
        expected += [(n, a, r) for a, r in unique.items()]
    tables.flush()
    got = sink.table("agent_steps").select(["step", "agent", "reward"]).to_pylist()
    assert [(g["step"], g["agent"], g["reward"]) for g in got] == expected
    totals = {r["agent"]: r["total_reward"] for r in tables.episode_agents().to_pylist()}
    for agent, total in totals.items():  # summed in file order, as a reader of the JSON would
        assert total == sum((r for _, a, r in expected if a == agent), 0.0)


@given(st.lists(st.one_of(st.binary(max_size=300), st.none()), max_size=40))
@settings(max_examples=200, deadline=None)
def test_image_column_holds_every_frame_byte_for_byte(images):
    column = _binary(images)
    assert column.type == pa.binary()
    assert column.to_pylist() == images
    # Written and read back as the steps table is (the frame bytes are the lake's to keep).
    batch = pa.RecordBatch.from_arrays([pa.array(range(len(images)), pa.int64()),
                                        pa.array(range(len(images)), pa.int64()), column], schema=STEPS)
    assert batch.validate(full=True) is None
    assert batch.column("image").to_pylist() == images


@given(st.lists(st.tuples(st.sampled_from(["joined", "pieces", "one by one"]),
                          st.lists(st.one_of(st.binary(max_size=200), st.none()), max_size=12)),
                max_size=12))
@settings(max_examples=200, deadline=None)
def test_image_column_from_frames_joined_equals_frames_one_by_one(runs):
    """The two-process writer gets a batch's frames as lengths and one bytes object (frames the reader
    decoded), or a list of frames (frames it decoded from their text); the column holds the same values,
    nulls in place, as when each frame is appended on its own."""
    column, expected = ImageColumn(), []
    for how, images in runs:
        frames = [i for i in images if i is not None]
        if how != "one by one":
            column.extend_joined([-1 if i is None else len(i) for i in images],
                                 [b"".join(frames)] if how == "joined" else frames)
        else:
            for image in images:
                column.append(image)
        expected += images
    array = column.array()
    assert array.validate(full=True) is None
    assert array.to_pylist() == expected
    assert column.values() == expected  # what the small writer gets
    assert column.count == len(expected) - expected.count(None) and len(column) == len(expected)
