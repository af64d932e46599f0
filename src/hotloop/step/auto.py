"""``compile="auto"``: the step builder's measuring selector.

During the first iterations of a run it times the candidate builds of the step that apply (:mod:`hotloop.step.builder`)
on the run's own batches — they are real iterations, each candidate computing the step on the same model and
optimizer — and keeps the fastest for the rest of the run. How it measures (issue 18's recipe, tuned on this
project's shared 2-core machines, where a neighbour's job slows single iterations 5-20×):

- the candidates take turns in **chunks** of 5 timed iterations, so that a slow phase of the machine hits all of them;
- a candidate's first iterations on the measured input shape are not timed: 1 for eager ones, 2 for compiled ones
  (the first compiles: compile time is excluded from the comparison, counted in the budget), a CUDA graph's warm-up
  and capture plus 1;
- a candidate's time is the **25th percentile of its chunk medians** (not their median: that mis-ranked the
  transformer under contention), with 4 chunks (20 iterations) each, at least 2 (10) when the timed part has taken
  5 s; a candidate whose estimate is over 1.3× the best's after 2 chunks is dropped early;
- only iterations on the first input shape it sees are timed (a short last batch is run, not counted);
- on CUDA the device is synchronised around each measured iteration (the only host syncs it adds; none afterwards);
- it ends after at most 300 iterations, whatever it has by then;
- the ranks of a ``DistributedDataParallel`` training step measure together: every rank counts every iteration
  (their input shapes may differ) and each chunk's time is the slowest rank's (one ``all_reduce`` of one number per
  chunk over the model's process group, during the measurement only), so that at every iteration all ranks run the
  same candidate and end on the same choice (replicas stepping their optimizers differently would drift apart). An
  evaluation step, or a model that is not DDP, measures on its own (ranks may then choose differently: harmless,
  and their numbers of iterations may differ, as exact distributed evaluation gives them).

Compiled candidates are tried only where the run's planned length can pay the compile back
(:data:`PAYBACK`): ``iterations left × eager time per iteration × the best speed-up compiling has shown on that
device ≥ the time a compile takes there``. On this project's CPU that is a run of thousands of iterations: compiled
training steps measured 0.67-1.08× eager there, and a compile 9-17 s.

The choice, the times and what it spent are a :class:`StepChoice` (``engine.step_choice``), logged once (logger
``hotloop.step``, INFO). The measurement is done once per step object: a later ``run`` of the same engine (a resumed
or continued run) and later input shapes keep the choice.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from hotloop.step.compiled import COMPILED
from hotloop.step.tree import tree_key

__all__ = ["PAYBACK", "AutoSelector", "Payback", "StepChoice", "iterations_left", "ranks_together"]

_logger = logging.getLogger("hotloop.step")

_CHUNK = 5  # timed iterations of one candidate in a row
_MIN_CHUNKS = 2  # every candidate kept is timed this often at least (10 iterations) ...
_TARGET_CHUNKS = 4  # ... and this often when the timed part stays under _TIMED_SECONDS (20 iterations)
_TIMED_SECONDS = 5.0
_DROP_RATIO = 1.3  # a candidate this much slower than the best after _MIN_CHUNKS chunks is dropped
_MAX_CALLS = 300  # the measurement ends here, whatever it has
_clock = time.perf_counter  # tests replace it


class Payback(NamedTuple):
    """When a compiled candidate is worth trying: the best speed-up compiling has shown (``gain``, a fraction of the
    eager time saved) and what a compile costs (``compile_seconds``) on a kind of device."""

    gain: float
    compile_seconds: float


#: ``(device type, training)`` → :class:`Payback`; other devices take ``("cuda", training)``.
#:
#: CPU (this project's 2-core machines, torch 2.13, issue 18's workloads): compiled training steps ran 0.67-1.08×
#: eager (the best: the MLP's whole step), a first compile took 9-17 s and a recompile for an LR scheduler 11.5 s;
#: compiled evaluation ran 0.82-1.87× (the digits CNN 1.71-1.87×), a compile 0.6-7 s (the first of a process pays
#: inductor's start-up). CUDA: not measured in this project (no GPU); compiling saves more of a launch-bound small
#: step there, and a compile takes tens of seconds.
PAYBACK: dict[tuple[str, bool], Payback] = {
    ("cpu", True): Payback(gain=0.10, compile_seconds=20.0),
    ("cpu", False): Payback(gain=0.40, compile_seconds=10.0),
    ("cuda", True): Payback(gain=0.30, compile_seconds=60.0),
    ("cuda", False): Payback(gain=0.30, compile_seconds=30.0),
}


@dataclass
class StepChoice:
    """What a step runs, and for ``compile="auto"`` what it measured: ``engine.step_choice``.

    Attributes:
        requested: the build ``compile`` asked for: ``"auto"``, or a pinned one (``"eager"``, ``"fused"``,
            ``"compiled"``, ``"compiled_fused"``; ``"graphed"`` with ``cuda_graphs``).
        variant: the build in use for the rest of the run; None while ``"auto"`` is still measuring.
        times_ms: ``"auto"``: each measured candidate's time per iteration in ms (the 25th percentile of its chunk
            medians), fastest first.
        skipped: ``"auto"``: the candidates not tried or dropped, each with the reason.
        iterations: ``"auto"``: the iterations the measurement took.
        seconds: ``"auto"``: the seconds those iterations took, compiles included.
        compile_seconds: ``"auto"``: the part of ``seconds`` that the compiled candidates' first iterations took.
    """

    requested: str
    variant: str | None = None
    times_ms: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    iterations: int = 0
    seconds: float = 0.0
    compile_seconds: float = 0.0

    def __str__(self) -> str:
        if self.requested != "auto":
            return f"{self.variant} (pinned)"
        if self.variant is None:
            return f"measuring ({self.iterations} iterations so far)"
        times = ", ".join(f"{name} {ms:.3g} ms" for name, ms in self.times_ms.items())
        return f"{self.variant} (auto: {times}; {self.iterations} iterations, {self.seconds:.2g} s)"


def iterations_left(state: Any) -> int | None:
    """The iterations an engine's run has still planned (Ignite's ``State``), or None where its length is unknown."""
    total = getattr(state, "max_iters", None)
    if total is None:
        epochs, length = getattr(state, "max_epochs", None), getattr(state, "epoch_length", None)
        if epochs is None or length is None:
            return None
        total = epochs * length
    return max(total - state.iteration, 0)


def ranks_together(model: Any) -> Any:
    """The process group whose ranks must measure together for a training step of ``model``: a
    ``DistributedDataParallel`` model's, when it has more than one rank; else None."""
    if not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return None
    import torch.distributed as dist

    group = model.process_group
    return group if dist.get_world_size(group) > 1 else None


def _slowest(seconds: float, group: Any) -> float:
    """The largest of the ``group``'s ranks' ``seconds`` (a collective: every rank calls it at the same point)."""
    import torch.distributed as dist

    nccl = dist.get_backend(group) == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else None
    value = torch.tensor([seconds], dtype=torch.float64, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=group)
    return float(value.item())


class _Candidate:
    """One candidate's measurement: its body, warm-up and chunk medians."""

    def __init__(self, name: str, body: Any) -> None:
        self.name = name
        self.body = body
        self.warm = 0
        self.chunks: list[float] = []  # chunk medians, seconds

    def estimate(self) -> float:
        """The 25th percentile of the chunk medians (seconds per iteration)."""
        if len(self.chunks) == 1:
            return self.chunks[0]
        return statistics.quantiles(self.chunks, n=4, method="inclusive")[0]


class AutoSelector:
    """Times the candidate builds of one step on its first iterations and switches the step to the fastest.

    It is the body the step runs while measuring: ``selector(*args)`` runs the current candidate's body on the
    arguments, times it, and between iterations switches the step to the next candidate (``switch``), finally to
    the chosen one, whose plain body then runs without the selector.

    Args:
        names: the candidates to time, in order (eager first).
        compiled: the compiled candidates, tried only if the run can pay their compile back (:data:`PAYBACK`).
        make: ``make(name)`` → the candidate's body (a :class:`~hotloop.step.builder.Body`), made once.
        switch: ``switch(name, body)`` makes the step run ``body`` as candidate ``name`` from its next iteration.
        iterations_left: the run's planned iterations left, or None when unknown.
        choice: the record to fill (``engine.step_choice``).
        device: the step's device (CUDA is synchronised around each measured iteration).
        training: a training step (else evaluation): which :data:`PAYBACK` applies.
        name: names the step in the log.
        clock: the clock, in seconds (default: ``time.perf_counter``).
        group: the process group whose ranks measure together (:func:`ranks_together`), or None.
    """

    def __init__(
        self,
        names: Sequence[str],
        compiled: Sequence[str],
        make: Callable[[str], Any],
        switch: Callable[[str, Any], None],
        iterations_left: Callable[[], int | None],
        choice: StepChoice,
        device: Any,
        training: bool,
        name: str = "step",
        clock: Callable[[], float] | None = None,
        group: Any = None,
    ) -> None:
        self._make = make
        self._switch = switch
        self._left = iterations_left
        self.choice = choice
        self._device = torch.device("cpu" if device is None else device)
        self._training = training
        self._name = name
        self._clock = clock
        self._candidates = {n: _Candidate(n, make(n)) for n in names}
        self._live = list(names)
        self._first = names[0]
        self._pending = list(compiled)
        self._key: Any = None
        self._sample: list[float] = []
        self._timed_seconds = 0.0
        self._group = group
        self._distributed = group is not None
        self.current = self._first
        if len(self._live) == 1 and not self._pending:
            self._decide()  # nothing to compare: the one candidate, untimed
        else:
            self._switch_to(self.current)

    # -- one iteration -------------------------------------------------------------------------------------------

    def __call__(self, *args: Any) -> Any:
        """The current candidate's body on ``args``, timed."""
        key = tree_key(args)
        if self._key is None:
            self._key = key
        candidate = self._candidates[self.current]
        clock = _clock if self._clock is None else self._clock
        self._sync()
        start = clock()
        out = candidate.body.fn(*args)
        self._sync()
        elapsed = clock() - start
        choice = self.choice
        choice.iterations += 1
        choice.seconds += elapsed
        if key == self._key or self._distributed:
            self._count(candidate, elapsed)
        if choice.variant is None and choice.iterations >= _MAX_CALLS:
            self._decide()
        return out

    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def _count(self, candidate: _Candidate, elapsed: float) -> None:
        if candidate.warm < candidate.body.warmup:
            candidate.warm += 1
            if candidate.name in COMPILED:
                self.choice.compile_seconds += elapsed
            return
        self._sample.append(elapsed)
        if len(self._sample) == _CHUNK:
            median = statistics.median(self._sample)
            if self._distributed:
                median = _slowest(median, self._group)
            candidate.chunks.append(median)
            self._timed_seconds += median * _CHUNK  # the same on every rank
            self._sample = []
            self._after_chunk(candidate)

    # -- between chunks ------------------------------------------------------------------------------------------

    def _after_chunk(self, candidate: _Candidate) -> None:
        if self._pending and candidate.name == self._first:
            self._payback(candidate.estimate())
        self._drop_slow()
        if self._done():
            self._decide()
            return
        self._switch_to(self._next())

    def _payback(self, eager_seconds: float) -> None:
        """Add the compiled candidates to the rotation if the run's planned length pays their compile back."""
        rule = PAYBACK.get((self._device.type, self._training)) or PAYBACK[("cuda", self._training)]
        left = self._left()
        pays = left is not None and left * eager_seconds * rule.gain >= rule.compile_seconds
        for name in self._pending:
            if pays:
                self._live.append(name)
                self._candidates[name] = _Candidate(name, self._make(name))
            elif left is None:
                self.choice.skipped[name] = "the run's planned length is unknown (a compile may not pay back)"
            else:
                self.choice.skipped[name] = (
                    f"{left} iterations left × {eager_seconds * 1e3:.3g} ms × {rule.gain:.0%} (the best gain "
                    f"compiling has shown on {self._device.type}) < {rule.compile_seconds:.0f} s to compile"
                )
        self._pending = []

    def _drop_slow(self) -> None:
        timed = [self._candidates[n] for n in self._live if len(self._candidates[n].chunks) >= _MIN_CHUNKS]
        if len(timed) < 2:
            return
        best = min(timed, key=_Candidate.estimate)
        for candidate in timed:
            if candidate.estimate() > _DROP_RATIO * best.estimate():
                self._live.remove(candidate.name)
                self.choice.skipped[candidate.name] = (
                    f"dropped after {len(candidate.chunks) * _CHUNK} timed iterations: {candidate.estimate() * 1e3:.3g}"
                    f" ms > {_DROP_RATIO}× {best.name}'s {best.estimate() * 1e3:.3g} ms"
                )

    def _wanted(self) -> int:
        return _MIN_CHUNKS if self._timed_seconds >= _TIMED_SECONDS else _TARGET_CHUNKS

    def _done(self) -> bool:
        if self._pending:
            return False
        return len(self._live) == 1 or all(len(self._candidates[n].chunks) >= self._wanted() for n in self._live)

    def _next(self) -> str:
        """The live candidate with the fewest chunks; on a tie, the first after the current one in turn."""
        live = self._live
        if self.current in live:
            after = live.index(self.current) + 1
            live = live[after:] + live[:after]
        return min(live, key=lambda name: len(self._candidates[name].chunks))

    def _switch_to(self, name: str) -> None:
        self.current = name
        self._switch(name, self._candidates[name].body._replace(fn=self))

    # -- the choice ----------------------------------------------------------------------------------------------

    def _decide(self) -> None:
        measured = [c for c in self._candidates.values() if c.chunks]
        ranked = sorted(measured, key=_Candidate.estimate)
        live = [c for c in ranked if c.name in self._live]
        best = (live or ranked or [self._candidates[self._first]])[0]
        choice = self.choice
        choice.times_ms = {c.name: c.estimate() * 1e3 for c in ranked}
        for name in self._pending:
            choice.skipped[name] = "the measurement ended before eager was timed"
        choice.variant = best.name
        self._switch(best.name, best.body)
        _logger.info(
            "%s: compile='auto' chose %r; ms per iteration: %s; not tried: %s; spent %d iterations, %.2f s "
            "(compiling %.2f s)",
            self._name,
            best.name,
            ", ".join(f"{name} {ms:.3g}" for name, ms in choice.times_ms.items()) or "none timed",
            "; ".join(f"{name}: {why}" for name, why in choice.skipped.items()) or "none",
            choice.iterations,
            choice.seconds,
            choice.compile_seconds,
        )
