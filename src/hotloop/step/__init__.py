"""The step layer: the one step builder every API uses, and what it builds with.

- :mod:`~hotloop.step.builder`: an API describes its step (:class:`Iteration`) and gets a :class:`TrainStep` or
  :class:`EvalStep`: the candidate builds (eager, fused, compiled, CUDA-graphed), the one selector, the host logic;
- :mod:`~hotloop.step.auto`: ``compile="auto"``, the measuring selector, and :class:`StepChoice`, what a step chose
  (``engine.step_choice``);
- :class:`StepOptions`: ``compile``, ``cuda_graphs``, ``no_sync``, ``prefetch``, ``max_compiled_shapes``,
  ``on_nonfinite``, checked and applied in one place;
- :mod:`~hotloop.step.steps`: Ignite's supervised steps on the builder;
- :class:`CompiledStep` / :class:`CompiledModel`, :class:`GraphedStep`, :class:`Autocast`, :class:`DevicePrefetcher`,
  and the tree walkers of :mod:`~hotloop.step.tree`.

It knows nothing of events beyond asking the engine whether one has handlers: a step is a ``process_function(engine,
batch)`` or pieces of one.
"""

from hotloop.step.amp import Autocast
from hotloop.step.auto import StepChoice
from hotloop.step.builder import EvalStep, Iteration, TrainStep
from hotloop.step.compiled import CompiledModel, CompiledStep, resolve_compile
from hotloop.step.graphed import CudaGraphWarning, GraphedStep, cuda_graphs_supported, resolve_cuda_graphs
from hotloop.step.options import StepOptions
from hotloop.step.prefetch import DevicePrefetcher, prefetch_enabled
from hotloop.step.steps import attach_step, build_eval_step, build_train_step

__all__ = [
    "Autocast",
    "CompiledModel",
    "CompiledStep",
    "CudaGraphWarning",
    "DevicePrefetcher",
    "EvalStep",
    "GraphedStep",
    "Iteration",
    "StepChoice",
    "StepOptions",
    "TrainStep",
    "attach_step",
    "build_eval_step",
    "build_train_step",
    "cuda_graphs_supported",
    "prefetch_enabled",
    "resolve_compile",
    "resolve_cuda_graphs",
]
