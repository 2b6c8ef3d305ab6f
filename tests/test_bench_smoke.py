"""A small run of the benchmark suite (``benchmarks/``), so that it cannot rot unnoticed.

Benchmarks are not tests: nothing here asserts a time. It checks that the generator writes valid,
deterministic files of about the size asked for, one step at a time, and that the measurements
and the report run end to end on tiny inputs.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from benchmarks import generate, measure, run
from pipeline import ingest

SIZE = 200_000
MEASURED = {"kind", "status", "seconds", "cpu_seconds", "peak_rss_mib", "import_rss_mib", "input_bytes", "steps",
            "mb_per_s", "steps_per_s"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bench-files")
    out = {}
    for profile in generate.PROFILES:
        out[profile] = folder / f"{profile}.json"
        generate.generate_file(out[profile], profile, size=SIZE, seed=0)
    return out


def _bytes(profile: str, seed: int, size: int = SIZE) -> bytes:
    buffer = io.BytesIO()
    generate.write_episode(buffer, profile, size=size, seed=seed)
    return buffer.getvalue()


@pytest.mark.parametrize("profile", generate.PROFILES)
def test_generated_files_ingest(files: dict[str, Path], profile: str, tmp_path: Path) -> None:
    result = ingest(files[profile], lake=tmp_path / "lake")
    assert result.status == "ingested", result.error
    assert result.steps > 1


@pytest.mark.parametrize("profile", generate.PROFILES)
def test_generated_files_are_about_the_size_asked(files: dict[str, Path], profile: str) -> None:
    assert 0.8 * SIZE <= files[profile].stat().st_size <= SIZE


@pytest.mark.parametrize("profile", generate.PROFILES)
def test_generator_is_deterministic(profile: str) -> None:
    first = _bytes(profile, seed=0)
    assert _bytes(profile, seed=0) == first
    assert _bytes(profile, seed=1) != first
    # A smaller file's steps are a prefix of a larger one's.
    small = _bytes(profile, seed=0, size=SIZE // 2)
    assert first.startswith(small[: -len(generate._CLOSE)])


def test_generator_streams_one_step_at_a_time() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.sizes: list[int] = []

        def write(self, data: bytes) -> int:
            self.sizes.append(len(data))
            return len(data)

    recorder = Recorder()
    written = generate.write_episode(recorder, "teams", size=2_000_000)  # type: ignore[arg-type]
    assert sum(recorder.sizes) == written.bytes
    assert written.steps > 100
    assert max(recorder.sizes) < 64_000  # a step (or the header), never the document


def test_profiles_have_what_the_benchmark_issue_describes(files: dict[str, Path]) -> None:
    teams = json.loads(files["teams"].read_bytes())
    assert len(teams["training"]["reward_mapping"]) == 3
    steps = teams["inference"]["steps"]
    for step in steps:
        assert [a["agent"] for a in step["agent_steps"]] == ["team_red", "team_blue"]
        for agent in step["agent_steps"]:
            assert 3 <= len(agent["unit_steps"]) <= 10
            assert len(agent["rewards"]) == 3
            assert [len(row) for row in agent["observation_space"]] == [8] * 8
            assert {"action_distribution", "health", "value_estimate", "enemy_unit_health"} <= agent.keys()
    assert any("custom_metrics" in a for s in steps for a in s["agent_steps"])

    frames = json.loads(files["frames"].read_bytes())["inference"]["steps"]
    assert all(len(s["agent_steps"][0]["observation_space"]) == 8 for s in frames)
    with Image.open(io.BytesIO(base64.b64decode(frames[0]["image"]))) as image:
        assert (image.format, image.size) == ("PNG", generate.FRAME_SIZE)
    assert len({s["image"] for s in frames}) > 10

    pixels = json.loads(files["pixels"].read_bytes())["inference"]["steps"]
    observation = pixels[0]["agent_steps"][0]["observation_space"]
    assert [len(row) for row in observation] == [84] * 84
    assert "image" not in pixels[0]


def test_one_ingest_measurement_in_a_fresh_process(files: dict[str, Path], tmp_path: Path) -> None:
    result = run.measure("ingest", files["teams"], lake=tmp_path / "lake")
    assert result["status"] == "ok", result
    assert result.keys() >= MEASURED
    assert result["input_bytes"] == files["teams"].stat().st_size
    assert result["steps"] > 1 and result["lake_bytes"] > 0
    # The command's own peak memory, recorded although `run` leaves through os._exit (cli._leave).
    assert result["peak_rss_mib"] > 15


def test_start_up_measurements_record_the_commands_memory() -> None:
    for how in ("help", "run"):
        result = measure.startup(Path(__file__).resolve().parent.parent / "examples" / "lunar_lander.json", how)
        assert result["status"] == "ok", result
        assert result["peak_rss_mib"] > 15, how


def test_reference_measurements_agree_on_the_steps(files: dict[str, Path]) -> None:
    floor = measure.parse_floor(files["frames"])
    work = measure.frames_work(files["frames"])
    base = measure.baseline(files["frames"])
    for result in (floor, work, base):
        assert result.keys() >= MEASURED
        assert result["steps"] == floor["steps"]
    assert work["frames"] == floor["steps"]
    assert base["agent_steps"] == floor["steps"]


@pytest.mark.slow
def test_whole_suite_on_tiny_inputs(tmp_path: Path) -> None:
    """``benchmarks.run`` end to end (about ten fresh processes), down to the report's sections."""
    output = tmp_path / "BENCHMARKS.md"
    report = run.main(["--sizes", "100KB", "--profiles", "pixels", "--repeat", "1", "--lake-sizes", "3",
                       "--trajectory-steps", "300", "--scale", "40", "--sampler", "2100", "--sampler-seconds", "0.2",
                       "--shapes", "2", "--shapes-size", "100KB", "--data", str(tmp_path / "data"),
                       "--output", str(output)])
    summary = report["files"][0]["summary"]
    assert {kind: s["status"] for kind, s in summary.items()} == {
        "ingest": "ok", "parse_floor": "ok", "baseline": "ok"}
    assert report["reads"]["query 3 polars"]["episodes"] == 3
    assert report["reads"]["trajectory numpy"]["shape"] == [300, 8]
    sampled = report["sampler"]["sizes"]["2100"]["runs"]
    assert sampled["frames/yes"]["prepared"] == "v2-84x84-gray-max2-area-opencv-error"
    assert sampled["frames/no"]["prepared"] is None and sampled["frames/yes"]["transitions_per_second"] > 0
    shapes = report["shapes"]
    assert [entry["seed"] for entry in shapes] == [1, 2]
    for entry in shapes:  # seed 1 has frames: measured against the frames reference too
        expected = {"ingest", "parse_floor"} | ({"frames_work"} if entry["shape"]["frame"] else set())
        assert {kind: s["status"] for kind, s in entry["summary"].items()} == dict.fromkeys(expected, "ok")
    text = output.read_text()
    for heading in ("## Machine", "## Ingest and its references", "### Ratios", "## Targets (issue 5)",
                    "### Random shapes", "## Read side", "## Scale", "## Sampler (issue 16)"):
        assert heading in text
    assert "on random shapes" in text
