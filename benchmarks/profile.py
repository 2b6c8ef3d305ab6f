"""Where ingest spends its time: sample one ingest with py-spy and summarise the stacks.

    python -m benchmarks.profile bench-data/teams-20MB-seed0-v1.json
    python -m benchmarks.profile FILE --native --top 25 --raw /tmp/ingest.raw

py-spy samples every thread of a fresh ``pipeline.ingest(FILE, lake=<temporary lake>)``. Only
samples taken inside ``ingest`` or in the threads it starts count: start-up and imports are left
out. Three views, each as a share of the counted samples of that thread:

- *inclusive*: the ``pipeline`` functions a sample is inside (a caller includes its callees);
- *self*: the deepest Python function of each sample (time in C code called from it, such as the
  ijson parser or pyarrow, is charged to that function);
- with ``--native``, the C function at the leaf (where the CPU actually was).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_LINE = re.compile(r":\d+\)$")


def _frame_name(frame: str) -> str:
    """``name (path/file.py:12)`` without the line number, so lines of one function add up."""
    return _LINE.sub(")", frame.strip())


def _is_python(frame: str) -> bool:
    return ".py:" in frame or ".py)" in frame or "(<" in frame


def summarise(raw: str, top: int = 20) -> str:
    """The text report of py-spy ``--format raw --threads`` output."""
    inclusive: dict[str, Counter[str]] = {}
    deepest: dict[str, Counter[str]] = {}
    leaf: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread") else "?"
        frames = [_frame_name(f) for f in frames[1:]]
        starts = [i for i, f in enumerate(frames) if f.startswith("ingest (") and "pipeline/ingestion/run.py" in f]
        if starts:
            frames = frames[starts[0]:]
        elif thread == "MainThread" or thread.startswith("thread ("):
            # Start-up, imports and shutdown; py-spy cannot name the main thread before ``threading``
            # is imported, so those samples come under a bare "thread (id)".
            continue
        totals[thread] += count
        seen = {f for f in frames if "pipeline/" in f}
        inclusive.setdefault(thread, Counter()).update({f: count for f in seen})
        python = [f for f in frames if _is_python(f)]
        deepest.setdefault(thread, Counter())[python[-1] if python else "(no Python frame)"] += count
        leaf.setdefault(thread, Counter())[frames[-1] if frames else "?"] += count
    out = []
    for thread, total in totals.most_common():
        out.append(f"== thread {thread}: {total} samples")
        for title, table in (("inclusive (pipeline functions)", inclusive), ("self (deepest Python frame)", deepest),
                             ("leaf frame", leaf)):
            counter = table.get(thread, Counter())
            if not counter:
                continue
            out.append(f"-- {title}")
            for name, count in counter.most_common(top):
                out.append(f"{100 * count / total:6.1f}%  {name}")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="the episode file to ingest")
    parser.add_argument("--rate", type=int, default=250, help="samples per second (default 250)")
    parser.add_argument("--native", action="store_true", help="also sample C frames (ijson, pyarrow, ...)")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--raw", help="keep py-spy's raw (collapsed stacks) output here")
    parser.add_argument("--pipeline", help="import pipeline from this folder instead of the working tree")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as scratch:
        raw_path = args.raw or os.path.join(scratch, "ingest.raw")
        code = ("import sys\nfrom pipeline import ingest\n"
                "r = ingest(sys.argv[1], lake=sys.argv[2])\n"
                "print(r.status, f'{r.seconds:.2f} s', f'{r.mb_per_s:.1f} MB/s', file=sys.stderr)\n")
        py_spy = "py-spy"
        candidate = Path(sys.executable).with_name("py-spy")
        if candidate.exists():
            py_spy = str(candidate)
        command = [py_spy, "record", "--rate", str(args.rate), "--threads", "--format", "raw", "-o", raw_path,
                   *(["--native"] if args.native else []),
                   "--", sys.executable, "-c", code, os.path.abspath(args.file), os.path.join(scratch, "lake")]
        root = os.path.abspath(args.pipeline or REPO)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        subprocess.run(command, cwd=root, env=env, check=True)
        print(summarise(Path(raw_path).read_text(), args.top))


if __name__ == "__main__":
    main()
