"""hotloop's step options, checked and applied in one place for every API that builds a step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from hotloop.reliability.nonfinite import NonFiniteGuard
from hotloop.step.compiled import resolve_compile
from hotloop.step.graphed import resolve_cuda_graphs
from hotloop.step.prefetch import DevicePrefetcher, prefetch_enabled

__all__ = ["StepOptions"]


@dataclass(frozen=True)
class StepOptions:
    """The options of hotloop's hot path, with the same meaning wherever they are accepted.

    ``create_supervised_trainer`` / ``create_supervised_evaluator``, the MONAI workflows (``SupervisedTrainer``,
    ``SupervisedEvaluator``) and delira's ``PyTorchNetworkTrainer`` take them as keyword-only arguments and hand
    them to the one step builder (:mod:`hotloop.step.builder`). All are off by default: the step is then the
    original's. ``docs/hot-path.md`` explains each with its measurements.

    Args:
        compile: ``False`` eager; ``True`` compile the step with ``torch.compile`` (``dynamic=False``): the whole
            step (forward, loss, backward and the optimizer step where it runs every iteration) when no event of
            the API fires inside it, else the model's forward; if compiling the whole step fails, the model and
            optimizer are restored and the step runs with the model alone compiled (logged once, logger
            ``hotloop.step.compiled``). ``"auto"``: measure the candidate builds that apply on the device during the
            first iterations of the run and keep the fastest (:class:`~hotloop.step.StepChoice`, on the engine as
            ``engine.step_choice``). A candidate's name pins it: ``"eager"``, ``"fused"``, ``"compiled"``,
            ``"compiled_fused"``. A dict: ``torch.compile`` keyword arguments.
        cuda_graphs: ``False``; ``True`` capture the step in a CUDA graph per input shape and replay it (a CUDA
            device is required); ``"auto"`` where the device is CUDA. Warm-up: 3 eager iterations per shape, 11 for
            a ``DistributedDataParallel`` model. What a graph cannot take runs eagerly with one warning.
        no_sync: with the API's default output, keep the loss a device tensor (no ``.item()``): no host sync per
            iteration.
        prefetch: on CUDA, copy the next batch to the device on a side stream while the current step runs
            (:class:`~hotloop.step.DevicePrefetcher`); nothing elsewhere.
        max_compiled_shapes: how many input shapes get compiled code; further shapes run eagerly (one warning).
        on_nonfinite: ``None``; ``"terminate"``, ``"skip"`` or ``"raise"`` watch the loss on the device with a
            :class:`~hotloop.reliability.NonFiniteGuard` (or pass one). Training steps only.

    Raises:
        TypeError: ``no_sync`` or ``prefetch`` is not a bool, ``on_nonfinite`` is none of the above.
        ValueError: ``compile``, ``cuda_graphs``, ``max_compiled_shapes`` or the ``on_nonfinite`` action is invalid.
    """

    compile: bool | str | dict[str, Any] = False
    cuda_graphs: bool | str = False
    no_sync: bool = False
    prefetch: bool = False
    max_compiled_shapes: int = 4
    on_nonfinite: str | NonFiniteGuard | None = None
    guard: NonFiniteGuard | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.no_sync, bool):
            raise TypeError(f"no_sync should be True or False, got {self.no_sync!r}")
        if not isinstance(self.prefetch, bool):
            raise TypeError(f"prefetch should be True or False, got {self.prefetch!r}")
        if not (self.cuda_graphs is False or self.cuda_graphs is True or self.cuda_graphs == "auto"):
            raise ValueError(f"cuda_graphs should be False, True or 'auto', got {self.cuda_graphs!r}")
        resolve_compile(self.compile, None)  # raises for a value that is none of the accepted ones
        shapes = self.max_compiled_shapes
        if not isinstance(shapes, int) or isinstance(shapes, bool) or shapes < 1:
            raise ValueError(f"max_compiled_shapes should be a positive integer, got {shapes!r}")
        object.__setattr__(self, "guard", _guard(self.on_nonfinite))

    @property
    def default(self) -> bool:
        """True when every option is off: the step is the original's."""
        return self == _DEFAULT

    @property
    def variant(self) -> str:
        """The build ``compile`` asks for: ``"auto"`` (measured), or the pinned candidate's name (``True`` and a
        dict: ``"compiled"``; ``False``: ``"eager"``)."""
        option = self.compile
        if isinstance(option, str):
            return option
        return "eager" if option is False or option is None else "compiled"

    def compile_kwargs(self, device: str | torch.device | None) -> dict[str, Any] | None:
        """``torch.compile`` keyword arguments for a step on ``device``, or None for eager."""
        return resolve_compile(self.compile, device)

    def graphs(self, device: str | torch.device | None) -> bool:
        """Whether the step on ``device`` is captured in CUDA graphs.

        Raises:
            RuntimeError: ``cuda_graphs=True`` and ``device`` is not a usable CUDA device.
        """
        return resolve_cuda_graphs(self.cuda_graphs, device)

    def attach(self, engine: Any, device: str | torch.device | None) -> None:
        """Apply the engine-side options: the prefetcher on each data iterator, the guard's checks."""
        if prefetch_enabled(self.prefetch, device):
            # The wrapper holds the device, not the engine: no reference cycle through the engine.
            engine._set_data_wrapper(lambda data: DevicePrefetcher(data, device))  # type: ignore[arg-type]
        if self.guard is not None:
            self.guard.attach(engine)


def _guard(on_nonfinite: Any) -> NonFiniteGuard | None:
    if on_nonfinite is None or isinstance(on_nonfinite, NonFiniteGuard):
        return on_nonfinite
    if isinstance(on_nonfinite, str):
        return NonFiniteGuard(on_nonfinite)
    raise TypeError(
        f"on_nonfinite should be None, 'terminate', 'skip', 'raise' or a NonFiniteGuard, got {on_nonfinite!r}"
    )


_DEFAULT = StepOptions()
