"""Multi-process training and exact evaluation with hotloop, through ``ignite.distributed``.

hotloop has no launcher and no communication layer of its own: processes are started by ``torchrun``, SLURM's
``srun`` or ``ignite.distributed.Parallel``; models, optimizers and loaders are adapted by Ignite's ``idist.auto_*``
helpers; Ignite's metrics and handlers are rank-aware already. This module adds what exact evaluation and the
CUDA-graphed step need on top of that:

- :class:`ExactDistributedSampler` and :func:`auto_eval_dataloader`: each validation sample on exactly one rank
  (``DistributedSampler`` repeats samples to even out the shards, so metrics would count them twice);
- :class:`SampleGatherer`: per-sample outputs of an evaluator, gathered from every rank in dataset order;
- :func:`auto_model`: ``idist.auto_model``, with DDP built on a side CUDA stream as the PyTorch CUDA-graph notes
  require for capturing a DDP step;
- :func:`unwrap_model`: the module inside DDP, to evaluate without DDP's per-forward collectives.

See ``docs/distributed.md`` for how to launch the same script on 1 CPU, 1 GPU, 8 GPUs and several nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torch.utils.data.distributed import DistributedSampler

from hotloop.collate.decollate import decollate_batch
from hotloop.collate.distributed import ExactDistributedSampler, gather_samples
from hotloop.step._tree import _tree_map

__all__ = [
    "ExactDistributedSampler",
    "SampleGatherer",
    "auto_eval_dataloader",
    "auto_model",
    "gather_samples",
    "unwrap_model",
]


def auto_eval_dataloader(dataset: Dataset, **kwargs: Any) -> DataLoader:
    """``idist.auto_dataloader`` for evaluation: every sample on exactly one rank, none repeated.

    In a process group of ``W > 1`` ranks the loader gets an :class:`ExactDistributedSampler` (``shuffle`` is passed
    to it, default ``False``); everything else is ``idist.auto_dataloader``'s: ``batch_size`` and ``num_workers``
    are divided among the ranks, ``pin_memory`` is set on CUDA. In one process it is ``idist.auto_dataloader``
    (with ``shuffle=False`` unless given).

    Ranks may get one sample, and so one batch, more than others. That is safe for an evaluator built on the
    *unwrapped* model (:func:`unwrap_model`) with Ignite's metrics, which reduce across ranks once, at ``compute``.

    Args:
        dataset: A map-style dataset (with ``len``).
        kwargs: ``torch.utils.data.DataLoader`` keyword arguments, except ``sampler`` and ``batch_sampler``.

    Returns:
        The data loader of this rank.

    Raises:
        TypeError: ``dataset`` is an ``IterableDataset`` (it shards itself; nothing here can make it exact).
        ValueError: ``sampler`` or ``batch_sampler`` in ``kwargs``; fewer samples than ranks.

    Examples:
        .. code-block:: python

            val_loader = auto_eval_dataloader(val_set, batch_size=64, num_workers=4)  # global batch size
            evaluator = create_supervised_evaluator(unwrap_model(model), metrics={"accuracy": Accuracy()})
            evaluator.run(val_loader)  # every rank gets the metrics over all of val_set, each sample once
    """
    if isinstance(dataset, IterableDataset):
        raise TypeError(
            "auto_eval_dataloader: an IterableDataset shards itself, so its shards cannot be made exact here; "
            "make the dataset yield each sample on one rank, and use idist.auto_dataloader"
        )
    for name in ("sampler", "batch_sampler"):
        if name in kwargs:
            raise ValueError(
                f"auto_eval_dataloader: {name}= is not accepted, it chooses the ExactDistributedSampler itself; "
                "for a sampler of your own, call idist.auto_dataloader"
            )
    shuffle = kwargs.pop("shuffle", False)
    if idist.get_world_size() > 1:
        kwargs["sampler"] = ExactDistributedSampler(dataset, shuffle=shuffle)  # type: ignore[arg-type]
    else:
        kwargs["shuffle"] = shuffle
    return idist.auto_dataloader(dataset, **kwargs)  # type: ignore[return-value]


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel`` (or ``DataParallel``), or ``model`` itself.

    An evaluator should run the unwrapped module: DDP's forward may broadcast buffers (BatchNorm statistics) to every
    rank, a collective that ranks with different numbers of evaluation batches would not all reach. The parameters
    are the same tensors, so the evaluator sees the trained weights.

    Args:
        model: A model, wrapped or not.

    Returns:
        ``model.module`` for DDP and DataParallel, else ``model``.
    """
    if isinstance(model, (DistributedDataParallel, torch.nn.DataParallel)):
        return model.module
    return model


def auto_model(model: torch.nn.Module, sync_bn: bool = False, **kwargs: Any) -> torch.nn.Module:
    """``idist.auto_model``, with DDP constructed on a side CUDA stream so that a graphed step can capture it.

    The PyTorch CUDA notes ("CUDA Graphs", "Usage with DistributedDataParallel") ask for DDP to be built in a side
    stream context before a whole-step capture: DDP's constructor runs collectives and registers hooks whose work
    must not be tied to the default stream. On CUDA with more than one rank this does that; elsewhere it is
    ``idist.auto_model`` unchanged (device placement, DDP with ``device_ids`` on GPUs, plain DDP on CPU, ``sync_bn``).

    Args:
        model: The model to adapt.
        sync_bn: Convert BatchNorm layers to ``SyncBatchNorm`` (NCCL only, as in Ignite).
        kwargs: ``DistributedDataParallel`` keyword arguments.

    Returns:
        The model on ``idist.device()``, wrapped in DDP when there are several ranks.

    Examples:
        .. code-block:: python

            model = auto_model(Net())  # instead of idist.auto_model(Net())
            trainer = create_supervised_trainer(model, optimizer, loss_fn, device=idist.device(), cuda_graphs="auto")
    """
    device = idist.device()
    if device.type != "cuda" or idist.get_world_size() == 1:
        return idist.auto_model(model, sync_bn=sync_bn, **kwargs)
    side, current = torch.cuda.Stream(device), torch.cuda.current_stream(device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        wrapped = idist.auto_model(model, sync_bn=sync_bn, **kwargs)
    current.wait_stream(side)
    return wrapped


def _first(output: Any) -> Any:
    return output[0] if isinstance(output, (tuple, list)) else output


def _detached_clone(tensor: torch.Tensor) -> torch.Tensor:
    """A copy in new memory (graphed steps overwrite their outputs in place next iteration); no host sync."""
    return tensor.detach().clone()


class SampleGatherer:
    """Collects an evaluator's per-sample outputs on every rank and gathers them, each sample once, in dataset order.

    Each iteration, ``output_transform(engine.state.output)`` (default: ``y_pred``, the first item of the default
    evaluator output) is copied on its device (no host sync) and split into samples by
    :func:`~hotloop.collate.decollate_batch`. When the run completes, the samples of all ranks are moved to the CPU
    and gathered with :func:`gather_samples` into ``engine.state.<name>``: ``N`` items for ``N`` samples, whether the
    loader's sampler was an :class:`ExactDistributedSampler` or a padding ``DistributedSampler``.

    Args:
        sampler: The distributed sampler of the evaluation loader; ``None`` takes ``engine.state.dataloader.sampler``
            when the run completes. In one process without a distributed sampler the samples stay in loader order.
        output_transform: Picks the batched tensors to keep from ``engine.state.output``.
        name: The ``engine.state`` attribute that receives the gathered samples.
        dst: ``None`` to gather on every rank; a rank to gather there only (the others get ``None``).

    Raises:
        TypeError: ``output_transform`` is not callable, or ``name`` is not an identifier.

    Examples:
        .. code-block:: python

            val_loader = auto_eval_dataloader(val_set, batch_size=64)
            evaluator = create_supervised_evaluator(unwrap_model(model), device=idist.device())
            SampleGatherer().attach(evaluator)
            evaluator.run(val_loader)
            predictions = evaluator.state.samples  # len(val_set) tensors, one per sample, on every rank
    """

    def __init__(
        self,
        sampler: DistributedSampler | None = None,
        output_transform: Callable[[Any], Any] = _first,
        name: str = "samples",
        dst: int | None = None,
    ) -> None:
        if not callable(output_transform):
            raise TypeError(f"SampleGatherer: output_transform must be callable, got {type(output_transform).__name__}")
        if not isinstance(name, str) or not name.isidentifier():
            raise TypeError(f"SampleGatherer: name must be an attribute name, got {name!r}")
        self._sampler = sampler
        self._output_transform = output_transform
        self._name = name
        self._dst = dst
        self._samples: list[Any] = []

    def attach(self, engine: Engine) -> SampleGatherer:
        """Registers the collecting and gathering handlers on ``engine``.

        Args:
            engine: The evaluator.

        Returns:
            ``self``.
        """
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.gather)
        return self

    def reset(self, engine: Engine | None = None) -> None:
        """Forgets the samples of a previous run."""
        self._samples = []

    def collect(self, engine: Engine) -> None:
        """Keeps this iteration's samples (a device copy: graphed steps reuse their output buffers)."""
        self._samples.extend(decollate_batch(_tree_map(_detached_clone, self._output_transform(engine.state.output))))

    def gather(self, engine: Engine) -> None:
        """Gathers every rank's samples into ``engine.state.<name>`` (a collective: every rank runs it)."""
        local = [_tree_map(torch.Tensor.cpu, sample) for sample in self._samples]
        self._samples = []
        sampler = self._sampler if self._sampler is not None else getattr(engine.state.dataloader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            gathered = gather_samples(local, sampler=sampler, dst=self._dst)
        elif idist.get_world_size() == 1:
            gathered = local
        else:
            raise RuntimeError(
                "SampleGatherer: the evaluation loader has no DistributedSampler, so where each sample came from is "
                "unknown; load with auto_eval_dataloader (or idist.auto_dataloader), or pass sampler="
            )
        setattr(engine.state, self._name, gathered)
