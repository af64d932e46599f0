"""The step layer: supervised train/eval steps run eagerly, compiled or CUDA-graphed, and the device prefetcher.

It knows nothing of events: a step is a ``process_function(engine, batch)``.
"""

from hotloop.step.compiled import CompiledStep, resolve_compile
from hotloop.step.prefetch import DevicePrefetcher, prefetch_enabled
from hotloop.step.steps import build_eval_step, build_train_step

__all__ = [
    "CompiledStep",
    "DevicePrefetcher",
    "build_eval_step",
    "build_train_step",
    "prefetch_enabled",
    "resolve_compile",
]
