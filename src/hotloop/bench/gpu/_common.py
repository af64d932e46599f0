"""What the parts of the GPU check share: the device and the dry run's stand-ins, guarded providers, op timing."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch

from hotloop.bench import compare
from hotloop.bench.cases import Provider, Scenario, device_sync

__all__ = [
    "Context",
    "Rounds",
    "markdown_table",
    "measure",
    "ratio",
    "sized",
    "stats",
    "time_calls",
    "time_limit",
    "torch_path_in_dry_run",
]


@dataclass(frozen=True)
class Rounds:
    """How long a measurement runs: iterations per round, warm-up rounds (the first one builds and compiles), rounds."""

    iterations: int
    warmup: int
    rounds: int


@dataclass
class Context:
    """One part's run: its device, whether it is a dry run, and the checks and notes it reports.

    Args:
        dry_run: On the CPU with tiny sizes, the fake CUDA-graph backend and (with ``TRITON_INTERPRET=1``) the
            Triton kernels interpreted on host tensors.
    """

    dry_run: bool
    device: torch.device = field(init=False)
    checks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.dry_run:
            self.device = torch.device("cpu")
            _install_stand_ins()
            # One intra-op thread: on a shared 2-core machine a second one makes a tiny step 4-25x slower and its
            # time a matter of contention (3 ms against 11-70 ms for the digits CNN). A dry run's numbers mean
            # nothing; its run time is what matters.
            torch.set_num_threads(1)
        elif torch.cuda.is_available():
            self.device = torch.device("cuda")
        else:
            raise RuntimeError("the GPU check needs a CUDA device; --dry-run runs it on the CPU")

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def pick(self, real: Any, dry: Any) -> Any:
        """``real`` on the GPU, ``dry`` in a dry run: sizes and repetitions."""
        return dry if self.dry_run else real

    def check(self, name: str, ok: bool, detail: str) -> None:
        """Records a check; a failed one makes ``./dev gpu`` exit non-zero."""
        self.checks.append({"name": name, "ok": bool(ok), "detail": detail})

    def result(self, part: str, **values: Any) -> dict[str, Any]:
        """The part's JSON object; its notes are listed under its Markdown section."""
        if values.get("markdown") and self.notes:
            values["markdown"] = "\n".join([values["markdown"].rstrip(), "", *(f"- {note}" for note in self.notes)])
        return {
            "part": part,
            "device": str(self.device),
            "dry_run": self.dry_run,
            "checks": self.checks,
            "notes": self.notes,
            **values,
        }


def _install_stand_ins() -> None:
    """The dry run's GPU stand-ins, as the tests install them: the fake graph backend, the patched device probe."""
    from hotloop.ops import _dispatch
    from hotloop.step import graphed
    from hotloop.step._fake_graphs import FakeBackend

    graphed._backend = FakeBackend()  # cuda_graphs=True resolves on the CPU; capture and replay re-run the step
    if os.environ.get("TRITON_INTERPRET") == "1" and _dispatch.HAS_TRITON:
        _dispatch._on_cuda = _host_as_cuda  # backend "auto" takes the (interpreted) kernels, as on CUDA


def _host_as_cuda(tensor: torch.Tensor) -> bool:
    return True


@contextmanager
def torch_path_in_dry_run() -> Iterator[None]:
    """In the block, the dry run's host tensors take the torch path again (``backend="auto"`` as on any CPU).

    For MetaTensor inputs: Triton's interpreter copies each argument with ``new_empty(0, device="cpu")``, a
    signature MONAI's ``MetaTensor.new_empty`` does not take; compiled kernels on a GPU take the data pointer.
    """
    from hotloop.ops import _dispatch

    patched = _dispatch._on_cuda
    if patched is not _host_as_cuda:
        yield
        return
    _dispatch._on_cuda = lambda tensor: tensor.is_cuda
    try:
        yield
    finally:
        _dispatch._on_cuda = patched


@contextmanager
def sized(module: ModuleType, **constants: Any) -> Iterator[None]:
    """Sets a benchmark case's module constants (its sizes, its device) for the block: the dry run's tiny sizes."""
    before = {name: getattr(module, name) for name in constants}
    for name, value in constants.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            setattr(module, name, value)


@contextmanager
def _recorded(notes: list[str], provider: str) -> Iterator[None]:
    """hotloop's warnings and log records of the block (fallbacks: a graph that did not capture, a compile that
    failed) as notes naming ``provider``; other libraries' warnings are left to the log."""
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = _Keep(logging.WARNING)
    logger = logging.getLogger("hotloop")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        logger.removeHandler(handler)
    seen = set()
    for message in [str(w.message) for w in caught if "hotloop" in str(w.message)] + [r.getMessage() for r in records]:
        if message not in seen:
            seen.add(message)
            notes.append(f"{provider}: {message[:300]}")


def measure(
    ctx: Context,
    case: str,
    scenario: Scenario,
    rounds: Rounds,
    extra_samples: Mapping[str, Callable[[int], list[float]]] | None = None,
) -> dict[str, Any]:
    """``hotloop bench``'s measurement of one scenario: providers interleaved round by round, the device synced in
    each timed round (:func:`hotloop.bench.compare._measure`), summarized as ``compare`` does.

    Every provider is built and run once first (the first warm-up round, which compiles and captures), each in a
    guard: one that raises is left out and its error reported, so that one failing provider costs only its own row.
    The seconds of that first round are reported (``first_round_s``): compile and capture time shows there.

    Args:
        ctx: The part's context (notes and checks go there).
        case: The case name for the JSON.
        scenario: The scenario; its ``iterations`` are replaced by ``rounds.iterations``.
        rounds: Iterations per round, warm-up rounds (at least 1), timed rounds.
        extra_samples: Extra rows: name to a function of the timed round count giving µs per iteration per round
            (a provider's own inner timing, e.g. Lightning's epoch loop without its set-up).

    Returns:
        ``compare``'s summary of the scenario plus ``first_round_s`` and ``failed`` (provider to error).
    """
    built: dict[str, Callable[[], object]] = {}
    first: dict[str, float] = {}
    failed: dict[str, str] = {}
    for name, build in scenario.providers.items():
        try:
            with _recorded(ctx.notes, name), time_limit(ctx.pick(_FIRST_ROUND_LIMIT, 60.0)):
                run = build(rounds.iterations)
                first[name] = compare._time_round(run)
            built[name] = run
        except Exception as error:  # any failure of one provider is reported, the others still run
            failed[name] = f"{type(error).__name__}: {error}"[:500]
            ctx.notes.append(f"{name}: failed and left out: {failed[name]}")
    if not built:
        return {"scenario": scenario.name, "error": "every provider failed", "failed": failed, "first_round_s": first}
    survivors = _with_survivors(scenario, {name: _prebuilt(run) for name, run in built.items()}, rounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seen in the first round already
        measured = compare._measure(survivors, rounds.iterations, rounds.warmup - 1, rounds.rounds, lambda: None)
    samples, losses, choices = measured
    for name, get in (extra_samples or {}).items():
        extra = get(rounds.rounds)
        if len(extra) == rounds.rounds:  # none when its provider failed
            samples[name] = extra
    summary = compare._summarize(case, survivors, rounds.iterations, samples, losses, choices)
    summary["first_round_s"] = first
    summary["failed"] = failed
    return summary


# Seconds a provider's build and first round may take: it compiles there (inductor, about a minute for a
# transformer's whole training step with AdamW). One that takes longer is left out, not the whole part.
_FIRST_ROUND_LIMIT = 100.0


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raises ``TimeoutError`` in the block after ``seconds`` (``SIGALRM``: POSIX, main thread; else no limit).

    The signal interrupts Python code and the waits it blocks in (a compile waiting on its worker processes), so a
    hung compile ends at the limit; a kernel that never returns to Python is left to the driver's own time limit.
    """
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _with_survivors(scenario: Scenario, providers: dict[str, Provider], rounds: Rounds) -> Scenario:
    """The scenario over the providers that ran; a role whose provider failed goes to the first that ran."""
    first = next(iter(providers))
    roles = {
        role: getattr(scenario, role) if getattr(scenario, role) in providers else first
        for role in ("reference", "baseline", "original", "candidate")
    }
    return dataclasses.replace(
        scenario,
        providers=providers,
        iterations=rounds.iterations,
        reference=roles["reference"],
        baseline=roles["baseline"],
        original=roles["original"],
        candidate=roles["candidate"],
        also=tuple(name for name in scenario.also if name in providers),
        same_steps=tuple(name for name in scenario.same_steps if name in providers),
    )


def _prebuilt(run: Callable[[], object]) -> Provider:
    return lambda iterations: run


def stats(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, min and max (``compare``'s summary of samples)."""
    return compare._stats(values)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None where either is missing or not positive."""
    if not numerator or not denominator or numerator <= 0 or denominator <= 0:
        return None
    return numerator / denominator


def time_calls(calls: Mapping[str, Callable[[], object]], reps: int, warmup: int) -> dict[str, list[float]]:
    """µs of each call, the calls interleaved rep by rep after ``warmup`` untimed reps.

    On CUDA each call is timed by CUDA events recorded around it, the device idle before it (so that the time is the
    call's own, host work included when the host is the slower side); elsewhere by the host clock.
    """
    for _ in range(warmup):
        for call in calls.values():
            call()
    device_sync()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            samples[name].append(_time_call(call))
    return samples


def _time_call(call: Callable[[], object]) -> float:
    if not torch.cuda.is_available():
        start = time.perf_counter()
        call()
        return (time.perf_counter() - start) * 1e6
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    begin.record()
    call()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) * 1e3


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table: ``digits`` significant figures, thousands separated; ``n/a`` for None or NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if abs(value) >= 10**digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def times(value: float | None) -> str:
    """A ratio for a table: ``2.31×``."""
    return "n/a" if value is None else f"{value:.2f}×"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
