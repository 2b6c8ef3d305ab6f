"""The torch dataset: workers share the sampler's batches without duplicates; a model trains from it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import Lake, MissingExtra, ingest
from tests.engine.test_sampler import _episode
from tests.helpers import write_json

torch = pytest.importorskip("torch")
from torch import Tensor  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from pipeline.engine.torch_data import LakeDataset  # noqa: E402


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    root = tmp_path_factory.mktemp("torch")
    for n, length in enumerate((5, 9, 14)):
        result = ingest(write_json(root / f"{n}.json", _episode(n, length)), lake=root / "lake")
        assert result.status == "ingested", result.error
    return Lake(root / "lake")


def _rows(batches: list[dict[str, Tensor]]) -> list[tuple[float, ...]]:
    """Each transition as one tuple of its values, sorted: the multiset of transitions."""
    rows: list[tuple[float, ...]] = []
    for batch in batches:
        flat = [batch[name].reshape(len(batch["indices"]), -1).to(torch.float64)
                for name in ("indices", "observations", "actions", "rewards", "next_observations", "terminals")]
        rows.extend(tuple(row) for row in torch.cat(flat, dim=1).tolist())
    return sorted(rows)


@pytest.mark.parametrize("epochs", [None, 2])
def test_two_workers_yield_the_plain_samplers_transitions(lake: Lake, epochs: int | None) -> None:
    sampler = lake.sampler(batch_size=8, seed=5, epochs=epochs)
    dataset = LakeDataset(sampler)
    count = 12 if epochs is None else sampler.num_batches
    assert count is not None
    loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="fork")
    from_workers = []
    for batch in loader:
        from_workers.append(batch)
        if len(from_workers) == count:
            break
    plain = [dataset.tensors(sampler.batch(j)) for j in range(count)]
    assert _rows(from_workers) == _rows(plain)
    # No batch twice: the loader takes the workers in turn, so even the order is the sampler's.
    assert [b["indices"].tolist() for b in from_workers] == [b["indices"].tolist() for b in plain]


def test_tensors_have_training_types(lake: Lake) -> None:
    batch = next(iter(LakeDataset(lake.sampler(batch_size=4), discrete_actions=True)))
    assert batch["observations"].dtype == torch.float32 and batch["observations"].shape == (4, 2)
    assert batch["actions"].dtype == torch.int64 and batch["terminals"].dtype == torch.bool
    frames = next(iter(LakeDataset(lake.sampler(batch_size=4, observation="frames"))))
    assert frames["observations"].dtype == torch.uint8 and frames["observations"].shape == (4, 3, 4, 3)


def test_a_small_model_trains_from_the_lake(lake: Lake) -> None:
    torch.manual_seed(0)
    dataset = LakeDataset(lake.sampler(batch_size=32, seed=0), discrete_actions=True)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    losses = []
    for step, batch in enumerate(DataLoader(dataset, batch_size=None)):
        # Behaviour cloning with a TD-style target just to use every field once.
        logits = model(batch["observations"])
        loss = torch.nn.functional.cross_entropy(logits, batch["actions"])
        value = model(batch["next_observations"]).max(dim=1).values.detach()
        target = batch["rewards"] + 0.9 * value * (~batch["terminals"]).float()
        loss = loss + 1e-4 * ((logits.max(dim=1).values - target) ** 2).mean()
        model.zero_grad()
        loss.backward()
        with torch.no_grad():  # plain SGD: creating a torch.optim optimiser first imports ~2.5 s of torch
            for parameter in model.parameters():
                parameter -= 0.1 * parameter.grad
        losses.append(loss.item())
        if step == 60:
            break
    assert np.isfinite(losses).all() and np.mean(losses[-10:]) < np.mean(losses[:10])


def test_missing_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "pipeline.engine.torch_data")
    with pytest.raises(MissingExtra, match=r"the torch dataset needs torch, which is not installed: "
                                           r"pip install 'ingest-pipeline\[torch\]'"):
        importlib.import_module("pipeline.engine.torch_data")
