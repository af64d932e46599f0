"""The environment the check ran in: versions, the device, and what hotloop found (native module, Triton, choices)."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import torch
from torch import nn

import hotloop
from hotloop.collate import HAS_NATIVE
from hotloop.ops import HAS_TRITON
from hotloop.step.graphed import cuda_graphs_supported

from ._common import Context

__all__ = ["run"]

# Report name → the distributions that provide it, first found wins (read from their metadata: importing lightning
# and MONAI only to read a version takes seconds).
_PACKAGES = {
    "triton": ("triton",),
    "ignite": ("pytorch-ignite",),
    "monai": ("monai", "monai-weekly"),
    "lightning": ("lightning", "pytorch-lightning"),
    "numpy": ("numpy",),
}


def _version(distributions: tuple[str, ...]) -> str | None:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _device(device: torch.device) -> dict[str, Any]:
    if device.type != "cuda":
        return {"name": platform.processor() or platform.machine(), "type": "cpu"}
    props = torch.cuda.get_device_properties(device)
    return {
        "type": "cuda",
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
        "cuda_runtime": torch.version.cuda,
    }


def _summary(versions: dict[str, str | None], device: dict[str, Any], native: bool) -> str:
    if device["type"] == "cuda":
        where = (
            f"{device['name']} (sm_{device['capability'].replace('.', '')}, {device['memory_gib']} GiB, "
            f"{device['multiprocessors']} SMs), CUDA {device['cuda_runtime']}"
        )
    else:
        where = f"CPU {device['name']}"
    found = ", ".join(f"{name} {version or 'missing'}" for name, version in versions.items())
    return f"{where}; {found}; hotloop native module: {'built' if native else 'missing (pure-Python decollation)'}"


def _compile_auto(device: torch.device) -> str:
    """What ``compile="auto"`` chooses on ``device`` for a small MLP's training step, as its engine reports it
    (``trainer.step_choice``, with the times it measured)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    trainer = hotloop.create_supervised_trainer(
        model, optimizer, nn.CrossEntropyLoss(), device=device, compile="auto", no_sync=True
    )
    batch = (torch.randn(16, 32, device=device), torch.randint(0, 10, (16,), device=device))
    trainer.run([batch] * 100, max_epochs=1)
    return str(trainer.step_choice)


def run(ctx: Context) -> dict[str, Any]:
    """Versions, the device, hotloop's own probes and its ``compile="auto"`` / ``cuda_graphs`` choices."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    versions.update({name: _version(distributions) for name, distributions in _PACKAGES.items()})
    versions["hotloop"] = hotloop.__version__
    device = _device(ctx.device)
    choices = {
        "compile_auto": _compile_auto(ctx.device),
        "cuda_graphs_supported": cuda_graphs_supported(ctx.device),
        "triton_kernels": HAS_TRITON,
    }
    ctx.check("native module", HAS_NATIVE, f"hotloop.collate.HAS_NATIVE = {HAS_NATIVE} ({hotloop.__file__})")
    if not ctx.dry_run:
        ctx.check("triton", HAS_TRITON, f"hotloop.ops.HAS_TRITON = {HAS_TRITON}")
        ctx.check("cuda graphs", bool(choices["cuda_graphs_supported"]), "cuda_graphs_supported('cuda')")
    return ctx.result(
        "env",
        versions=versions,
        device_info=device,
        hotloop_path=hotloop.__file__,
        native_module=HAS_NATIVE,
        choices=choices,
        summary=_summary(versions, device, HAS_NATIVE),
    )
