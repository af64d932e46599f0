"""Whole-step CUDA graphs: capture a training or evaluation step once per input shape, then replay it.

A captured step costs one graph launch instead of one launch per kernel plus the Python that issues them. The
capture follows the PyTorch CUDA notes ("whole-network capture"): a few eager iterations on a side stream, the
gradients set to ``None``, forward + backward + ``optimizer.step()`` recorded into one ``torch.cuda.CUDAGraph``, and
later iterations copy the new batch into static input buffers and replay.

What a graph cannot see is checked on the host before it is used, and anything it cannot do falls back to the
eager step with one warning (:class:`CudaGraphWarning`), never to silently wrong results:

- a new input structure/shape/dtype/device gets its own graph, up to ``max_graphs``; beyond that, eager;
- inputs that a graph cannot take (tensors off the CUDA device, mixed devices, tensors that require grad, tensor
  subclasses, non-tensor leaves that are not constants or that change between calls): eager;
- a capture that raises: that input shape runs eagerly from then on;
- optimizer hyper-parameters held as Python numbers (``lr`` ...) are frozen into the graph: a change re-captures,
  and a change after only a few steps (a per-iteration scheduler) switches the step to eager.

All CUDA calls go through the module-level ``_backend`` so that tests replace it with a CPU fake whose "capture"
records the step function and whose "replay" re-runs it on the static buffers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from typing import Any, Protocol

import torch

from hotloop.step.tree import CONSTANT_TYPES, tree_clone, tree_copy_, tree_layout, tree_leaves

__all__ = ["CudaGraphWarning", "GraphedStep", "cuda_graphs_supported", "resolve_cuda_graphs"]

_Tensor = torch.Tensor
# A hyper-parameter change this soon after a capture means a per-iteration schedule. Re-capturing costs a full
# device synchronize, an allocator cache flush and re-recording every kernel (many eager steps' worth), so graphs
# would be slower than eager steps; the step goes eager instead.
_MIN_REPLAYS_BEFORE_RECAPTURE = 16
# Keys known to run eagerly are remembered (one dict lookup per call instead of re-checking the inputs), up to
# this many, so that inputs whose shape or constants never repeat cannot grow the set without bound.
_MAX_EAGER_KEYS = 1024
# (layout, constants): see _key.
_Key = tuple[Hashable, tuple[Any, ...]]


class CudaGraphWarning(UserWarning):
    """Warns that a graphed step runs some of its inputs eagerly; raised once per cause and step."""


class _Backend(Protocol):
    """The CUDA calls :class:`GraphedStep` makes; tests swap in a CPU fake with the same methods."""

    device_type: str

    def is_available(self) -> bool: ...
    def new_stream(self, device: torch.device) -> Any: ...
    def current_stream(self, device: torch.device) -> Any: ...
    def wait_stream(self, waiter: Any, waited: Any) -> None: ...
    def use_stream(self, stream: Any) -> AbstractContextManager[Any]: ...
    def new_graph(self) -> Any: ...
    def capture(self, graph: Any, fn: Callable[[], Any], stream: Any) -> Any: ...
    def replay(self, graph: Any) -> None: ...


class _CudaBackend:
    """``torch.cuda`` streams and graphs behind the few calls :class:`GraphedStep` makes."""

    device_type = "cuda"

    def is_available(self) -> bool:
        return torch.cuda.is_available()

    def new_stream(self, device: torch.device) -> torch.cuda.Stream:
        return torch.cuda.Stream(device=device)

    def current_stream(self, device: torch.device) -> torch.cuda.Stream:
        return torch.cuda.current_stream(device)

    def wait_stream(self, waiter: torch.cuda.Stream, waited: torch.cuda.Stream) -> None:
        waiter.wait_stream(waited)

    def use_stream(self, stream: torch.cuda.Stream) -> AbstractContextManager[Any]:
        return torch.cuda.stream(stream)

    def new_graph(self) -> torch.cuda.CUDAGraph:
        return torch.cuda.CUDAGraph()

    def capture(self, graph: torch.cuda.CUDAGraph, fn: Callable[[], Any], stream: torch.cuda.Stream) -> Any:
        # pool=None gives each graph a private memory pool. Graphs of different shapes keep gradients and
        # temporaries at addresses they alone own, so replaying one can never overwrite another's memory.
        # "thread_local": DataLoader pin-memory and prefetch threads keep allocating and copying while the main
        # thread captures; the default "global" mode would make their CUDA calls fail during the capture.
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            return fn()

    def replay(self, graph: torch.cuda.CUDAGraph) -> None:
        graph.replay()


_backend: _Backend = _CudaBackend()


def cuda_graphs_supported(device: torch.device | str | int | None) -> bool:
    """Tells whether a step on ``device`` can be captured in a CUDA graph on this machine.

    Args:
        device: The device the step runs on; ``None`` means the default (CPU) device.

    Returns:
        ``True`` if CUDA is available and ``device`` is a CUDA device.

    Examples:
        .. code-block:: python

            cuda_graphs_supported("cuda:0")  # True on a machine with a GPU
            cuda_graphs_supported("cpu")  # False
    """
    if device is None:
        return False
    return torch.device(device).type == _backend.device_type and _backend.is_available()


def resolve_cuda_graphs(option: bool | str, device: torch.device | str | int | None) -> bool:
    """Turns a ``cuda_graphs`` option into a decision for ``device``.

    Args:
        option: ``False`` (never), ``True`` (always; an error where impossible) or ``"auto"`` (where supported).
        device: The device the step runs on.

    Returns:
        Whether the step should be captured in CUDA graphs.

    Raises:
        RuntimeError: If ``option`` is ``True`` and ``device`` is not a usable CUDA device.
        ValueError: If ``option`` is not one of ``False``, ``True``, ``"auto"``.

    Examples:
        .. code-block:: python

            resolve_cuda_graphs("auto", "cpu")  # False
            resolve_cuda_graphs(True, "cuda")  # True on a machine with a GPU
    """
    if option is False:
        return False
    if option is True:
        if not cuda_graphs_supported(device):
            raise RuntimeError(_unsupported_message(device))
        return True
    if isinstance(option, str) and option == "auto":
        return cuda_graphs_supported(device)
    raise ValueError(f"cuda_graphs should be False, True or 'auto'; got {option!r}.")


def _unsupported_message(device: torch.device | str | int | None) -> str:
    message = f"cuda_graphs=True needs a CUDA device; got device={device}."
    if device is not None and torch.device(device).type == _backend.device_type:
        message += " CUDA is not available on this machine (torch.cuda.is_available() is False)."
    return message + " Use cuda_graphs='auto' to capture only where CUDA is available, or cuda_graphs=False."


class _Entry:
    """One input key: its warm-up count and, once captured, its graph and static buffers."""

    __slots__ = ("device", "calls", "eager", "graph", "static", "outputs", "hparams", "n_groups", "replays")

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.calls = 0  # eager warm-up iterations done
        self.eager = False  # capture failed: this key runs eagerly for good
        self.graph: Any = None
        self.static: tuple[Any, Any] = (None, None)  # (static_x, static_y): graph-owned input buffers
        self.outputs: Any = None  # what compute returned during capture: graph-owned output buffers
        self.hparams: tuple[tuple[int, dict[str, Any], str, Any], ...] = ()
        self.n_groups = 0
        self.replays = 0


class GraphedStep:
    """Runs ``compute(x, y)`` as a CUDA graph captured once per input structure, shape, dtype and device.

    The first ``warmup_iters`` calls with a new key run ``eager_step`` on a side stream (what the PyTorch CUDA
    notes ask before a capture). The next call copies the inputs into static buffers, calls ``pre_capture``,
    captures ``compute`` on the static buffers and replays the graph once, so it is a real step too. Later calls
    copy the inputs into the static buffers (``non_blocking``) and replay: no host synchronization, no Python per
    kernel. Every call computes what an eager step would compute.

    .. warning::
        The outputs of a replayed call alias graph-owned static memory: the next call with the same key
        overwrites them in place. Copy (``.clone()``) what you keep beyond the next call, or pass
        ``clone_outputs=True``.

    Besides the fallbacks listed in the module docstring, know that

    - ``param.grad`` after a replay shows the gradients of the last *captured* key's graph, not necessarily of the
      last call; read gradients inside ``compute`` (clipping, logging a norm) instead;
    - optimizer hyper-parameters held as tensors are read at each replay, those held as Python numbers are frozen
      at capture (a change re-captures); gradient-accumulation steps that call ``optimizer.step()`` only every
      few iterations need one ``GraphedStep`` per kind of iteration;
    - after replacing the optimizer state (``optimizer.load_state_dict``) or the model's parameters or buffers
      by new tensors, call :meth:`reset`: a graph keeps the addresses it captured.

    Args:
        compute: ``compute(x, y) -> outputs`` — forward, loss, backward and ``optimizer.step()`` for a trainer,
            forward only (under ``torch.no_grad()``) for an evaluator. ``x`` and ``y`` are tensors or nested
            tuples, lists and dicts of tensors (and constants); the outputs must be tensors (or ``None``) in such
            containers, since a Python number would be frozen at its capture-time value.
        pre_capture: Called right before each capture, e.g. ``lambda: optimizer.zero_grad(set_to_none=True)``,
            so that the graph's backward allocates its own gradients. ``None`` for evaluators.
        eager_step: ``eager_step(x, y) -> outputs``, one full eager iteration including ``zero_grad``; used for
            the warm-up and every fallback. Defaults to ``pre_capture()`` followed by ``compute(x, y)``.
        warmup_iters: Eager iterations per key before its capture (at least 1: they create the optimizer state
            that the graph then updates in place; DDP needs about 11).
        max_graphs: How many keys get a graph; later keys run eagerly.
        optimizer: The optimizer that ``compute`` steps, or ``None``. Before the first warm-up, its param groups
            get ``capturable=True`` where the optimizer supports it (Adam, AdamW, ...); its Python-number
            hyper-parameters are watched for changes.
        clone_outputs: Return clones of the static outputs instead of the static outputs themselves.
        device: If given, only inputs on this device are captured.
        name: Names the step in warnings.

    Examples:
        .. code-block:: python

            def compute(x, y):
                y_pred = model(x)
                loss = loss_fn(y_pred, y)
                loss.backward()
                optimizer.step()
                return y_pred.detach(), loss.detach()

            def eager_step(x, y):
                optimizer.zero_grad(set_to_none=True)
                return compute(x, y)

            step = GraphedStep(
                compute,
                pre_capture=lambda: optimizer.zero_grad(set_to_none=True),
                eager_step=eager_step,
                optimizer=optimizer,
                name="train step",
            )
            for x, y in loader:  # x, y already on the GPU
                y_pred, loss = step(x, y)  # valid until the next call
    """

    def __init__(
        self,
        compute: Callable[[Any, Any], Any],
        *,
        pre_capture: Callable[[], Any] | None = None,
        eager_step: Callable[[Any, Any], Any] | None = None,
        warmup_iters: int = 3,
        max_graphs: int = 4,
        optimizer: torch.optim.Optimizer | None = None,
        clone_outputs: bool = False,
        device: torch.device | str | int | None = None,
        name: str = "step",
    ) -> None:
        _check_callable("compute", compute, required=True)
        _check_callable("pre_capture", pre_capture, required=False)
        _check_callable("eager_step", eager_step, required=False)
        _check_positive_int("warmup_iters", warmup_iters)
        _check_positive_int("max_graphs", max_graphs)
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer should be a torch.optim.Optimizer or None; got {type(optimizer).__name__}.")
        self._compute = compute
        self._pre_capture = pre_capture
        self._eager_step = eager_step if eager_step is not None else partial(_eager_default, compute, pre_capture)
        self._warmup_iters = warmup_iters
        self._max_graphs = max_graphs
        self._optimizer = optimizer
        self._clone_outputs = bool(clone_outputs)
        self._device = None if device is None else torch.device(device)
        self._name = name
        self._entries: dict[_Key, _Entry] = {}
        self._eager_keys: set[_Key] = set()
        self._constants: dict[Hashable, tuple[Any, ...]] = {}  # layout -> the constants first seen with it
        self._streams: dict[torch.device, Any] = {}
        self._warned: set[str] = set()
        self._made_capturable = False
        self._disabled = False

    @property
    def num_graphs(self) -> int:
        """How many graphs are captured and in use."""
        return sum(entry.graph is not None for entry in self._entries.values())

    def reset(self) -> None:
        """Drops every graph and warm-up count; the next calls warm up and capture again.

        Call it after the tensors a graph captured were replaced: ``optimizer.load_state_dict(...)``,
        ``model.load_state_dict(..., assign=True)``, a moved model.
        """
        self._entries.clear()
        self._eager_keys.clear()
        self._constants.clear()
        self._disabled = False

    def __call__(self, x: Any, y: Any) -> Any:
        """Runs one step on ``(x, y)``; see the class docstring for what the outputs alias."""
        key = _key(x, y)
        entry = self._entries.get(key)
        if entry is None:
            if key in self._eager_keys:
                return self._eager_step(x, y)
            entry = self._admit(key, x, y)
            if entry is None:
                return self._eager_step(x, y)
        if entry.graph is not None:
            if self._optimizer is not None:
                changed = _changed_hparam(self._optimizer.param_groups, entry)
                if changed is not None:
                    return self._on_hparam_change(entry, changed, x, y)
            return self._replay(entry, x, y)
        if entry.eager:
            return self._eager_step(x, y)
        if entry.calls < self._warmup_iters:
            entry.calls += 1
            return self._warm_up(entry.device, x, y)
        return self._capture(entry, x, y)

    # -- admission: which keys get a graph -------------------------------------------------------------------

    def _admit(self, key: _Key, x: Any, y: Any) -> _Entry | None:
        """Returns a new entry for ``key``, or ``None`` (after at most one warning per cause) to run eagerly."""
        device = self._refuse_eagerly(key, x, y)
        if device is None:
            if len(self._eager_keys) < _MAX_EAGER_KEYS:
                self._eager_keys.add(key)
            return None
        layout, constants = key
        self._constants[layout] = constants
        entry = self._entries[key] = _Entry(device)
        return entry

    def _refuse_eagerly(self, key: _Key, x: Any, y: Any) -> torch.device | None:
        """Returns the inputs' device if ``key`` may get a graph, else warns once and returns ``None``."""
        if self._disabled:
            return None
        found = _inputs_device(tree_leaves((x, y)), _backend.device_type, self._device)
        if isinstance(found, tuple):
            cause, detail = found
            self._warn_once(cause, f"inputs cannot be captured in a CUDA graph ({detail})")
            return None
        layout, constants = key
        first = self._constants.get(layout)
        if first is not None and first != constants:
            self._warn_once("varying", _VARYING)
            return None
        if len(self._entries) >= self._max_graphs:
            self._warn_once("cache", f"max_graphs={self._max_graphs} input shapes already hold a CUDA graph ({_CACHE})")
            return None
        return found

    # -- warm-up, capture, replay ----------------------------------------------------------------------------

    def _side_stream(self, device: torch.device) -> Any:
        stream = self._streams.get(device)
        if stream is None:
            stream = self._streams[device] = _backend.new_stream(device)
        return stream

    def _warm_up(self, device: torch.device, x: Any, y: Any) -> Any:
        """One eager step on the side stream, ordered after and before the current stream's work."""
        if not self._made_capturable:
            _make_capturable(self._optimizer, _backend.device_type)
            self._made_capturable = True
        side, current = self._side_stream(device), _backend.current_stream(device)
        _backend.wait_stream(side, current)  # the batch was produced on the current stream
        with _backend.use_stream(side):
            outputs = self._eager_step(x, y)
        _backend.wait_stream(current, side)  # whoever reads the outputs next runs on the current stream
        return outputs

    def _capture(self, entry: _Entry, x: Any, y: Any) -> Any:
        """Captures ``compute`` on fresh static copies of ``(x, y)``, then replays it once for this call."""
        _make_capturable(self._optimizer, _backend.device_type)  # again: load_state_dict may have reset the flag
        static = (tree_clone(x), tree_clone(y))
        hparams = _snapshot_hparams(self._optimizer)
        if self._pre_capture is not None:
            self._pre_capture()
        graph = _backend.new_graph()
        try:
            _check_optimizer(self._optimizer, _backend.device_type)
            outputs = _backend.capture(graph, partial(self._compute, *static), self._side_stream(entry.device))
            _check_outputs(outputs)
        except Exception as exc:  # any failure means "no graph"; the step itself must still run
            return self._on_capture_failure(entry, exc, x, y)
        entry.graph, entry.static, entry.outputs, entry.replays = graph, static, outputs, 0
        entry.hparams, entry.n_groups = hparams, _n_groups(self._optimizer)
        # A capture records kernels without running them: replay once so that this call is a real step.
        _backend.replay(graph)
        return self._result(outputs)

    def _replay(self, entry: _Entry, x: Any, y: Any) -> Any:
        static_x, static_y = entry.static
        tree_copy_(static_x, x)
        tree_copy_(static_y, y)
        entry.replays += 1
        _backend.replay(entry.graph)
        return self._result(entry.outputs)

    def _result(self, outputs: Any) -> Any:
        return tree_clone(outputs) if self._clone_outputs else outputs

    # -- failures ----------------------------------------------------------------------------------------------

    def _on_capture_failure(self, entry: _Entry, exc: Exception, x: Any, y: Any) -> Any:
        """Marks the key eager for good, warns with the error, and runs this call's step eagerly."""
        entry.eager = True
        message = (
            f"{self._name}: CUDA graph capture failed ({type(exc).__name__}: {exc}); inputs with this shape run "
            "eagerly from now on."
        )
        warnings.warn(message, CudaGraphWarning, stacklevel=4)
        # A capture runs nothing, so the model and optimizer are as before it; only Python-side objects such as
        # ``param.grad`` may point at never-written graph memory, which eager_step's zero_grad replaces.
        return self._eager_step(x, y)

    def _on_hparam_change(self, entry: _Entry, name: str, x: Any, y: Any) -> Any:
        """Re-captures after a rare hyper-parameter change; switches to eager when they change every few steps."""
        if entry.replays >= _MIN_REPLAYS_BEFORE_RECAPTURE:
            entry.graph = None
            return self._capture(entry, x, y)
        self._disable()
        message = (
            f"{self._name}: optimizer hyper-parameter {name!r} changed {entry.replays + 1} step(s) after a CUDA "
            "graph captured its old value; the step runs eagerly from now on. Keep Python-number "
            "hyper-parameters fixed or change them rarely (each change re-captures), or give a capturable "
            "optimizer tensor hyper-parameters (lr=torch.tensor(...)) and update those in place."
        )
        warnings.warn(message, CudaGraphWarning, stacklevel=3)
        return self._eager_step(x, y)

    def _disable(self) -> None:
        self._disabled = True
        for entry in self._entries.values():
            entry.graph, entry.static, entry.outputs, entry.eager = None, (None, None), None, True

    def _warn_once(self, cause: str, text: str) -> None:
        """Warns about ``cause`` the first time only."""
        if cause not in self._warned:
            self._warned.add(cause)
            message = f"{self._name}: {text}; such inputs run eagerly (warned once)."
            warnings.warn(message, CudaGraphWarning, stacklevel=5)


_VARYING = (
    "a non-tensor input (int, float, str, ...) changes between calls, and a CUDA graph would freeze the value it "
    "was captured with; pass it as a tensor to capture it"
)
_CACHE = "max_graphs reached; pad or bucket inputs to fewer shapes, or raise max_graphs"


# -- argument checks -------------------------------------------------------------------------------------------


def _check_callable(name: str, value: Any, *, required: bool) -> None:
    if value is None and not required:
        return
    if not callable(value):
        expected = "a callable" if required else "a callable or None"
        raise TypeError(f"{name} should be {expected}; got {type(value).__name__}.")


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} should be an int; got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"{name} should be at least 1; got {value}.")


def _eager_default(compute: Callable[[Any, Any], Any], pre_capture: Callable[[], Any] | None, x: Any, y: Any) -> Any:
    if pre_capture is not None:
        pre_capture()
    return compute(x, y)


# -- input trees: keys, checks, static copies --------------------------------------------------------------------


def _key(x: Any, y: Any) -> _Key:
    """``(layout, constants)``: structure, shapes, dtypes and devices of ``(x, y)``, and their constant leaves.

    Host metadata only: reading ``shape``/``dtype``/``device`` never synchronizes with the device.
    """
    if type(x) is _Tensor:  # the common batches, (x, y) and an evaluator's (x, None): no tree walk, no list
        if type(y) is _Tensor:
            return ((x.shape, x.dtype, x.device, x.requires_grad, y.shape, y.dtype, y.device, y.requires_grad), ())
        if y is None:
            return ((x.shape, x.dtype, x.device, x.requires_grad), ())
    constants: list[Any] = []
    layout = (tree_layout(x, constants), tree_layout(y, constants))
    return (layout, tuple(constants))


def _inputs_device(
    leaves: Iterator[Any], device_type: str, device: torch.device | None
) -> torch.device | tuple[str, str]:
    """The one device of the tensor leaves, or ``(cause, detail)`` saying why they cannot be captured."""
    devices: set[torch.device] = set()
    for leaf in leaves:
        if isinstance(leaf, _Tensor):
            problem = _tensor_problem(leaf)
            if problem is not None:
                return problem
            devices.add(leaf.device)
        elif type(leaf) not in CONSTANT_TYPES:
            return ("opaque", f"an input of type {type(leaf).__name__} is neither a tensor nor a constant")
    if len(devices) != 1:
        detail = "mixed devices " + ", ".join(sorted(map(str, devices))) if devices else "no tensor inputs"
        return ("devices", detail)
    found = devices.pop()
    if found.type != device_type:
        return ("device type", f"input tensors on {found}, not on a {device_type} device")
    if device is not None and found != device:
        return ("device", f"input tensors on {found}, but the step's device is {device}")
    return found


def _tensor_problem(tensor: _Tensor) -> tuple[str, str] | None:
    if type(tensor) is not _Tensor:
        # A subclass (MetaTensor, Parameter, ...) carries Python state that copying data into a buffer would lose.
        return ("subclass", f"a tensor subclass {type(tensor).__name__}")
    if tensor.requires_grad:
        return ("requires grad", "an input tensor requires grad")
    return None


def _check_outputs(outputs: Any) -> None:
    for leaf in tree_leaves(outputs):
        if leaf is not None and not isinstance(leaf, _Tensor):
            raise TypeError(
                f"compute returned a {type(leaf).__name__}; a graph would return its capture-time value forever. "
                "Return tensors."
            )


# -- optimizer ---------------------------------------------------------------------------------------------------


def _make_capturable(optimizer: torch.optim.Optimizer | None, device_type: str) -> None:
    """Sets ``capturable=True`` where the optimizer has the option, moving existing ``step`` counts to the device.

    Adam-like optimizers keep ``state["step"]`` on the CPU unless capturable, and read it with a host sync. Groups
    with parameters off the graph's device type are left alone (capturable optimizers refuse CPU parameters);
    :func:`_check_optimizer` then refuses the capture.
    """
    if optimizer is None or "capturable" not in optimizer.defaults:
        return
    for group in optimizer.param_groups:
        if any(param.device.type != device_type for param in group["params"]):
            continue
        group["capturable"] = True
        for param in group["params"]:
            state = optimizer.state.get(param)
            step = None if state is None else state.get("step")
            if isinstance(step, _Tensor) and step.device != param.device:
                state["step"] = step.to(device=param.device, dtype=torch.float32)  # type: ignore[index]


def _check_optimizer(optimizer: torch.optim.Optimizer | None, device_type: str) -> None:
    """Raises if a parameter is off the graph's device type, or a state tensor off its parameter's device.

    A capture records only device work: CPU-side parameters and state (Adagrad's CPU ``step``, a non-capturable
    Adam's) would be updated once, at capture, and be frozen after.
    """
    if optimizer is None:
        return
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param.device.type != device_type:
                raise RuntimeError(f"the optimizer updates a parameter on {param.device}, outside the graph.")
    for param, state in optimizer.state.items():
        for name, value in state.items():
            if isinstance(value, _Tensor) and isinstance(param, _Tensor) and value.device != param.device:
                raise RuntimeError(
                    f"{type(optimizer).__name__} keeps state {name!r} on {value.device} for a parameter on "
                    f"{param.device}; a graph would freeze it. Use an optimizer with capturable=True support."
                )


def _snapshot_hparams(optimizer: torch.optim.Optimizer | None) -> tuple[tuple[int, dict[str, Any], str, Any], ...]:
    """``(index, group, name, value)`` for every hyper-parameter that a graph freezes (Python numbers)."""
    if optimizer is None:
        return ()
    return tuple(
        (index, group, name, value)
        for index, group in enumerate(optimizer.param_groups)
        for name, value in group.items()
        if name != "params" and _is_frozen_value(value)
    )


def _is_frozen_value(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(_is_frozen_value(item) for item in value)
    return type(value) in CONSTANT_TYPES


def _n_groups(optimizer: torch.optim.Optimizer | None) -> int:
    return 0 if optimizer is None else len(optimizer.param_groups)


def _changed_hparam(groups: list[dict[str, Any]], entry: _Entry) -> str | None:
    """The name of a hyper-parameter that differs from its capture-time value, or ``None``.

    Compares Python numbers and dict identities only (tensor hyper-parameters are read by the graph itself),
    so this never synchronizes with the device.
    """
    if len(groups) != entry.n_groups:
        return "param_groups"
    for index, group, name, value in entry.hparams:
        if groups[index] is not group:
            return "param_groups"
        now = group[name]
        # Same type first: comparing a tensor that replaced a number would need a host sync.
        if now is not value and (type(now) is not type(value) or now != value):
            return name
    return None
