"""The ``ingest-pipeline`` command: argument parsing and printing over the ``pipeline`` library.

Each command is a few lines over public names of ``pipeline`` (text from ``pipeline.console``); the
file is long because every command carries its options and a help text with examples, which is
where a user reads them (a test keeps every command's Examples block true).
"""

from __future__ import annotations

import contextlib
import gc as _gc  # `gc` is a command below
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import click

import pipeline
from pipeline import console

lake_option = click.option(
    "--lake", type=click.Path(file_okay=False), envvar=pipeline.LAKE_ENV_VAR, show_envvar=True,
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


def _echo_result(result: pipeline.IngestResult, as_json: bool, quiet: bool) -> None:
    """One file's outcome: a JSON line, an error line on stderr, or (unless quiet) a summary line."""
    if as_json:
        click.echo(console.json_line(result.to_dict()))
    elif not result.ok:
        click.echo(console.result_line(result), err=True)
    elif not quiet:
        click.echo(console.result_line(result))


def _process(sources: list[str], action: Any, as_json: bool, quiet: bool) -> None:
    failed = False
    for source in sources:
        progress = console.FileProgress(not (quiet or as_json), source)
        name = "-" if source == "-" else None
        target: Any = sys.stdin.buffer if source == "-" else source
        try:
            result = action(target, name=name, progress=progress)
        finally:
            progress.close()
        failed |= not result.ok
        _echo_result(result, as_json, quiet)
    if failed:
        sys.exit(1)


@cli.command()
@click.argument("sources", nargs=-1, required=True, metavar="FILE_OR_URL...")
@lake_option
@click.option("--recursive", "-r", is_flag=True, help="Search folders and their sub-folders.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), metavar="N",
              help="Ingest N files at once in worker processes; 1 runs here. [default: number of cores]")
@click.option("--fail-fast", is_flag=True, help="Start no new file after the first invalid or failed one.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors and the final summary.")
@click.option("--no-compact", "no_compact", is_flag=True,
              help="Do not compact a fragmented environment at the end (see `compact`).")
def run(sources: tuple[str, ...], lake: str | None, recursive: bool, jobs: int | None, fail_fast: bool,
        as_json: bool, quiet: bool, no_compact: bool) -> None:
    """Ingest episode files into the lake, each published atomically.

    Each FILE_OR_URL is a file, a folder (its *.json files and their .gz .bz2 .xz .zst
    forms; with --recursive, its sub-folders' too), a glob pattern, a file:// or
    http(s):// URL, or - for standard input; compressed files are decompressed on the
    fly. Files are ingested in parallel; one line per file, then, for more than one
    file, a summary on stderr. Exit status: 0 when every file is ingested or already
    present, 1 when any is invalid or failed.

    \b
    Examples:
      ingest-pipeline run episode.json
      ingest-pipeline run a.json b.json.gz --lake /data/lake
      ingest-pipeline run runs/ --recursive --jobs 4 --quiet
      ingest-pipeline run 'runs/**/*.json.zst' https://example.org/ep.json -
      ingest-pipeline run episode.json --json | jq .episode_id
    """
    _ingest_only_process()
    bar = console.BatchBar(enabled=not quiet)
    try:
        batch = pipeline.ingest_many(sources, lake=pipeline.resolve_lake(lake), jobs=jobs, recursive=recursive,
                                     fail_fast=fail_fast, progress=bar, compact=not no_compact)
    except pipeline.PipelineError as exc:  # a folder that cannot be listed
        raise click.ClickException(str(exc)) from exc
    if not batch.summary.files:
        raise click.UsageError(f"no episode files (*.json, *.json.gz, .bz2, .xz, .zst) in {' '.join(sources)}")
    with batch:
        for result in batch:
            with bar.hidden():
                _echo_result(result, as_json, quiet)
    bar.close()
    if batch.summary.files > 1:
        click.echo(console.batch_summary(batch.summary), err=True)
    if not batch.summary.ok:
        sys.exit(1)


@cli.command()
@click.argument("sources", nargs=-1, required=True, metavar="FILE_OR_URL...")
@click.option("--recursive", "-r", is_flag=True, help="Search folders and their sub-folders.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
def validate(sources: tuple[str, ...], recursive: bool, as_json: bool, quiet: bool) -> None:
    """Check episode files against every format rule; write nothing.

    Takes the same inputs as run: files, folders, glob patterns, URLs and - for standard input.

    \b
    Examples:
      ingest-pipeline validate episode.json
      ingest-pipeline validate runs/ --recursive --json
      ingest-pipeline validate 'runs/**/*.json.gz' --quiet
    """
    _ingest_only_process()
    try:
        files = pipeline.expand_sources(sources, recursive=recursive)
    except pipeline.PipelineError as exc:  # a folder that cannot be listed
        raise click.ClickException(str(exc)) from exc
    if not files:
        raise click.UsageError(f"no episode files (*.json, *.json.gz, .bz2, .xz, .zst) in {' '.join(sources)}")
    _process([str(f) for f in files], pipeline.validate, as_json, quiet)


# True in the ingest-pipeline command's own process; False when cli is called in-process (tests, notebooks).
_PROCESS_IS_OURS = False
# True once a command that leaves nothing to the interpreter's exit runs in our own process (see main).
_LEAVE_AT_ONCE = False


def _ingest_only_process() -> None:
    """In the command's own process, keep pyarrow from importing pandas (0.2-0.27 s per run), and end
    the process at once when the command is done (see :func:`main`).

    Only for commands that convert nothing but lists and numpy arrays (run, validate), and whose files
    are all closed, and the lake's fsynced, before they return; a caller's process is never changed
    (see pipeline/nopandas.py).
    """
    global _LEAVE_AT_ONCE
    if _PROCESS_IS_OURS:
        pipeline.keep_pandas_out()
        _LEAVE_AT_ONCE = True


@contextlib.contextmanager
def _library_errors() -> Iterator[None]:
    """Turn the library's (and polars') errors into one-line click errors."""
    import polars as pl

    try:
        yield
    except (pipeline.PipelineError, pl.exceptions.PolarsError) as exc:
        # polars appends its query plan to errors; the first paragraph is the message
        raise click.ClickException(" ".join(str(exc).split("\n\n", 1)[0].split())) from exc
    except OSError as exc:  # the last resort: the library names its own; this one names at least the file
        where = f" {exc.filename}" if exc.filename else ""
        raise click.ClickException(f"cannot read or write{where}: {exc.strerror or exc}") from exc


def _no_such_folder(path: Path) -> bool:
    """Whether ``path`` does not exist (not: cannot be looked at, which the library reports)."""
    try:
        path.stat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def _open_lake(lake: str | None) -> pipeline.Lake:
    """The lake a reading command reads; a lake folder that does not exist is an error (usually a typo)."""
    path = pipeline.resolve_lake(lake)
    if _no_such_folder(path):
        raise click.ClickException(f"no lake at {path} (no such folder); give --lake the lake's folder, "
                                   f"or ingest into it first with: ingest-pipeline run FILE --lake {path}")
    return pipeline.Lake(path)


@cli.command("ls")
@click.option("--env", "environment", metavar="NAME", help="Only episodes of this environment.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per episode.")
@lake_option
def ls(environment: str | None, as_json: bool, lake: str | None) -> None:
    """List the episodes in the lake, one line each, oldest ingest first.

    \b
    Examples:
      ingest-pipeline ls
      ingest-pipeline ls --env LunarLander-v3 --json
    """
    with _library_errors():
        rows = _open_lake(lake).listing(environment).to_dicts()
    if as_json:
        for row in rows:
            click.echo(console.json_line({**row, "ingested_at": console.timestamp(row["ingested_at"])}))
    elif rows:
        click.echo(console.listing(rows))


@cli.command()
@click.argument("episode_id")
@click.option("--json", "as_json", is_flag=True, help="Print it as one JSON object.")
@lake_option
def show(episode_id: str, as_json: bool, lake: str | None) -> None:
    """Show an episode: metadata, per-agent summary, action and reward labels.

    EPISODE_ID may be abbreviated to any unique prefix.

    \b
    Examples:
      ingest-pipeline show 257a0fe1
      ingest-pipeline show 257a --json | jq .agents
    """
    with _library_errors():
        info = _open_lake(lake).describe(episode_id)
    if as_json:
        info["episode"]["ingested_at"] = console.timestamp(info["episode"]["ingested_at"])
        click.echo(console.json_line(info))
    else:
        click.echo(console.describe(info))


@cli.command()
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True, help="json: one object per line; parquet needs -o.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE instead of standard output.")
@lake_option
def query(sql: str, fmt: str, output: str | None, lake: str | None) -> None:
    """Run polars SQL over the lake's tables.

    The tables are episodes, episode_agents, steps, agent_steps and unit_steps, each
    with environment and episode_id columns, and the label tables action_labels,
    unit_action_labels (episode_id, action, action_label) and reward_labels
    (episode_id, component, reward_name).

    \b
    Examples:
      ingest-pipeline query "SELECT environment, count(*) AS n FROM episodes GROUP BY environment"
      ingest-pipeline query "SELECT * FROM episode_agents WHERE total_reward >= 100" --format csv
      ingest-pipeline query "SELECT * FROM agent_steps" --format parquet -o steps.parquet
    """
    import polars as pl

    if fmt == "parquet" and output is None:
        raise click.UsageError("--format parquet needs -o FILE")
    with _library_errors():
        frame = cast("pl.DataFrame", _open_lake(lake).sql(sql, eager=True))
        if fmt == "table":
            with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=80, tbl_width_chars=200):
                text = str(frame)
        elif fmt == "csv":
            text = frame.write_csv()
        elif fmt == "json":
            text = frame.write_ndjson()
        else:
            _write_output(str(output), frame.write_parquet)
            return
    if output is None:
        click.echo(text, nl=fmt == "table")
    else:
        data = (text if fmt != "table" else text + "\n").encode()
        _write_output(output, lambda path: Path(path).write_bytes(data))


def _write_output(output: str, write: Any) -> None:
    """Write an output file with ``write(path)``; a failure (disk full, no such folder) is one line."""
    try:
        write(output)
    except OSError as exc:
        raise click.ClickException(f"could not write {output}: {exc.strerror or exc}") from exc


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        height, width = (int(part) for part in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected HEIGHTxWIDTH such as 84x84, not {value!r}") from None
    return height, width


@cli.command()
@click.argument("episode_ids", nargs=-1, required=True, metavar="EPISODE_ID...")
@click.option("--to", "fmt", type=click.Choice(["npz", "d3rlpy"]), required=True, help="Output format.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="File to write.")
@click.option("--agent", help="The agent to export. [default: each episode's first agent]")
@click.option("--frames", is_flag=True, help="Decode frames (d3rlpy: as the observations; npz: a frames array).")
@click.option("--resize", metavar="HxW", callback=_size, help="Resize frames, e.g. 84x84 (implies --frames).")
@click.option("--grayscale", is_flag=True, help="Grayscale frames (implies --frames).")
@click.option("--stack-n", type=click.IntRange(min=1), help="Stack each frame with the N-1 before it.")
@click.option("--framestack-axis-first", is_flag=True, help="Put the stack axis first in each frame.")
@click.option("--missing-frames", type=click.Choice(["error", "previous"]), default="error", show_default=True,
              help="A step without an image: fail, or show the latest image before it.")
@click.option("--downsample-frequency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Keep every Nth step (rewards of skipped steps add up).")
@click.option("--downsample-offset", type=click.IntRange(min=0), default=0, show_default=True,
              help="The first step kept.")
@click.option("--prepared/--decode", default=None,
              help="Frames from a prepared store (`frames prepare`), required for every episode, or decoded "
                   "from the PNGs. [default: the store where it holds an episode, else decoded]")
@lake_option
def export(episode_ids: tuple[str, ...], fmt: str, output: str, agent: str | None, frames: bool,
           resize: tuple[int, int] | None, grayscale: bool, stack_n: int | None, framestack_axis_first: bool,
           missing_frames: str, downsample_frequency: int, downsample_offset: int, prepared: bool | None,
           lake: str | None) -> None:
    """Export episodes' trajectories as numpy arrays (.npz) or a d3rlpy dataset.

    d3rlpy needs the rl extra: pip install 'ingest-pipeline[rl]'.

    \b
    Examples:
      ingest-pipeline export 257a0fe1 --to npz -o lander.npz
      ingest-pipeline export 257a 3f2a --to d3rlpy -o lander.h5
      ingest-pipeline export 257a --to d3rlpy -o pixels.h5 --resize 84x84 --grayscale --stack-n 4 \\
          --framestack-axis-first --downsample-frequency 4 --prepared
    """
    options: Any = False
    if frames or resize or grayscale or stack_n:
        options = pipeline.FrameOptions(resize=resize, grayscale=grayscale, stack_n=stack_n,
                                        framestack_axis_first=framestack_axis_first,
                                        missing=missing_frames)  # type: ignore[arg-type]
    sampling: dict[str, Any] = {"downsample_frequency": downsample_frequency, "downsample_offset": downsample_offset,
                                "prepared": prepared}
    with _library_errors():
        the_lake = _open_lake(lake)
        if fmt == "npz":
            the_lake.to_npz(output, list(episode_ids), agent, frames=options, **sampling)
        else:
            with contextlib.redirect_stdout(sys.stderr):  # d3rlpy logs on stdout
                dataset = the_lake.to_d3rlpy(list(episode_ids), agent, frames=options,
                                             observation="frames" if options else "vector", **sampling)
            pipeline.dump_d3rlpy(dataset, output)
    click.echo(f"exported {console.plural(len(episode_ids), 'episode')} to {output}")


@cli.command()
@click.argument("episode_ids", nargs=-1, required=True, metavar="EPISODE_ID...")
@lake_option
def rm(episode_ids: tuple[str, ...], lake: str | None) -> None:
    """Remove episodes from the lake, each atomically (never half an episode).

    Every EPISODE_ID (or unique prefix) is checked before any episode is removed.

    \b
    Examples:
      ingest-pipeline rm 257a0fe1
      ingest-pipeline rm 257a 3f2a --lake /data/lake
    """
    with _library_errors():
        removed = _open_lake(lake).remove(episode_ids)
    for location in removed:
        click.echo(f"removed episode {location.episode_id} ({location.environment})")


@cli.command()
@click.argument("episode_ids", nargs=-1, metavar="[EPISODE_ID]...")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="HTML file to write. [default: report.html, or lake.html for an overview]")
@click.option("--env", "environment", metavar="NAME", help="Overview: only episodes of this environment.")
@click.option("--where", metavar="CONDITION", help="Overview: only episodes matching this SQL condition on episodes.")
@click.option("--sql", metavar="QUERY", help="Overview: only the episodes this SQL query returns (episode_id).")
@click.option("--frames", default="200", show_default=True, metavar="N|all|none",
              help="Frames in the player: an evenly spaced subset of N, all, or none.")
@click.option("--resize", metavar="HxW", callback=_size, help="Resize the frames, e.g. 210x160.")
@lake_option
def report(episode_ids: tuple[str, ...], output: str | None, environment: str | None, where: str | None,
           sql: str | None, frames: str, resize: tuple[int, int] | None, lake: str | None) -> None:
    """Write a self-contained HTML report: episodes, or an overview of the lake.

    With EPISODE_IDs (unique prefixes are fine): each episode's plots and frame player,
    several compared side by side. Without: the lake's (or a selection's) return and
    length distributions and its episodes. Needs: pip install 'ingest-pipeline[report]'.

    \b
    Examples:
      ingest-pipeline report 257a0fe1 -o report.html
      ingest-pipeline report 257a 3f2a --frames all --resize 210x160
      ingest-pipeline report --env LunarLander-v3 -o lake.html
      ingest-pipeline report --where "algorithm = 'PPO' AND total_reward > 100"
    """
    output = output or ("report.html" if episode_ids else "lake.html")
    with _library_errors():
        path = pipeline.Lake(lake).report(output, list(episode_ids) or None, environment=environment, where=where,
                                          sql=sql, frames=frames, resize=resize)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


@cli.command()
@lake_option
@click.option("--env", "environment", metavar="NAME", help="Only this environment.")
def compact(lake: str | None, environment: str | None) -> None:
    """Rewrite episode folders and small segments as segments: fewer, larger files.

    Each environment is swapped atomically; ingests, removals and readers may run meanwhile.

    \b
    Examples:
      ingest-pipeline compact
      ingest-pipeline compact --lake /data/lake --env CartPole-v1
    """
    with _library_errors():
        report = pipeline.compact(lake, environment=environment)
    click.echo(f"compacted {console.plural(report.episodes, 'episode')} of "
               f"{console.plural(report.environments, 'environment')} into "
               f"{console.plural(report.segments, 'segment')} ({report.replaced} folders and segments retired)")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float:
    if value is None:
        return 0.0
    text = value.strip().lower()
    try:
        return float(text[:-1]) * _UNITS[text[-1]] if text and text[-1] in _UNITS else float(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a duration such as 90s, 30m, 12h or 2d") from None


@cli.command()
@lake_option
@click.option("--older-than", metavar="DURATION", callback=_duration,
              help="Only remove leftovers older than this (90s, 30m, 12h, 2d). [default: any age]")
def gc(lake: str | None, older_than: float) -> None:
    """Remove the staging folders of ingests that are no longer running (and stale prepared frames).

    A crashed or killed ingest leaves its folder in LAKE/_staging; one that is still running
    holds a lock on it and is never touched. Locks are per machine: on a lake shared by several
    machines, give an --older-than longer than any ingest takes.

    \b
    Examples:
      ingest-pipeline gc
      ingest-pipeline gc --lake /data/lake --older-than 12h
    """
    with _library_errors():
        report = pipeline.gc(lake, older_than=older_than)
    for folder in report.removed:
        click.echo(f"removed {folder}")
    kept = len(report.running) + len(report.recent)
    if report.frames:
        click.echo(f"{len(report.frames)} prepared frame file(s) removed (episodes no longer in the lake)")
    if report.removed or kept:
        click.echo(f"{console.plural(len(report.removed), 'staging folder')} removed, "
                   f"{len(report.running)} still running, {len(report.recent)} too recent")
    elif not report.frames:
        click.echo("nothing to remove")


@cli.command()
@lake_option
@click.option("--deep", is_flag=True,
              help="Also read every page of every file (checksums verified) and check that the keys join.")
def check(lake: str | None, deep: bool) -> None:
    """Verify every committed episode is whole: tables present, readable, row counts right.

    Every file's footer is read, so a file cut short or not Parquet is found; --deep reads
    every page, verifying its checksum, and lists every damaged file with its episode.
    Prepared frame files (`frames prepare`) are checked too: each one's index, and with --deep
    every frame against its checksum; they are derived, so the remedy is to prepare them again.
    Exit status 0 when the lake is clean, 1 with one line per problem otherwise.

    \b
    Examples:
      ingest-pipeline check
      ingest-pipeline check --lake /data/lake --deep
    """
    with _library_errors():
        report = pipeline.check(lake, deep=deep)
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    if report.problems:
        click.echo(f"{console.plural(len(report.problems), 'problem')} in {console.plural(report.episodes, 'episode')}",
                   err=True)
        if report.damaged_episodes:
            click.echo(f"to take the damaged episodes out of the lake: ingest-pipeline rm "
                       f"{' '.join(report.damaged_episodes)}; then ingest their source files again", err=True)
        for key, ids in report.damaged_frames.items():
            click.echo(f"prepared frames are derived from the lake; to rebuild the damaged ones: ingest-pipeline "
                       f"frames rm {key} {' '.join(ids)}; then ingest-pipeline frames prepare --store {key} "
                       f"{' '.join(ids)}", err=True)
        sys.exit(1)
    frames = f" and {console.plural(report.frame_files, 'prepared frame file')}" if report.frame_files else ""
    click.echo(f"ok: {console.plural(report.episodes, 'episode')}{frames} checked{' (deep)' if deep else ''}")


@cli.group("import")
def import_group() -> None:
    """Import episodes from other dataset formats into the lake, each checked and committed as by run.

    \b
    Examples:
      ingest-pipeline import minari cartpole/random-v0 --lake /data/lake
    """


@import_group.command("minari")
@click.argument("dataset", metavar="DATASET_ID_OR_PATH")
@lake_option
@click.option("--env", "environment", metavar="NAME",
              help="Environment name in the lake. [default: the dataset's env_spec id]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per episode on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors and the final summary.")
def import_minari(dataset: str, lake: str | None, environment: str | None, as_json: bool, quiet: bool) -> None:
    """Import a local Minari dataset: one lake episode per Minari episode.

    DATASET_ID_OR_PATH is a dataset id in Minari's datasets folder ($MINARI_DATASETS_PATH,
    else ~/.minari/datasets) or a dataset's folder; nothing is downloaded. Each episode
    is checked and committed like any ingested file, one line each; exit status 1 when
    any is invalid or failed. Needs the minari extra: pip install 'ingest-pipeline[minari]'.

    \b
    Examples:
      ingest-pipeline import minari cartpole/random-v0
      ingest-pipeline import minari ~/.minari/datasets/D4RL/door/human-v2 --lake /data/lake --json
    """
    counts = {"ingested": 0, "exists": 0, "invalid": 0, "failed": 0}
    with _library_errors():  # the dataset cannot be opened, or minari is not installed
        for result in pipeline.import_minari(dataset, lake=pipeline.resolve_lake(lake), environment=environment):
            counts[result.status] += 1
            _echo_result(result, as_json, quiet)
    click.echo(f"{console.plural(sum(counts.values()), 'episode')}: {counts['ingested']} ingested, "
               f"{counts['exists']} already present, {counts['invalid']} invalid, {counts['failed']} failed", err=True)
    if counts["invalid"] or counts["failed"]:
        sys.exit(1)


@cli.group("frames")
def frames_group() -> None:
    """Prepared frame stores: frames decoded and processed once, so that readers need not decode PNGs.

    The sampler, trajectories, `export` and to_numpy / to_d3rlpy read a store made with their frame
    options when it holds their episodes, with the same values as decoding the PNGs.

    \b
    Examples:
      ingest-pipeline frames prepare --atari
      ingest-pipeline frames ls
      ingest-pipeline frames rm v2-84x84-gray-max2-area-opencv-error
    """


@frames_group.command("prepare")
@click.argument("episode_ids", nargs=-1, metavar="[EPISODE_ID]...")
@click.option("--atari", is_flag=True, help="CrowdPlay's processing (FrameOptions.atari()); other options refused.")
@click.option("--store", "store_key", metavar="KEY",
              help="The options an existing store was made with (its key, as `frames ls` shows it).")
@click.option("--resize", metavar="HxW", callback=_size, help="Resize frames, e.g. 84x84.")
@click.option("--grayscale", is_flag=True, help="Grayscale frames.")
@click.option("--max-n", type=click.IntRange(min=1), default=1, show_default=True,
              help="Each element is the pixel-wise max of this many consecutive raw frames.")
@click.option("--resample", type=click.Choice(["bilinear", "area"]), default="bilinear", show_default=True)
@click.option("--luma", type=click.Choice(["pillow", "opencv"]), default="pillow", show_default=True)
@click.option("--missing-frames", type=click.Choice(["error", "previous"]), default="error", show_default=True,
              help="A step without an image: none stored (sampling it fails), or the latest image before it.")
@click.option("--agent", help="The agent whose frames to prepare. [default: each episode's first agent]")
@click.option("--codec", type=click.Choice(["zstd", "raw"]), default="zstd", show_default=True,
              help="zstd: about the PNGs' size on disk; raw: ~5x larger, less CPU to read.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), metavar="N", help="Worker processes. [default: the cores]")
@lake_option
def frames_prepare(episode_ids: tuple[str, ...], atari: bool, store_key: str | None, resize: tuple[int, int] | None,
                   grayscale: bool, max_n: int, resample: str, luma: str, missing_frames: str, agent: str | None,
                   codec: str, jobs: int | None, lake: str | None) -> None:
    """Decode and process the frames of episodes (default: all) into the lake's frame store.

    Only episodes not prepared yet are done, so it resumes where a stopped run left off. A sampler,
    trajectory or export whose FrameOptions have the same resize, grayscale, max_n, resample, luma
    and missing then reads the store (any stacking) instead of decoding PNGs, with the same values.
    `gc` removes the frames of episodes no longer in the lake; `check` verifies the store.

    \b
    Examples:
      ingest-pipeline frames prepare --atari
      ingest-pipeline frames prepare 257a 3f2a --resize 84x84 --grayscale -j 2
      ingest-pipeline frames prepare --store v2-84x84-gray-max2-area-opencv-error 257a
    """
    chosen = resize or grayscale or max_n != 1 or resample != "bilinear" or luma != "pillow"
    if store_key:
        if atari or chosen or missing_frames != "error":
            raise click.UsageError("--store gives the frame options; give no other")
        with _library_errors():
            options = _open_lake(lake).store_options(store_key)
    elif atari:
        if chosen:
            raise click.UsageError("--atari fixes the frame options; give it alone (or with --missing-frames)")
        options = pipeline.FrameOptions.atari(missing=missing_frames)  # type: ignore[arg-type]
    else:
        options = pipeline.FrameOptions(resize=resize, grayscale=grayscale, max_n=max_n, resample=resample,  # type: ignore[arg-type]
                                        luma=luma, missing=missing_frames)  # type: ignore[arg-type]
    last = [0.0]

    def progress(report: Any, total: int) -> None:
        import time

        if time.monotonic() - last[0] >= 2:
            last[0] = time.monotonic()
            done = report.prepared + report.present + len(report.skipped or ())
            click.echo(f"{done}/{total} episodes, {report.frames:,} frames, "
                       f"{report.frames / max(report.seconds, 1e-9):,.0f} frames/s", err=True)

    with _library_errors():
        report = _open_lake(lake).prepare_frames(options, list(episode_ids) or None, agent, codec=codec,  # type: ignore[arg-type]
                                                 workers=jobs, progress=progress)
    for episode_id, name, reason in report.skipped or ():
        click.echo(f"not prepared: episode {episode_id} agent {name}: {reason} (readers decode its PNGs)")
    ratio = f", {report.bytes / report.image_bytes:.2f}x its PNG bytes" if report.image_bytes else ""
    click.echo(f"{console.plural(report.prepared, 'episode')} prepared ({report.frames:,} frames, "
               f"{report.bytes / 1e6:,.1f} MB{ratio}) in {report.seconds:.1f} s, {report.present} already prepared: "
               f"{report.store}")


@frames_group.command("ls")
@lake_option
def frames_ls(lake: str | None) -> None:
    """List the lake's prepared frame stores: entries, the lake's episodes each covers, size on disk.

    Stores of an older format are never read: remove them with `frames rm`. Entries of episodes
    no longer in the lake are counted as stale: `gc` deletes them.

    \b
    Examples:
      ingest-pipeline frames ls --lake /data/lake
    """
    with _library_errors():
        the_lake = _open_lake(lake)
        stores = the_lake.frame_stores()
        total = len(the_lake)
    for store in stores:
        size = f"{store.bytes / 1e6:,.1f} MB"
        if not store.current:
            click.echo(f"{store.key}  {store.entries} prepared  old format, never read: "
                       f"ingest-pipeline frames rm {store.key}  {size}")
            continue
        covered = store.episodes or 0
        share = f"{100 * covered / total:.0f}%" if total else "-"
        stale = f"  {store.stale} stale (gc deletes them)" if store.stale else ""
        click.echo(f"{store.key}  {store.entries} prepared  {covered:,}/{total:,} episodes ({share}){stale}  {size}")
    if not stores:
        click.echo("no prepared frames")


@frames_group.command("rm")
@click.argument("key")
@click.argument("episode_ids", nargs=-1, metavar="[EPISODE_ID]...")
@lake_option
def frames_rm(key: str, episode_ids: tuple[str, ...], lake: str | None) -> None:
    """Delete a prepared frame store (KEY, as `frames ls` shows it), or only its frames of some episodes.

    Stores are derived from the lake: nothing is lost, and `frames prepare` makes them again.
    Until then, readers decode the PNGs.

    \b
    Examples:
      ingest-pipeline frames rm v1-84x84-gray-max2-area-opencv-error
      ingest-pipeline frames rm v2-84x84-gray-max2-area-opencv-error 257a 3f2a
    """
    with _library_errors():
        removed = _open_lake(lake).remove_frames(key, list(episode_ids) if episode_ids else None)
    if episode_ids:
        click.echo(f"removed {console.plural(len(removed), 'prepared frame file')} from {key}")
    else:
        click.echo(f"removed the prepared frame store {key}")


def main() -> None:
    global _PROCESS_IS_OURS
    _PROCESS_IS_OURS = True
    try:
        cli(prog_name="ingest-pipeline")
    except SystemExit as done:  # click ends every command with sys.exit
        if _LEAVE_AT_ONCE and (done.code is None or isinstance(done.code, int)):
            _leave(done.code or 0)
        raise
    finally:
        # The interpreter's exit runs the cyclic collector over every object pyarrow, click and the
        # rest allocated (~13 ms of `run` on a tiny file, measured); frozen, they are left to the
        # module teardown's reference counting, and the process ends anyway.
        _gc.freeze()


def _leave(code: int) -> None:
    """End the process now, with ``code``, once standard output and error are flushed; return only if
    they cannot be (a closed pipe), for the interpreter to report it as usual.

    For ``run`` and ``validate``: the interpreter's exit would only tear down modules and objects
    (~10 ms of a run on a tiny file, measured), and run the exit handlers of thread and process
    pools these commands have shut down already.
    """
    import os

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


if __name__ == "__main__":
    main()
