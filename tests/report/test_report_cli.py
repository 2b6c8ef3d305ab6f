"""The report command: the files it writes, the text a user sees, and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli import cli
from pipeline.lake.layout import ENV_VAR
from pipeline.report import plot
from tests.report.report_helpers import build_report_lake, page_figures


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("report-cli")
    return root / "lake", build_report_lake(root)


def invoke(lake: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--lake", str(lake)], env={ENV_VAR: None})


def test_report_of_episodes_by_prefix(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    lake, ids = built
    out = tmp_path / "two.html"
    result = invoke(lake, "report", ids["lander"][:5], ids["full"][:5], "-o", str(out), "--frames", "none")
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)\n"
    keys = [f["key"] for f in page_figures(out)]
    assert keys[:4] == ["compare:returns", "compare:lengths", "compare:components", "compare:cumulative"]
    assert 'class="player"' not in out.read_text(encoding="utf-8")


def test_default_file_names(built: tuple[Path, dict[str, str]], tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    lake, ids = built
    monkeypatch.chdir(tmp_path)
    episode = invoke(lake, "report", ids["cart"][:8])
    assert episode.exit_code == 0, episode.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    overview = invoke(lake, "report", "--env", "CartPole-v1")
    assert overview.exit_code == 0, overview.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lake.html", "report.html"]


def test_overview_with_a_where_condition(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    lake, ids = built
    out = tmp_path / "lake.html"
    result = invoke(lake, "report", "--where", "algorithm = 'PPO'", "-o", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert ids["lander"] in text and ids["cart"] in text and ids["long"] not in text
    assert "WHERE algorithm = &#x27;PPO&#x27;" in text


def test_frames_and_resize_options(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    lake, ids = built
    out = tmp_path / "r.html"
    result = invoke(lake, "report", ids["long"], "-o", str(out), "--frames", "7", "--resize", "3x4")
    assert result.exit_code == 0, result.output
    assert "frame 1 of 7" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize(("args", "message"), [
    (["0000"], "Error: no episode '0000' in {lake}\n"),
    (["--env", "Nope"], "Error: no episode in {lake} matches environment = 'Nope'\n"),
    (["--where", "no_such_column = 1"], None),
    (["{cart}", "--frames", "lots"], "Error: frames must be a number, 'all' or 'none', not 'lots'\n"),
    (["{cart}", "--env", "CartPole-v1"],
     "Error: environment, where and sql select the episodes of a lake overview; an episode report takes episode ids\n"),
])
def test_errors_are_one_line_with_exit_status_1(built: tuple[Path, dict[str, str]], tmp_path: Path,
                                                args: list[str], message: str | None) -> None:
    lake, ids = built
    result = invoke(lake, "report", *(a.format(cart=ids["cart"]) for a in args), "-o", str(tmp_path / "r.html"))
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    if message is not None:
        assert result.output == message.format(lake=lake)
    assert not (tmp_path / "r.html").exists()


def test_a_bad_size_is_a_usage_error(built: tuple[Path, dict[str, str]]) -> None:
    lake, ids = built
    result = invoke(lake, "report", ids["cart"], "--resize", "big")
    assert result.exit_code == 2
    assert "expected HEIGHTxWIDTH such as 84x84, not 'big'" in result.output


def test_missing_extra_is_one_line(built: tuple[Path, dict[str, str]], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    lake, ids = built
    plot.plotly_js.cache_clear()
    monkeypatch.setattr(plot.importlib.util, "find_spec", lambda name: None)
    try:
        result = invoke(lake, "report", ids["cart"], "-o", str(tmp_path / "r.html"))
    finally:
        plot.plotly_js.cache_clear()
    assert (result.exit_code, result.output) == (
        1, "Error: an HTML report needs plotly, which is not installed: pip install 'ingest-pipeline[report]'\n")


def test_help_has_examples() -> None:
    result = CliRunner().invoke(cli, ["report", "--help"])
    assert result.exit_code == 0
    assert "ingest-pipeline report 257a0fe1 -o report.html" in result.output
    assert "--frames N|all|none" in result.output
