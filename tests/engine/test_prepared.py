"""Prepared frame stores: the sampler's batches from a store equal those decoded from the PNGs, and the
store is a derived artefact of the lake (resumable, published atomically, cleaned by gc, ignored by check)."""

from __future__ import annotations

import base64
import io
import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import pipeline.engine.preparing
import pipeline.lake.framestore
from pipeline import DatasetError, FrameOptions, Lake, check, gc, ingest
from pipeline.engine.prepared import store_key
from pipeline.lake.layout import FRAMES, STAGING, frame_entry_name
from tests.helpers import agent_step, write_json

LENGTHS = (1, 4, 9, 23)
SIZE = (96, 90)  # height, width: 84x84 shrinks by area averaging with fractional cells


def _png(rng: np.random.Generator, gray: bool) -> str:
    """A noisy frame: every pixel differs, so max, grayscale and resize all change values."""
    height, width = SIZE
    pixels = rng.integers(0, 256, size=(height, width) if gray else (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _episode(n: int, length: int, without_image: frozenset[int] = frozenset(), gray: bool = False,
             agents: tuple[str, ...] = ("p0",)) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    steps = []
    for i in range(length):
        step: dict[str, Any] = {"number": 3 * i + 1, "agent_steps": [
            agent_step(name, action=i % 4, reward=float(i), observation_space=[float(n), float(i)])
            for name in agents if name == agents[0] or i % 2 == 0]}
        if i not in without_image:
            step["image"] = _png(rng, gray)
        steps.append(step)
    return {"training": {"environment": "Prepared-v0", "algorithm": "DQN", "iterations": 1, "config": {"n": n}},
            "inference": {"steps": steps}}


def _lake(root: Path, documents: list[dict[str, Any]]) -> Lake:
    for n, document in enumerate(documents):
        result = ingest(write_json(root / f"{n}.json", document), lake=root / "lake")
        assert result.status == "ingested", result.error
    return Lake(root / "lake")


def standard_lake(root: Path) -> Lake:
    """Episodes of LENGTHS (the third grey) and a two-agent one; shared with test_prepared_episode."""
    documents = [_episode(n, length, gray=n == 2) for n, length in enumerate(LENGTHS)]
    documents.append(_episode(9, 11, agents=("lead", "wing")))  # "wing" acts on every other step only
    return _lake(root, documents)


def compacted_prepared_lake(root: Path) -> tuple[Lake, FrameOptions]:
    """Three episodes with an atari store, then compacted into a segment (the ids, and so the store's
    entries, unchanged); shared with test_prepared_episode."""
    lake = _lake(root, [_episode(n, 6) for n in range(3)])
    options = FrameOptions.atari()
    lake.prepare_frames(options, workers=1)
    lake.compact()
    lake = Lake(lake.path)
    assert all(location.segment for location in lake.locations)
    return lake, options


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    return standard_lake(tmp_path_factory.mktemp("prepared"))


OPTIONS = [
    FrameOptions(stack_n=4),  # RGB as decoded, the earliest repeated
    FrameOptions(grayscale=True, resize=(84, 84), stack_n=4),  # the benchmark's plain options
    FrameOptions.atari(),
    FrameOptions.atari(framestack_axis_first=True),
    FrameOptions(grayscale=True, resize=(20, 30), max_n=3, skip_n=2, stack_n=3, pad="zeros"),
    FrameOptions(grayscale=True, resize=(84, 84)),  # no stack axis
]


def _equal_batches(a: Any, b: Any) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y)
    assert np.array_equal(a.episodes, b.episodes) and np.array_equal(a.positions, b.positions)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: store_key(o) + f"-stack{o.stack_n}")
@pytest.mark.parametrize(("frequency", "offset"), [(1, 0), (2, 1), (4, 0)])
@pytest.mark.parametrize("cache_bytes", [1 << 30, 200_000])  # every element kept / slots reused each batch
def test_batches_from_the_store_equal_decoded_batches(lake: Lake, options: FrameOptions, frequency: int,
                                                      offset: int, cache_bytes: int) -> None:
    report = lake.prepare_frames(options, workers=1)
    assert report.key == store_key(options) and not report.skipped
    common = {"batch_size": 64, "observation": "frames", "frames": options, "seed": 5,
              "downsample_frequency": frequency, "downsample_offset": offset}
    stored = lake.sampler(**common, prepared=True, cache_bytes=cache_bytes)
    decoded = lake.sampler(**common, prepared=False)
    assert stored.prepared == store_key(options) and decoded.prepared is None
    starts = 0
    for j in (0, 1, 2, 1, 3, 0):
        a, b = stored.batch(j), decoded.batch(j)
        _equal_batches(a, b)
        starts += int((a.positions * frequency + offset < 12).sum())
    assert starts > 0  # stacks that reach before the episode's start (padding) were compared


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(range(len(OPTIONS))), batch_size=st.sampled_from([1, 3, 37, 100]),
       slots=st.sampled_from([None, 0, 5, 60]), seed=st.integers(0, 3),
       batches=st.lists(st.integers(0, 40), min_size=1, max_size=8))
def test_any_sequence_of_batches_equals_the_decoded_one(lake: Lake, option: int, batch_size: int, slots: int | None,
                                                        seed: int, batches: list[int]) -> None:
    # Batches larger than the lake (each element wanted by many rows), stacks reaching before the
    # episodes' starts, and rings from the smallest a batch allows (0: each batch's own elements
    # evict the last one's) to one holding every element, asked in any order.
    options = OPTIONS[option]
    lake.prepare_frames(options, workers=1)
    element = 84 * 84 if options.resize else SIZE[0] * SIZE[1] * (1 if options.grayscale else 3)
    cache = 1 << 30 if slots is None else int(slots * element / 0.75) + 1  # the elements get 3/4 of the cache
    common: dict[str, Any] = {"batch_size": batch_size, "observation": "frames", "frames": options, "seed": seed}
    stored = lake.sampler(**common, prepared=True, cache_bytes=cache)
    decoded = lake.sampler(**common, prepared=False)
    for j in batches:
        _equal_batches(stored.batch(j), decoded.batch(j))


def test_another_agent_and_epochs(lake: Lake) -> None:
    options = FrameOptions.atari()
    wing = lake.episode_agents().filter(agent="wing")
    lake.prepare_frames(options, episodes=wing, workers=1)
    stored = lake.sampler(wing, observation="frames", frames=options, batch_size=4, epochs=2, prepared=True)
    decoded = lake.sampler(wing, observation="frames", frames=options, batch_size=4, epochs=2, prepared=False)
    assert stored.transitions == 6
    for a, b in zip(stored, decoded, strict=True):
        _equal_batches(a, b)


def test_a_pickled_sampler_reads_the_store_in_its_new_process(lake: Lake) -> None:
    options = FrameOptions(grayscale=True, resize=(84, 84), stack_n=4)
    lake.prepare_frames(options, workers=1)
    sampler = lake.sampler(observation="frames", frames=options, batch_size=32, seed=9, prepared=True)
    sampler.batch(0)
    copy = pickle.loads(pickle.dumps(sampler))
    assert copy.prepared == sampler.prepared
    _equal_batches(copy.batch(3), sampler.batch(3))


@pytest.mark.parametrize("missing", ["error", "previous"])
def test_missing_frames_as_the_decode_path_says(tmp_path: Path, missing: str) -> None:
    lake = _lake(tmp_path, [_episode(0, 12, without_image=frozenset({4, 5, 9})),
                            _episode(1, 8, without_image=frozenset({0, 1}))])
    for options in (FrameOptions(grayscale=True, stack_n=4, missing=missing),  # type: ignore[arg-type]
                    FrameOptions.atari(missing=missing)):  # type: ignore[arg-type]
        report = lake.prepare_frames(options, workers=1)
        assert report.prepared == 2 and not report.skipped
        for ids in ([lake.locations[0].episode_id], [lake.locations[1].episode_id]):
            common = {"batch_size": 16, "observation": "frames", "frames": options, "seed": 2}
            stored = lake.sampler(ids, **common, prepared=True)
            decoded = lake.sampler(ids, **common, prepared=False)
            for j in range(6):
                outcomes = []
                for sampler in (stored, decoded):
                    try:
                        outcomes.append(sampler.batch(j))
                    except DatasetError as exc:
                        outcomes.append(str(exc))
                if isinstance(outcomes[0], str) or isinstance(outcomes[1], str):
                    assert outcomes[0] == outcomes[1]
                    assert "has no image" in outcomes[0]
                else:
                    _equal_batches(outcomes[0], outcomes[1])


def test_missing_frames_are_named_by_step(tmp_path: Path) -> None:
    lake = _lake(tmp_path, [_episode(0, 6, without_image=frozenset({2}))])
    options = FrameOptions(grayscale=True, stack_n=2)
    lake.prepare_frames(options, workers=1)
    sampler = lake.sampler(observation="frames", frames=options, batch_size=64, prepared=True)
    episode_id = sampler.episodes[0][0]
    with pytest.raises(DatasetError, match=f"episode {episode_id}: step 7 has no image \\(missing='previous'"):
        sampler.batch(0)


def test_prepare_only_what_is_missing_and_use_the_store_only_when_it_covers(tmp_path: Path) -> None:
    lake = _lake(tmp_path, [_episode(n, 5) for n in range(4)])
    options = FrameOptions.atari()
    ids = [location.episode_id for location in lake.locations]
    first = lake.prepare_frames(options, episodes=ids[:2], workers=1)
    assert (first.prepared, first.present, first.frames) == (2, 0, 10)
    assert first.bytes > 0 and first.image_bytes > 0
    assert lake.sampler(ids[:2], observation="frames", frames=options).prepared == store_key(options)
    assert lake.sampler(observation="frames", frames=options).prepared is None  # two not prepared: decode
    with pytest.raises(DatasetError, match="no prepared frames for every selected episode"):
        lake.sampler(observation="frames", frames=options, prepared=True)
    seen: list[int] = []
    second = lake.prepare_frames(options, workers=2, progress=lambda report, total: seen.append(total))
    assert (second.prepared, second.present) == (2, 2) and seen and set(seen) == {4}
    assert lake.sampler(observation="frames", frames=options).prepared == store_key(options)
    # other stacking of the same elements: the same store
    assert lake.sampler(observation="frames", frames=FrameOptions.atari(stack_n=2)).prepared == store_key(options)
    assert not any((lake.path / STAGING).iterdir())


def test_an_interrupted_prepare_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = _lake(tmp_path, [_episode(n, 3) for n in range(2)])

    def crash(*args: Any) -> None:
        raise OSError("killed")

    monkeypatch.setattr(pipeline.engine.preparing, "publish", crash)
    with pytest.raises(OSError, match="killed"):
        lake.prepare_frames(FrameOptions(grayscale=True), workers=1)
    assert list((lake.path / FRAMES).rglob("*.frames")) == []
    assert not any((lake.path / STAGING).iterdir())  # the staging folder went with the failure


def test_concurrent_prepares_leave_one_whole_store(tmp_path: Path) -> None:
    lake = _lake(tmp_path, [_episode(n, 6) for n in range(6)])
    options = FrameOptions.atari()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            Lake(lake.path).prepare_frames(options, workers=1)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]  # the same options file, the same entries
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(list((lake.path / FRAMES / store_key(options)).glob("*.frames"))) == 6
    common = {"batch_size": 64, "observation": "frames", "frames": options, "seed": 1}
    _equal_batches(lake.sampler(**common, prepared=True).batch(0), lake.sampler(**common, prepared=False).batch(0))


def test_gc_removes_entries_of_removed_episodes_and_check_ignores_the_store(tmp_path: Path) -> None:
    lake = _lake(tmp_path, [_episode(n, 4) for n in range(3)])
    options = FrameOptions(grayscale=True, stack_n=4)
    lake.prepare_frames(options, workers=1)
    store = lake.path / FRAMES / store_key(options)
    assert check(lake.path).problems == []
    gone = lake.locations[0].episode_id
    lake.remove([gone])
    lake = Lake(lake.path)
    # the removed episode is simply not selected: the store still covers the lake
    assert lake.sampler(observation="frames", frames=options).prepared == store_key(options)
    report = gc(lake.path)
    assert [path.name for path in report.frames] == [frame_entry_name(gone, "p0")]
    assert sorted(p.name for p in store.glob("*.frames")) == sorted(
        frame_entry_name(location.episode_id, "p0") for location in lake.locations)
    assert gc(lake.path).frames == []
    assert check(lake.path).problems == []


def test_gc_keeps_entries_written_after_its_listing(tmp_path: Path) -> None:
    lake = _lake(tmp_path, [_episode(0, 3)])
    lake.prepare_frames(FrameOptions(grayscale=True), workers=1)
    stray = next((lake.path / FRAMES).rglob("*.frames"))
    foreign = stray.with_name("f" * 32 + stray.name[32:])
    foreign.write_bytes(stray.read_bytes())  # an episode ingested after gc listed the lake
    assert pipeline.lake.framestore.remove_stale_entries(lake.path, set(), listed_at=0.0) == []
    removed = pipeline.lake.framestore.remove_stale_entries(lake.path, {stray.name[:32]}, listed_at=2e9)
    assert removed == [foreign]


def test_a_damaged_entry_is_named(tmp_path: Path) -> None:
    lake = _lake(tmp_path, [_episode(0, 3)])
    options = FrameOptions(grayscale=True)
    lake.prepare_frames(options, workers=1)
    entry = next((lake.path / FRAMES).rglob("*.frames"))
    entry.write_bytes(entry.read_bytes()[:-3])
    sampler = lake.sampler(observation="frames", frames=options, prepared=True)
    with pytest.raises(pipeline.LakeError, match=f"damaged prepared frames {entry}: not a frame store entry "
                                                 f".*`ingest-pipeline frames rm {entry.parent.name} "
                                                 f"{entry.name[:32]}` deletes them"):
        sampler.batch(0)


def test_bad_codec_is_refused(tmp_path: Path) -> None:
    lake = _lake(tmp_path, [_episode(0, 2)])
    with pytest.raises(DatasetError, match="codec must be one of 'zstd', 'raw', not 'lz4'"):
        lake.prepare_frames(FrameOptions(), codec="lz4")  # type: ignore[arg-type]


def test_raw_codec_gives_the_same_batches(tmp_path: Path) -> None:
    lake = _lake(tmp_path, [_episode(n, 7) for n in range(2)])
    options = FrameOptions.atari()
    report = lake.prepare_frames(options, codec="raw", workers=1)
    assert report.bytes > report.frames * 84 * 84
    common = {"batch_size": 32, "observation": "frames", "frames": options, "seed": 4}
    _equal_batches(lake.sampler(**common, prepared=True).batch(1), lake.sampler(**common, prepared=False).batch(1))


def test_the_frames_commands(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cli import cli

    lake = _lake(tmp_path, [_episode(n, 3) for n in range(2)])
    runner = CliRunner()
    path = str(lake.path)
    assert runner.invoke(cli, ["frames", "ls", "--lake", path]).output == "no prepared frames\n"
    result = runner.invoke(cli, ["frames", "prepare", "--atari", "-j", "1", "--lake", path])
    assert result.exit_code == 0, result.output
    key = store_key(FrameOptions.atari())
    last = result.output.splitlines()[-1]
    assert last.startswith("2 episodes prepared (6 frames, ") and last.endswith(
        f"0 already prepared: {lake.path / FRAMES / key}")
    assert lake.sampler(observation="frames", frames=FrameOptions.atari()).prepared == key
    again = runner.invoke(cli, ["frames", "prepare", "--atari", "--lake", path])
    assert again.output.splitlines()[-1].startswith("0 episodes prepared (0 frames, 0.0 MB) in ")
    assert again.output.splitlines()[-1].endswith("2 already prepared: " + str(lake.path / FRAMES / key))
    listing = runner.invoke(cli, ["frames", "ls", "--lake", path]).output
    assert listing.startswith(f"{key}  2 prepared  ") and listing.endswith(" MB\n")
    refused = runner.invoke(cli, ["frames", "prepare", "--atari", "--grayscale", "--lake", path])
    assert refused.exit_code == 2 and "--atari fixes the frame options" in refused.output
    lake.remove([lake.locations[0].episode_id])
    gone = runner.invoke(cli, ["gc", "--lake", path]).output
    assert gone.splitlines()[0] == "1 prepared frame file(s) removed (episodes no longer in the lake)"


def test_an_episode_removed_and_collected_while_sampling_asks_for_a_refresh(tmp_path: Path) -> None:
    lake = _lake(tmp_path, [_episode(n, 5) for n in range(2)])
    options = FrameOptions(grayscale=True, stack_n=2)
    lake.prepare_frames(options, workers=1)
    sampler = lake.sampler(observation="frames", frames=options, batch_size=64, prepared=True)
    gone = lake.locations[0].episode_id
    Lake(lake.path).remove([gone])
    assert len(gc(lake.path).frames) == 1
    with pytest.raises(DatasetError, match=f"episode {gone} was removed from the lake after this sampler's "
                                           f"snapshot was taken: call lake.refresh\\(\\) and make a new sampler"):
        sampler.batch(0)


def test_the_store_still_serves_episodes_after_compaction(tmp_path: Path) -> None:
    lake, options = compacted_prepared_lake(tmp_path)
    common = {"batch_size": 48, "observation": "frames", "frames": options, "seed": 6}
    stored = lake.sampler(**common)
    assert stored.prepared == store_key(options)
    _equal_batches(stored.batch(2), lake.sampler(**common, prepared=False).batch(2))
