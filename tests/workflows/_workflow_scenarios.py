"""Shared pieces of the workflow tests: tiny 2D data and networks, an event recorder, deep comparison."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from ignite.engine import Events

STANDARD_EVENTS = [
    Events.STARTED,
    Events.EPOCH_STARTED,
    Events.GET_BATCH_STARTED,
    Events.GET_BATCH_COMPLETED,
    Events.ITERATION_STARTED,
    Events.ITERATION_COMPLETED,
    Events.EPOCH_COMPLETED,
    Events.COMPLETED,
]


def seg_samples(n: int = 4, size: int = 8, meta: bool = True, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` samples ``{"image": [1, H, W], "label": [1, H, W] in {0, 1}}``, MetaTensors when ``meta``."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        image = torch.rand(1, size, size, generator=g)
        label = (torch.rand(1, size, size, generator=g) > 0.5).float()
        if meta:
            from monai.data import MetaTensor

            affine = torch.eye(4) * (i + 1)
            image = MetaTensor(image, affine=affine, meta={"filename_or_obj": f"img{i}.nii"})
            label = MetaTensor(label, affine=affine, meta={"filename_or_obj": f"lbl{i}.nii"})
        samples.append({"image": image, "label": label, "id": f"case{i}"})
    return samples


def loader(samples: list[dict[str, Any]], batch_size: int = 2) -> Any:
    """MONAI's DataLoader (collates MetaTensors into batch MetaTensors) over ``samples``."""
    from monai.data import DataLoader

    return DataLoader(samples, batch_size=batch_size, shuffle=False, num_workers=0)


def seg_net(seed: int = 0, out_channels: int = 2) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, out_channels, 3, padding=1)
    )


class Recorder:
    """Records ``(event, epoch, iteration)`` for the standard events and the given extra events."""

    def __init__(self, extra_events: Any = (), outputs: bool = False) -> None:
        self.extra_events = list(extra_events)
        self.outputs = outputs
        self.calls: list[tuple[str, int, int]] = []
        self.snapshots: list[Any] = []

    def attach(self, engine: Any) -> None:
        for event in STANDARD_EVENTS + self.extra_events:
            engine.add_event_handler(event, self._record, event)
        if self.outputs:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._snapshot)

    def _record(self, engine: Any, event: Any) -> None:
        self.calls.append((str(event.name).lower(), engine.state.epoch, engine.state.iteration))

    def _snapshot(self, engine: Any) -> None:
        self.snapshots.append(snapshot({"batch": engine.state.batch, "output": engine.state.output}))


def snapshot(obj: Any) -> Any:
    """A copy of an output: tensors detached and cloned (MetaTensors keep their metadata), containers rebuilt."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    return copy.deepcopy(obj)


def assert_same(a: Any, b: Any, path: str = "", meta_types: bool = True, atol: float = 1e-6) -> None:
    """Deep equality of outputs: same structure, keys, tensor values; MetaTensor metadata compared too."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), f"{path}: {type(a)} vs {type(b)}"
        if meta_types:
            assert type(a).__name__ == type(b).__name__, f"{path}: {type(a).__name__} vs {type(b).__name__}"
        assert a.shape == b.shape and a.dtype == b.dtype, f"{path}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
        torch.testing.assert_close(a.as_subclass(torch.Tensor), b.as_subclass(torch.Tensor), atol=atol, rtol=1e-5)
        if meta_types and hasattr(a, "meta"):
            assert a.is_batch == b.is_batch, f"{path}: is_batch {a.is_batch} vs {b.is_batch}"
            assert_same(dict(a.meta), dict(b.meta), path + ".meta", meta_types)
            assert len(a.applied_operations) == len(b.applied_operations), path + ".applied_operations"
        return
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(map(str, a)) == set(map(str, b)), f"{path}: keys {list(a)} vs {list(b)}"
        bs = {str(k): v for k, v in b.items()}
        for k, v in a.items():
            assert_same(v, bs[str(k)], f"{path}[{k!r}]", meta_types, atol)
        return
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{path}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]", meta_types, atol)
        return
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            assert math.isnan(a) and math.isnan(b), f"{path}: {a} vs {b}"
            return
        assert abs(a - b) <= atol + 1e-5 * abs(b), f"{path}: {a} vs {b}"
        return
    assert a == b, f"{path}: {a!r} vs {b!r}"


def describe(x: Any) -> tuple:
    """What a network, inferer or loss is handed: the type and, for a MetaTensor, its batch flag, file names and the
    number of applied operations (the parts a network that reads metadata would see)."""
    if not hasattr(x, "meta"):
        return (type(x).__name__,)
    names = x.meta.get("filename_or_obj")
    return (type(x).__name__, x.is_batch, str(names), len(x.applied_operations))


class ProbeNet(torch.nn.Module):
    """``seg_net`` that records ``describe(input)`` on every forward."""

    def __init__(self, seen: list, seed: int = 0) -> None:
        super().__init__()
        self.net = seg_net(seed)
        self.seen = seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(describe(x))
        return self.net(x)


class ProbeInferer:
    """A ``SimpleInferer`` that records ``describe(inputs)``: it runs outside a compiled network."""

    def __init__(self, seen: list) -> None:
        self.seen = seen

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(describe(inputs))
        return network(inputs, *args, **kwargs)
