"""The environment the check ran in: versions, the device, and what hotloop found (native module, Triton, choices)."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import torch

import hotloop
from hotloop.collate import HAS_NATIVE
from hotloop.ops import HAS_TRITON
from hotloop.step import resolve_compile
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


def run(ctx: Context) -> dict[str, Any]:
    """Versions, the device, hotloop's own probes and its ``compile="auto"`` / ``cuda_graphs`` choices."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    versions.update({name: _version(distributions) for name, distributions in _PACKAGES.items()})
    versions["hotloop"] = hotloop.__version__
    device = _device(ctx.device)
    auto = resolve_compile("auto", ctx.device)
    choices = {
        "compile_auto": "eager" if auto is None else f"torch.compile({auto})",
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
