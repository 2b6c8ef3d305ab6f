"""Frame sampling through torch's ``DataLoader``: the sampler's rate when its workers use both cores (issue 16).

    python -m benchmarks.loader LAKE --workers 2 --mode plain --seconds 10
    python -m benchmarks.loader bench-data/sampler-lake-v2-2000000 --workers 0 --mode atari

``LAKE`` is a lake of 84x84 frames with a prepared store for the mode (``benchmarks/sampler.py``
builds and prepares one: ``python -m benchmarks.sampler --transitions 2000000 --frames --prepare``).
The loader iterates :class:`~pipeline.engine.torch_data.LakeDataset` over
``Lake.sampler(batch_size=256, observation="frames", prepared=True)``; ``cache_bytes`` (1 GiB by
default) is split evenly between the workers, so the cache budget is the whole loader's. After a
warm-up of 20 batches per worker it counts the transitions the training loop receives for
``--seconds``.

Memory: each process's ``VmHWM`` (a forked worker's counts the pages it still shares with its
parent, so their sum overstates) and each one's proportional set size (``Pss``, shared pages split
between the processes sharing them) at the end, when the caches are full: their sum is what the
loader holds. One JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def _field_kib(pid: int | str, path: str, field: str) -> int:
    with open(f"/proc/{pid}/{path}") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lake", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mode", choices=("plain", "atari"), default="plain")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--cache-mb", type=int, default=1024)
    args = parser.parse_args()

    from torch.utils.data import DataLoader

    from pipeline import FrameOptions, Lake
    from pipeline.engine.torch_data import LakeDataset

    options = FrameOptions.atari() if args.mode == "atari" else FrameOptions(grayscale=True, resize=(84, 84), stack_n=4)
    sampler = Lake(args.lake).sampler(batch_size=256, observation="frames", frames=options, seed=0,
                                      cache_bytes=(args.cache_mb << 20) // max(args.workers, 1), prepared=True)
    loader = DataLoader(LakeDataset(sampler), batch_size=None, num_workers=args.workers,
                        prefetch_factor=4 if args.workers else None)
    batches = iter(loader)
    for _ in range(20 * max(args.workers, 1)):
        next(batches)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        done += len(next(batches)["actions"])
    rate = done / (time.perf_counter() - started)
    import multiprocessing

    pids: list[int | str] = ["self", *(child.pid for child in multiprocessing.active_children() if child.pid)]
    print(json.dumps({
        "mode": args.mode, "workers": args.workers, "cache_mb": args.cache_mb,
        "transitions_per_second": round(rate),
        "vmhwm_mib": [round(_field_kib(pid, "status", "VmHWM:") / 1024) for pid in pids],
        "pss_mib_total": round(sum(_field_kib(pid, "smaps_rollup", "Pss:") for pid in pids) / 1024),
        "load_average": round(os.getloadavg()[0], 2),
    }))
    os._exit(0)  # the workers are daemons: no orderly shutdown to time


if __name__ == "__main__":
    main()
