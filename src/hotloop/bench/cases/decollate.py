"""Decollation: a collated batch into per-sample structures, ``monai.data.decollate_batch`` against hotloop's.

Scenarios, each at batch sizes 2, 16 and 128 (``<batch>_b<size>``):

- ``plain``: a dict of plain tensors, ``{"image": [B, 1, 32, 32], "pred": [B, 2, 32, 32], "label": [B]}``.
- ``metatensor``: a MONAI batch made by ``list_data_collate`` from per-sample dicts of two ``MetaTensor``\\ s whose
  metadata is what a NIfTI loader leaves (file name, affines, spatial shape, space, channel dim) plus one traced
  transform each.
- ``nested``: five levels of dicts and lists holding tensors, per-sample string lists, numbers and ``None``.

Providers: ``raw`` calls a function that returns the batch (the loop's own cost), so that the target ratio
``(monai − raw) / (hotloop − raw)`` is the ratio of times; ``views`` does only the tensor work every implementation
must do (one ``unbind`` per batched tensor, metadata tensors included, ``tolist`` for 1-d ones), the floor set by
torch's cost per view; ``monai`` is ``monai.data.decollate_batch``, ``hotloop`` is
``hotloop.collate.decollate_batch`` (the native module) and ``reference`` its pure-Python reference. The issue's
targets: at least 10× on the MetaTensor batch at batch 16, at least 3× on the plain-tensor batch. ``monai`` ÷
``views`` bounds every implementation's ratio (about 6× and 2.5× there: docs/native.md, "Speed").

MONAI is an optional dependency of hotloop: without it this case has no scenario.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from hotloop._optional import MONAI, missing_message
from hotloop.collate import HAS_NATIVE, decollate_batch
from hotloop.collate._reference import decollate_batch as reference_decollate_batch

from . import Scenario

__all__ = ["BATCH_SIZES", "SCENARIOS", "UNAVAILABLE", "make_batch"]

#: Why this case cannot run here, or ``None``. Without the native module the candidate would be the pure-Python
#: reference: the numbers would say nothing about the native path.
UNAVAILABLE: str | None = missing_message("the decollate case", MONAI) or (
    None
    if HAS_NATIVE
    else "the decollate case measures hotloop's C++ module hotloop.collate._decollate, which is not built in this "
    "install (install hotloop with a C++ compiler present: docs/native.md)"
)

BATCH_SIZES = (2, 16, 128)
_TARGETS = {("metatensor", 16): 10.0, ("plain", 2): 3.0, ("plain", 16): 3.0, ("plain", 128): 3.0}
# Calls per timed round: about 20-50 ms of MONAI's time on the 2-core machine.
_ITERATIONS = {2: 1000, 16: 200, 128: 30}


def _plain(batch_size: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "image": torch.rand(batch_size, 1, 32, 32, generator=generator),  # image: [B, 1, H, W]
        "pred": torch.rand(batch_size, 2, 32, 32, generator=generator),  # pred: [B, C, H, W]
        "label": torch.randint(0, 2, (batch_size,), generator=generator),  # label: [B]
    }


def _meta_sample(index: int) -> dict[str, Any]:
    from monai.data import MetaTensor

    affine = torch.diag(torch.tensor([0.8, 0.8, 2.5, 1.0], dtype=torch.float64))
    meta = {
        "filename_or_obj": f"/data/case_{index:04d}.nii.gz",
        "affine": affine,
        "original_affine": affine.clone(),
        "spatial_shape": np.array([32, 32, 1]),
        "original_channel_dim": "no_channel",
    }
    operation = {"class": "Orientationd", "id": index, "orig_size": (32, 32), "extra_info": {"axcodes": "RAS"}}
    image = MetaTensor(torch.rand(1, 32, 32), meta=dict(meta), applied_operations=[dict(operation)])
    label = MetaTensor(torch.zeros(1, 32, 32), meta=dict(meta), applied_operations=[dict(operation)])
    return {"image": image, "label": label}


def _metatensor(batch_size: int) -> dict[str, Any]:
    from monai.data import list_data_collate

    return list_data_collate([_meta_sample(i) for i in range(batch_size)])


def _nested(batch_size: int) -> dict[str, Any]:
    b = batch_size
    scans = [{"path": [f"/scan/{k}/{i}.dcm" for i in range(b)], "spacing": torch.rand(b, 3)} for k in range(3)]
    return {
        "inputs": {"image": torch.rand(b, 1, 16, 16), "mask": torch.rand(b, 1, 16, 16) > 0.5},
        "meta": {
            "patient": {"id": [f"P{i:05d}" for i in range(b)], "age": torch.randint(20, 90, (b,)), "site": "A"},
            "scans": scans,
            "notes": [None] * b,
        },
        "outputs": [torch.rand(b, 2), [torch.rand(b, 4), {"score": torch.rand(b), "tag": [f"t{i}" for i in range(b)]}]],
    }


_BUILDERS: dict[str, Callable[[int], Any]] = {"plain": _plain, "metatensor": _metatensor, "nested": _nested}


def make_batch(kind: str, batch_size: int) -> Any:
    """One of the case's batches.

    Args:
        kind: ``"plain"``, ``"metatensor"`` or ``"nested"``.
        batch_size: Samples in the batch.

    Returns:
        The collated batch.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"make_batch: kind must be one of {sorted(_BUILDERS)}, got {kind!r}")
    return _BUILDERS[kind](batch_size)


def _identity(batch: Any) -> Any:
    return batch


def _batched_tensors(obj: Any, out: list[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors a decollation must unbind: plain views of the batch's tensors and of MetaTensor metadata."""
    if isinstance(obj, torch.Tensor):
        if obj.ndim > 0:
            out.append(obj.as_subclass(torch.Tensor))
        for value in getattr(obj, "meta", {}).values():
            _batched_tensors(value, out)
    elif isinstance(obj, dict):
        for value in obj.values():
            _batched_tensors(value, out)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _batched_tensors(value, out)
    return out


def _views(kind: str, batch_size: int) -> Callable[[int], Callable[[], None]]:
    def build(iterations: int) -> Callable[[], None]:
        tensors = _batched_tensors(make_batch(kind, batch_size), [])

        def run() -> None:
            for _ in range(iterations):
                for tensor in tensors:
                    tensor.tolist() if tensor.ndim == 1 else tensor.unbind(0)

        return run

    return build


def _provider(fn: Callable[[Any], Any], kind: str, batch_size: int) -> Callable[[int], Callable[[], None]]:
    def build(iterations: int) -> Callable[[], None]:
        batch = make_batch(kind, batch_size)

        def run() -> None:
            for _ in range(iterations):
                fn(batch)

        return run

    return build


def _scenarios() -> list[Scenario]:
    if UNAVAILABLE:
        return []
    from monai.data import decollate_batch as monai_decollate_batch

    scenarios = []
    for kind in _BUILDERS:
        for batch_size in BATCH_SIZES:
            iterations = _ITERATIONS[batch_size]
            scenarios.append(
                Scenario(
                    name=f"{kind}_b{batch_size}",
                    description=f"decollate a {kind} batch of {batch_size} samples",
                    iterations=iterations,
                    quick_iterations=max(1, iterations // 10),
                    providers={
                        "raw": _provider(_identity, kind, batch_size),
                        "views": _views(kind, batch_size),
                        "monai": _provider(monai_decollate_batch, kind, batch_size),
                        "hotloop": _provider(decollate_batch, kind, batch_size),
                        "reference": _provider(reference_decollate_batch, kind, batch_size),
                    },
                    original="monai",
                    target=_TARGETS.get((kind, batch_size)),
                )
            )
    return scenarios


SCENARIOS: list[Scenario] = _scenarios()
