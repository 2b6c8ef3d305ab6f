"""benchmarks/report.py runs end to end on a tiny lake, so that it cannot rot unnoticed (no time is asserted)."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks import report
from tests.dataset_lake import build_lake


def test_write_measures_the_command_and_the_call(tmp_path: Path) -> None:
    ids = build_lake(tmp_path, ["lander"])
    figures = report._write(tmp_path / "lake", ids["lander"], tmp_path / "r.html")
    assert set(figures) == {"write_seconds", "in_process_seconds", "megabytes"}
    # Two separate runs, each timed: both are measured, but their order is the machine's (no timing assertion).
    assert figures["write_seconds"] > 0 and figures["in_process_seconds"] > 0
    assert figures["megabytes"] == (tmp_path / "r.html").stat().st_size / 1e6


def test_render_states_each_target() -> None:
    median = {"write_seconds": 1.5, "in_process_seconds": 0.4, "megabytes": 5.6, "interactive_seconds": 3.5,
              "all_drawn_seconds": 4.0, "script_seconds": 1.0}
    results = {"load_average": 0.5, "episodes": {
        "frames 100,000 steps": {"median": median, "runs": [median],
                                 "targets": {"write_seconds": (5.0, True), "interactive_seconds": (3.0, False)}},
        "teams 5,000 steps": {"median": {**median, "interactive_seconds": math.nan}, "runs": [median],
                              "targets": {"interactive_seconds": (3.0, None)}},
    }}
    text = report.render(results)
    assert "| report written (command, wall) ≤ 5 s | frames 100,000 steps | 1.50 s | yes |" in text
    assert "| interactive in Chromium ≤ 3 s | frames 100,000 steps | 3.50 s | **no** |" in text
    assert "| interactive in Chromium ≤ 3 s | teams 5,000 steps | nan s | – (no chromium) |" in text
