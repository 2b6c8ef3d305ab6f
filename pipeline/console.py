"""What the command line shows a person: result lines, progress bars and text tables.

The library's objects in, text out; nothing here reads or writes the lake. Kept out of ``cli.py`` so
that the commands stay a few lines each and the text is testable without a terminal.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from .ingestion.batch import BatchSummary
    from .ingestion.run import IngestResult


# Characters str.splitlines() breaks a line at that json.dumps(ensure_ascii=False) leaves raw in strings.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_line(value: Any) -> str:
    """``value`` as one line of JSON for ``--json`` output: text other than ASCII stays readable, but the
    characters that ``str.splitlines()`` (and JavaScript) also end a line at are escaped, so one record
    is one line for every reader."""
    return json.dumps(value, ensure_ascii=False).translate(_LINE_BREAKS)


class FileProgress:
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


def result_line(result: IngestResult) -> str:
    if not result.ok:
        return f"{result.status}: {result.error}"
    verb = {"ingested": "ingested", "exists": "already present", "valid": "valid"}[result.status]
    return (
        f"{result.source}: {verb} episode {result.episode_id} "
        f"({result.steps} steps, {result.agent_steps} agent steps, {result.unit_steps} unit steps, "
        f"{result.mb_per_s:.1f} MB/s)"
    )



class BatchBar:
    """The overall progress bar of ``run`` on stderr (files, bytes, rate, ETA), shown only on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled and sys.stderr.isatty()
        self._text = ""
        self._drawn_at = 0.0
        self._done = -1

    def __call__(self, summary: BatchSummary) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if summary.done == self._done and now - self._drawn_at < 0.1:
            return  # redraw at most ten times a second between files
        self._done, self._drawn_at = summary.done, now
        import shutil  # here: only a bar drawn on a terminal needs it (~4 ms of start-up)

        self._text = bar_text(summary, shutil.get_terminal_size().columns - 1)
        self._draw()

    def _draw(self) -> None:
        if self._text:
            sys.stderr.write("\r" + self._text + "\x1b[K")
            sys.stderr.flush()

    @contextlib.contextmanager
    def hidden(self) -> Iterator[None]:
        """Lift the bar off its line while something else is printed."""
        if self._enabled and self._text:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        yield
        self._draw()

    def close(self) -> None:
        if self._enabled and self._text:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        self._enabled = False


def bar_text(summary: BatchSummary, width: int) -> str:
    mb = summary.bytes_read / 1e6
    size = f"{mb:.1f}/{summary.bytes_total / 1e6:.1f} MB" if summary.bytes_total else f"{mb:.1f} MB"
    eta = summary.eta
    left = "--:--" if eta is None else f"{int(eta) // 60:02d}:{int(eta) % 60:02d}"
    info = f" {summary.done}/{summary.files} files  {size}  {summary.mb_per_s:.1f} MB/s  ETA {left}"
    cells = max(width - len(info) - 2, 0)
    filled = cells * summary.done // summary.files if summary.files else 0
    return ("[" + "#" * filled + "-" * (cells - filled) + "]" + info if cells >= 10 else info.strip())[:width]


def batch_summary(summary: BatchSummary) -> str:
    counts = (f"{summary.ingested} ingested, {summary.exists} already present, "
              f"{summary.invalid} invalid, {summary.failed} failed")
    if summary.skipped:
        counts += f", {summary.skipped} skipped"
    return (f"{summary.files} files: {counts}; {summary.bytes_read / 1e6:.1f} MB in {summary.seconds:.1f} s, "
            f"{summary.mb_per_s:.1f} MB/s")



def number(value: float | None) -> str:
    """A reward as people read it: at most 4 decimals, no trailing zeros; '-' for none."""
    return "-" if value is None else f"{round(value, 4):.12g}"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def timestamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def columns(rows: list[list[str]], right: frozenset[int] = frozenset(), indent: str = "") -> str:
    """Rows as text columns two spaces apart; the columns numbered in ``right`` align right."""
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    return "\n".join(
        indent + "  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                           for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows
    )



def describe(info: dict[str, Any]) -> str:
    e = info["episode"]
    parallel = ", parallel" if e["training_parallel"] else ""
    parts = [columns([
        ["episode", e["episode_id"]],
        ["environment", e["environment"]],
        ["algorithm", f"{e['algorithm']} ({e['iterations']} iterations, {e['num_gpus']:g} GPUs{parallel})"],
        ["source", f"{e['source']} ({e['source_bytes']} bytes)"],
        ["ingested at", f"{timestamp(e['ingested_at'])} (ingest-pipeline {e['pipeline_version']})"],
        ["steps", f"{e['length']} (numbers {e['first_step']} to {e['last_step']}), {e['agent_steps']} agent steps, "
                  f"{e['unit_steps']} unit steps, {plural(e['images'], 'image')}"],
        ["total reward", number(e["total_reward"])],
        ["training config", e["training_config"]],
        ["inference config", e["inference_config"]],
    ])]
    agents = info["agents"]
    if agents:
        header = ["AGENT", "STEPS", "FIRST", "LAST", "TOTAL REWARD", "MEAN", "MIN", "MAX", "UNITS", "UNIT STEPS"]
        parts.append("agents\n" + columns([header] + [
            [a["agent"], str(a["length"]), str(a["first_step"]), str(a["last_step"]), number(a["total_reward"]),
             number(a["mean_reward"]), number(a["min_reward"]), number(a["max_reward"]), str(a["units"]),
             str(a["unit_steps"])] for a in agents
        ], right=frozenset(range(1, 10)), indent="  "))
    width = max((len(a["reward_totals"] or ()) for a in agents), default=0)
    names = info["reward_names"] or [str(i) for i in range(width)]
    if width:
        parts.append("reward totals\n" + columns([["COMPONENT", *(a["agent"] for a in agents)]] + [
            [name, *(number(a["reward_totals"][i]) if a["reward_totals"] else "-" for a in agents)]
            for i, name in enumerate(names)
        ], right=frozenset(range(1, len(agents) + 1)), indent="  "))
    for title, labels in (("actions", info["actions"]), ("unit actions", info["unit_actions"])):
        if labels:
            parts.append(f"{title}\n" + columns([[str(k), v] for k, v in labels.items()],
                                                  right=frozenset({0}), indent="  "))
    return "\n\n".join(parts)




LISTING_HEADER = ["EPISODE", "ENVIRONMENT", "ALGORITHM", "STEPS", "AGENTS", "TOTAL REWARD", "INGESTED AT"]


def listing(rows: list[dict[str, Any]]) -> str:
    """The ``ls`` table: one line per episode under a header; empty for no episodes."""
    if not rows:
        return ""
    return columns([LISTING_HEADER] + [
        [r["episode_id"], r["environment"], r["algorithm"], str(r["steps"]), str(r["agents"]),
         number(r["total_reward"]), timestamp(r["ingested_at"])] for r in rows
    ], right=frozenset({3, 4, 5}))
