"""Paired reads of two lakes, each with its own checkout's code: the scale benchmark's reads, A/B.

    python -m benchmarks.scale_ab --a /work/main bench-data/scale-100000/lake \\
                                  --b . bench-data/scale-100000/lake-new --repeat 11

For a change to how segments are written and read: ``--a`` is the old code on a lake it wrote,
``--b`` the new code on a lake it wrote (the same episodes). Each read of
:mod:`benchmarks.scale` runs in fresh processes, A and B alternating, so both medians are taken
at the same moments whatever else the machine does; CPU seconds (user+sys of the call) are shown
too, as they move less with the load than wall time. The trajectory is of ``--episode`` (needed
for the ``trajectory`` kind), and ``--alone`` a lake holding it in its own folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.scale import TARGETS, read_once


def paired(kind: str, a: tuple[Path, Path], b: tuple[Path, Path], repeat: int, arg: str = "") -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    for _ in range(repeat):
        runs["a"].append(read_once(kind, a[1], arg, repo=a[0]))
        runs["b"].append(read_once(kind, b[1], arg, repo=b[0]))
    out: dict[str, Any] = {}
    for side, found in runs.items():
        out[side] = {"ms": round(1000 * statistics.median(r["seconds"] for r in found), 2),
                     "cpu_ms": round(1000 * statistics.median(r["cpu"] for r in found), 2), "n": found[0]["n"]}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", nargs=2, type=Path, metavar=("CHECKOUT", "LAKE"), required=True)
    parser.add_argument("--b", nargs=2, type=Path, metavar=("CHECKOUT", "LAKE"), required=True)
    parser.add_argument("--episode", default="")
    parser.add_argument("--alone", type=Path, help="a lake with the episode in its own folder (B's code reads it)")
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--kinds", default=",".join([*TARGETS, "trajectory"]))
    args = parser.parse_args(argv)
    a = (args.a[0].resolve(), args.a[1].resolve())
    b = (args.b[0].resolve(), args.b[1].resolve())
    episode = args.episode
    report: dict[str, Any] = {"load_before": [round(x, 2) for x in os.getloadavg()]}
    for kind in args.kinds.split(","):
        report[kind] = paired(kind, a, b, args.repeat, episode if kind == "trajectory" else "")
        print(kind, json.dumps(report[kind]), file=sys.stderr, flush=True)
    if args.alone is not None and episode:
        alone = args.alone.resolve()
        report["trajectory_folder"] = paired("trajectory", (a[0], alone), (b[0], alone), args.repeat, episode)
        print("trajectory_folder", json.dumps(report["trajectory_folder"]), file=sys.stderr, flush=True)
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
