"""A ``torch.utils.data.IterableDataset`` over a :class:`~pipeline.engine.sampler.Sampler` (``torch`` extra).

Batch ``j`` of a sampler is a function of ``(seed, j)``, so ``DataLoader`` worker ``k`` of ``W``
makes batches ``k, k + W, k + 2W, …`` with its own copy of the sampler (and its own caches): no
batch is made twice, none is skipped, and with ``batch_size=None`` the loader yields exactly the
plain sampler's batches (in order, as the loader takes workers in turn).

>>> from torch.utils.data import DataLoader                              # doctest: +SKIP
>>> data = LakeDataset(lake.sampler(chosen, batch_size=256, seed=0))     # doctest: +SKIP
>>> for batch in DataLoader(data, batch_size=None, num_workers=2):       # doctest: +SKIP
...     batch["observations"], batch["actions"], batch["rewards"], batch["next_observations"], batch["terminals"]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import MissingExtra
from .sampler import Sampler

try:
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError as exc:  # pragma: no cover - exercised by test_missing_torch_names_the_extra
    raise MissingExtra("the torch dataset", "torch", "torch") from exc

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals")


class LakeDataset(IterableDataset):
    """The sampler's batches as dicts of tensors: the five transition fields, plus ``indices``.

    ``float_dtype`` is the type of float arrays (vector observations, rewards, and float actions;
    the lake's are float64); frames stay uint8, terminals are bool, integral actions become int64
    when ``discrete_actions``. Use it with ``DataLoader(dataset, batch_size=None, ...)``: the
    sampler makes the batches.
    """

    def __init__(self, sampler: Sampler, *, float_dtype: torch.dtype = torch.float32,
                 discrete_actions: bool = False) -> None:
        super().__init__()
        self.sampler = sampler
        self.float_dtype = float_dtype
        self.discrete_actions = discrete_actions

    def __len__(self) -> int:
        if self.sampler.num_batches is None:
            raise TypeError("an endless sampler has no length: give it epochs=")
        return self.sampler.num_batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        # In a worker, self is that process's own copy of the dataset: its sampler's caches are its own.
        for batch in self.sampler.batches(start=worker, step=workers):
            yield self.tensors(batch)

    def tensors(self, batch: Any) -> dict[str, torch.Tensor]:
        """One :class:`~pipeline.engine.sampler.Batch` as a dict of tensors."""
        out = {}
        for name in (*FIELDS, "indices"):
            array = getattr(batch, name)
            tensor = torch.from_numpy(array)
            if name == "actions" and self.discrete_actions:
                tensor = tensor.to(torch.int64)
            elif tensor.is_floating_point():
                tensor = tensor.to(self.float_dtype)
            out[name] = tensor
        return out
