"""Backend choice for the fused ops: Triton kernels on CUDA tensors, the vectorized torch path everywhere else.

The availability probe is a module-level flag (``HAS_TRITON``, from ``importlib.util.find_spec`` so that importing
hotloop does not import triton: ``import triton`` alone takes ~0.8 s on the 2-core dev machine) and the device probe
is one function (``_on_cuda``), so tests can patch both and exercise the GPU logic on CPU.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Literal

import torch

__all__ = ["HAS_TRITON", "Backend", "require_triton", "use_triton"]

#: Whether the ``triton`` package can be imported (``pip install 'hotloop[triton]'``).
HAS_TRITON: bool = importlib.util.find_spec("triton") is not None

#: ``"auto"``: Triton on CUDA tensors when triton is installed, torch otherwise; ``"torch"``: always the torch path;
#: ``"triton"``: always the kernels (CUDA tensors, or any tensor under ``TRITON_INTERPRET=1``).
Backend = Literal["auto", "torch", "triton"]

_BACKENDS = ("auto", "torch", "triton")
_warned_no_triton = False


def require_triton(feature: str = "the Triton kernels") -> None:
    """Raises unless triton can be imported.

    Args:
        feature: What needs triton, for the message.

    Raises:
        ModuleNotFoundError: triton is not installed; the message names the extra to install.
    """
    if not HAS_TRITON:
        raise ModuleNotFoundError(f"{feature} need triton: pip install 'hotloop[triton]'")


def _on_cuda(tensor: torch.Tensor) -> bool:
    return tensor.is_cuda


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _warn_no_triton() -> None:
    global _warned_no_triton
    if not _warned_no_triton:
        _warned_no_triton = True
        warnings.warn(
            "hotloop.ops: triton is not installed, CUDA tensors take the torch path (slower, more memory); "
            "pip install 'hotloop[triton]' for the fused kernels",
            RuntimeWarning,
            stacklevel=3,
        )


def use_triton(backend: Backend, tensor: torch.Tensor, supported: bool = True) -> bool:
    """Whether an op runs its Triton kernel.

    Args:
        backend: The caller's ``backend`` argument.
        tensor: The op's main input; its device decides under ``"auto"``.
        supported: Whether the kernel handles these inputs (dtype, options); ``"auto"`` falls back to torch where
            it does not.

    Returns:
        True for the kernel, False for the torch path. Under ``"auto"``, a CUDA tensor without triton installed
        takes the torch path with one ``RuntimeWarning`` per process.

    Raises:
        ValueError: ``backend`` is not one of ``"auto"``, ``"torch"``, ``"triton"``; or ``"triton"`` is asked for
            inputs the kernel does not handle, or for host tensors outside the interpreter.
        ModuleNotFoundError: ``backend="triton"`` without triton installed.
    """
    if backend == "torch":
        return False
    if backend == "auto":
        if not _on_cuda(tensor):
            return False
        if not HAS_TRITON:
            _warn_no_triton()
            return False
        return supported
    if backend != "triton":
        raise ValueError(f"backend should be one of {_BACKENDS}, got {backend!r}")
    require_triton()
    if not supported:
        raise ValueError("backend='triton' was asked for inputs the kernel does not handle; use backend='auto'")
    if not (_on_cuda(tensor) or _interpreting()):
        raise ValueError(
            f"backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 to interpret on the host), "
            f"got a tensor on {tensor.device}"
        )
    return True
