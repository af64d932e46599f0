"""``hotloop.distributed`` in one process (Ignite's serial model) and with samplers built for other ranks.

Real multi-process runs are in ``test_distributed_train.py`` (the documented example under ``torchrun``) and
``tests/collate/test_distributed.py`` (``gather_samples`` on two gloo ranks).
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from ignite.metrics import Accuracy
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, TensorDataset

from hotloop import create_supervised_evaluator
from hotloop.distributed import (
    ExactDistributedSampler,
    SampleGatherer,
    auto_eval_dataloader,
    auto_model,
    gather_samples,
    unwrap_model,
)


@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
@pytest.mark.parametrize(("size", "world_size"), [(9, 2), (10, 2), (7, 3), (8, 8), (5, 1)])
def test_exact_sampler_is_distributed_sampler_without_padding(size, world_size, shuffle):
    data = list(range(size))
    shards = []
    for rank in range(world_size):
        exact = ExactDistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=5)
        padded = DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=5)
        exact.set_epoch(2)
        padded.set_epoch(2)
        mine = list(exact)
        assert len(exact) == len(mine) == len(range(rank, size, world_size))
        assert mine == list(padded)[: len(mine)]  # the same order, less the repeats at the end
        shards.append(mine)
    assert sorted(index for shard in shards for index in shard) == data  # each index on exactly one rank


def test_exact_sampler_defaults_to_ignites_serial_world():
    sampler = ExactDistributedSampler(range(4))
    assert (sampler.num_replicas, sampler.rank, sampler.shuffle) == (1, 0, False)
    assert list(sampler) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_replicas": 3, "rank": 0}, "2 samples cannot give each of 3 ranks at least one"),
        ({"num_replicas": 2, "rank": 2}, "Invalid rank 2"),
    ],
)
def test_exact_sampler_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExactDistributedSampler([0, 1], **kwargs)


def test_gather_samples_accepts_the_exact_sampler():
    sampler = ExactDistributedSampler(list(range(5)), num_replicas=1, rank=0, shuffle=True, seed=1)
    order = list(sampler)
    assert gather_samples([f"s{i}" for i in order], sampler=sampler) == [f"s{i}" for i in range(5)]


def _dataset(size: int) -> TensorDataset:
    x = torch.arange(size * 2, dtype=torch.float32).reshape(size, 2)
    return TensorDataset(x, (x[:, 0] > size).long())


def test_auto_eval_dataloader_in_one_process_is_ignites_in_order():
    loader = auto_eval_dataloader(_dataset(5), batch_size=2)
    assert [len(x) for x, _ in loader] == [2, 2, 1]
    assert torch.equal(torch.cat([x for x, _ in loader]), _dataset(5).tensors[0])


@pytest.mark.parametrize("rank", [0, 1])
def test_auto_eval_dataloader_shards_exactly_in_a_group(rank):
    with (
        mock.patch("ignite.distributed.get_world_size", return_value=2),
        mock.patch("ignite.distributed.get_rank", return_value=rank),
        mock.patch("ignite.distributed.utils.get_world_size", return_value=2),
        mock.patch("ignite.distributed.utils.get_rank", return_value=rank),
        mock.patch("ignite.distributed.utils.get_nproc_per_node", return_value=2),
    ):
        loader = auto_eval_dataloader(_dataset(5), batch_size=4)
    assert isinstance(loader.sampler, ExactDistributedSampler) and loader.batch_size == 2  # global 4 over 2 ranks
    assert [x[:, 0].tolist() for x, _ in loader] == ([[0.0, 4.0], [8.0]] if rank == 0 else [[2.0, 6.0]])


class _Stream(IterableDataset):
    def __iter__(self):
        return iter(range(3))


@pytest.mark.parametrize(
    ("dataset", "kwargs", "error", "message"),
    [
        (_Stream(), {}, TypeError, "an IterableDataset shards itself"),
        (_dataset(2), {"sampler": None}, ValueError, "sampler= is not accepted"),
        (_dataset(2), {"batch_sampler": None}, ValueError, "batch_sampler= is not accepted"),
    ],
)
def test_auto_eval_dataloader_rejects(dataset, kwargs, error, message):
    with pytest.raises(error, match=message):
        auto_eval_dataloader(dataset, **kwargs)


def test_unwrap_model():
    model = torch.nn.Linear(2, 2)
    assert unwrap_model(model) is model
    assert unwrap_model(torch.nn.DataParallel(model)) is model


def test_auto_model_in_one_process_on_cpu_is_ignites():
    model = torch.nn.Linear(2, 2)
    assert auto_model(model) is model  # no process group, CPU: nothing to wrap or move


class _Doubler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, 2 * x], dim=1)


@pytest.mark.parametrize("sampler", ["none", "distributed"])
def test_sample_gatherer_gives_one_item_per_sample_in_dataset_order(sampler):
    data = _dataset(5)
    if sampler == "distributed":
        loader = DataLoader(data, batch_size=2, sampler=DistributedSampler(data, 1, 0, shuffle=True, seed=3))
    else:
        loader = DataLoader(data, batch_size=2)
    evaluator = create_supervised_evaluator(_Doubler(), metrics={"accuracy": Accuracy(is_multilabel=False)})
    gatherer = SampleGatherer(output_transform=lambda output: output[0][:, :2]).attach(evaluator)
    for _ in range(2):  # a second run starts afresh
        evaluator.run(loader)
        assert len(evaluator.state.samples) == 5
        assert torch.equal(torch.stack(evaluator.state.samples), data.tensors[0])
    assert gatherer._samples == []  # nothing kept between runs


def test_sample_gatherer_copies_outputs_that_a_step_reuses():
    buffer = torch.zeros(2, 1)

    def step(engine, batch):  # a graphed step returns the same static buffer every iteration
        buffer.copy_(batch)
        return buffer, None

    from hotloop import Engine

    engine = Engine(step)
    SampleGatherer().attach(engine)
    engine.run([torch.full((2, 1), 1.0), torch.full((2, 1), 2.0)])
    assert [float(sample) for sample in engine.state.samples] == [1.0, 1.0, 2.0, 2.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"output_transform": 3}, "output_transform must be callable"), ({"name": "not a name"}, "attribute name")],
)
def test_sample_gatherer_rejects(kwargs, message):
    with pytest.raises(TypeError, match=message):
        SampleGatherer(**kwargs)


def test_sample_gatherer_needs_a_distributed_sampler_in_a_group():
    engine = mock.Mock()
    engine.state.dataloader = DataLoader([0, 1])
    with mock.patch("ignite.distributed.get_world_size", return_value=2):
        with pytest.raises(RuntimeError, match="has no DistributedSampler"):
            SampleGatherer().gather(engine)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="DDP on a side CUDA stream needs a GPU")
def test_auto_model_builds_ddp_on_a_side_stream_on_cuda():
    built_on = []

    def record_stream(module, **kwargs):  # stands in for idist.auto_model, which would build DDP here
        built_on.append(torch.cuda.current_stream())
        return module

    with (
        mock.patch("ignite.distributed.get_world_size", return_value=2),
        mock.patch("ignite.distributed.device", return_value=torch.device("cuda", 0)),
        mock.patch("ignite.distributed.auto_model", side_effect=record_stream),
    ):
        auto_model(torch.nn.Linear(2, 2).cuda())
    assert len(built_on) == 1 and built_on[0] != torch.cuda.default_stream()
    assert torch.cuda.current_stream() == torch.cuda.default_stream()  # back on the caller's stream
