"""The ``ingest-pipeline`` command: argument parsing and printing over the ``pipeline`` library."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

import pipeline
from pipeline.ingest import IngestResult
from pipeline.lake import ENV_VAR, resolve_lake

lake_option = click.option(
    "--lake", type=click.Path(file_okay=False), envvar=ENV_VAR, show_envvar=True,
    help="Lake folder. [default: ./lake]",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(pipeline.__version__, prog_name="ingest-pipeline")
def cli() -> None:
    """Stream RL episode files into a Parquet lake that polars reads.

    \b
    Examples:
      ingest-pipeline run episode.json
      ingest-pipeline run runs/*.json.gz --lake /data/lake --json
      ingest-pipeline validate https://example.org/episode.json
    """


class _Progress:
    """A bytes-read progress bar on stderr, shown only on a terminal."""

    def __init__(self, enabled: bool, label: str) -> None:
        self._bar: Any = None
        self._enabled = enabled and sys.stderr.isatty()
        self._label = label
        self._done = 0

    def __call__(self, done: int, total: int | None) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            self._bar = click.progressbar(length=total, label=self._label, file=sys.stderr,
                                          show_pos=total is None, show_percent=total is not None)
            self._bar.__enter__()
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _summary(result: IngestResult) -> str:
    if not result.ok:
        return f"{result.status}: {result.error}"
    verb = {"ingested": "ingested", "exists": "already present", "valid": "valid"}[result.status]
    return (
        f"{result.source}: {verb} episode {result.episode_id} "
        f"({result.steps} steps, {result.agent_steps} agent steps, {result.unit_steps} unit steps, "
        f"{result.mb_per_s:.1f} MB/s)"
    )


def _process(sources: tuple[str, ...], action: Any, as_json: bool, quiet: bool) -> None:
    failed = False
    for source in sources:
        progress = _Progress(not (quiet or as_json), source)
        name = "-" if source == "-" else None
        target: Any = sys.stdin.buffer if source == "-" else source
        try:
            result = action(target, name=name, progress=progress)
        finally:
            progress.close()
        failed |= not result.ok
        if as_json:
            click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        elif not result.ok:
            click.echo(_summary(result), err=True)
        elif not quiet:
            click.echo(_summary(result))
    if failed:
        sys.exit(1)


@cli.command()
@click.argument("sources", nargs=-1, required=True, metavar="FILE_OR_URL...")
@lake_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def run(sources: tuple[str, ...], lake: str | None, as_json: bool, quiet: bool) -> None:
    """Ingest episode files into the lake, each published atomically.

    Each FILE_OR_URL is a path, a file:// or http(s):// URL, or - for standard input;
    .gz .bz2 .xz .zst files are decompressed on the fly. Exit status: 0 when every
    file is ingested or already present, 1 when any is invalid or failed.

    \b
    Examples:
      ingest-pipeline run episode.json
      ingest-pipeline run a.json b.json.gz --lake /data/lake
      ingest-pipeline run episode.json --json | jq .episode_id
    """
    root = resolve_lake(lake)
    _process(sources, lambda src, **kw: pipeline.ingest(src, lake=root, **kw), as_json, quiet)


@cli.command()
@click.argument("sources", nargs=-1, required=True, metavar="FILE_OR_URL...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def validate(sources: tuple[str, ...], as_json: bool, quiet: bool) -> None:
    """Check episode files against every format rule; write nothing.

    \b
    Examples:
      ingest-pipeline validate episode.json
      ingest-pipeline validate runs/*.json --json
    """
    _process(sources, pipeline.validate, as_json, quiet)


def main() -> None:
    cli(prog_name="ingest-pipeline")


if __name__ == "__main__":
    main()
