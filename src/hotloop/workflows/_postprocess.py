"""Batch-level postprocessing: MONAI's dictionary transforms run on a whole batch, without decollating it.

MONAI's workflows decollate every batch into samples and run the ``postprocessing`` transform on each sample dict
(``{"image": [C, ...], "label": [1, ...], "pred": [C, ...]}``). :func:`batch_postprocessing` reads that transform
once and returns a function that does the same work on the batch-first dict (``[B, C, ...]``: the per-sample channel
dim 0 is the batch's dim 1), giving what MONAI gives after stacking its samples. It returns ``None`` whenever it
cannot prove that equivalence — a transform it does not know, a subclass, an argument it does not translate — so that
the caller keeps MONAI's per-sample path.

Translated: ``Compose`` (nested, not lazy, not ``unpack_items``), ``Activationsd`` (``sigmoid``, ``softmax`` with its
``dim``; ``other`` falls back), ``AsDiscreted`` (``argmax`` with ``dim`` / ``keepdim``, ``to_onehot``,
``threshold``, ``rounding="torchrounding"``, ``dtype``), ``CopyItemsd``, ``Identityd`` and ``Lambdad`` whose
``func`` is one of a few elementwise torch functions (``torch.sigmoid``, ``torch.abs``, ...; any other function
falls back). ``keys``, ``allow_missing_keys`` and per-key argument sequences are read as MONAI reads them; a missing
key raises MONAI's ``KeyError``.

Two modes:

- ``exact=True``: the same values and dtypes as MONAI, bit for bit. Discrete steps (argmax, one-hot, threshold,
  rounding) run batched — on CUDA through :mod:`hotloop.ops` (argmax → one-hot in one Triton pass), on the host as
  ``torch.max(dim)`` and one comparison per class (``torch.argmax`` is not vectorized over the channel dim: 12×
  slower): their results are integers, equal whatever the kernel. Activations (sigmoid, softmax, transcendental
  ``Lambdad`` functions) run with torch's own kernels on each sample's slice of the batch: torch's vectorized kernels
  round the elements at a tensor's tail differently from the rest (1 ulp), so only a call on the sample's own slice
  gives MONAI's bits, and a 1-ulp difference can move a later threshold or argmax. An activation followed by a
  discretization of the same key runs sample by sample, so the batch's probabilities are never stored.
- ``exact=False`` (fused; what the workflows use unless asked otherwise): activations run batched (one call, Triton
  on CUDA), and an activation followed by a discretization of the same key is fused: ``softmax`` → ``argmax[→
  one-hot]`` takes the argmax of the logits in one pass (:func:`hotloop.ops.softmax_argmax`), ``sigmoid`` →
  ``threshold`` is :func:`hotloop.ops.sigmoid_threshold`. The tolerance against MONAI: values after an activation
  within 1 ulp of the result dtype; a discretized voxel is MONAI's except where MONAI's float32 probabilities of
  two classes are equal (MONAI takes the lower index, the fused argmax the larger logit) or within an ulp of the
  threshold, and where a logit is NaN or +inf (MONAI's softmax is NaN there and its argmax 0; the fused argmax takes
  the first NaN, else the first +inf, as :mod:`hotloop.ops` does). Float16 and bfloat16 scores, whose probabilities
  MONAI rounds to the half dtype before its argmax or threshold (ties are then common), keep the exact chain.

In both modes a label outside ``[0, to_onehot)`` gives an all-zero one-hot voxel (:func:`hotloop.ops.one_hot`) where
MONAI's ``scatter_`` raises.

Importing this module does not import MONAI: it is imported by :func:`batch_postprocessing` when it is given a
transform other than ``None``.
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from hotloop import ops
from hotloop.collate import decollate_batch
from hotloop.workflows import _monai
from hotloop.workflows._monai import HAS_MONAI
from hotloop.workflows.utils import engine_apply_transform

__all__ = ["HAS_MONAI", "POSTPROCESSING_MODES", "BatchPostprocessing", "Postprocess", "batch_postprocessing"]

TensorFn = Callable[[torch.Tensor], torch.Tensor]

# Elementwise functions a ``Lambdad`` may hold. Exact ones give the same bits on a batch and on its samples; the
# transcendental ones are evaluated per sample in exact mode (torch's vectorized tails, see the module docstring).
_EXACT_ELEMENTWISE: frozenset[Callable[..., Any]] = frozenset(
    {torch.abs, torch.neg, torch.relu, torch.round, torch.floor, torch.ceil, torch.trunc, torch.sign}
)
_ROUNDED_ELEMENTWISE: frozenset[Callable[..., Any]] = frozenset({torch.sigmoid, torch.tanh, torch.exp, torch.log})
_HALF = (torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------------------------------------------------
# per-key operations on batched tensors
# ---------------------------------------------------------------------------------------------------------------------


def _batch_dim(dim: int, ndim: int) -> int:
    """The batch dim of a per-sample ``dim``, checked against the sample's rank as torch checks it per sample."""
    sample_ndim = ndim - 1
    if not -sample_ndim <= dim < sample_ndim:
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-sample_ndim}, {sample_ndim - 1}], but got {dim})"
        )
    return dim + 1 if dim >= 0 else dim


def _per_sample(fn: TensorFn, x: torch.Tensor) -> torch.Tensor:
    """``fn`` on each sample's slice of ``x``, stacked into a tensor typed like ``x`` (MONAI's dtype round trip)."""
    out = torch.empty_like(x)
    for sample, target in zip(x, out):
        target.copy_(fn(sample))
    return out


def _argmax(x: torch.Tensor, dim: int, keepdim: bool) -> torch.Tensor:
    """``torch.argmax(x, dim, keepdim)`` as int64 (the Triton kernel on CUDA, ``torch.max(dim)`` on the host)."""
    return ops.argmax(x, dim, keepdim, dtype=torch.long)


def _index_one_hot(labels: torch.Tensor, num_classes: int, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """One-hot of ``labels.long()`` whose ``dim`` has size 1; a label outside the classes gives an all-zero voxel."""
    return ops.one_hot(labels, num_classes, dim, dtype=dtype)


def _argmax_one_hot(x: torch.Tensor, dim: int, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``AsDiscrete(argmax=True, to_onehot=num_classes)``: one Triton pass on CUDA, no index map in memory."""
    if x.is_cuda:
        return ops.softmax_argmax(x, dim, to_onehot=num_classes, dtype=dtype)  # the argmax → one-hot kernel
    return _index_one_hot(_argmax(x, dim, keepdim=True), num_classes, dim, dtype)


def _one_hot(labels: torch.Tensor, num_classes: int, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """``monai.networks.one_hot(sample, num_classes, dtype, dim)`` on every sample of ``labels``."""
    sample_ndim = labels.ndim - 1
    if sample_ndim < dim + 1:  # MONAI appends singleton dims up to ``dim``
        labels = labels.reshape(*labels.shape, *[1] * (dim + 1 - sample_ndim))
    batch_dim = _batch_dim(dim, labels.ndim)
    if labels.shape[batch_dim] != 1:
        raise AssertionError("labels should have a channel with length equal to one.")
    return _index_one_hot(labels, num_classes, batch_dim, dtype)


@dataclass(frozen=True)
class _Activation:
    """``Activations(sigmoid, softmax, dim=dim)``: computed in float32, returned in the input's dtype."""

    sigmoid: bool
    softmax: bool
    dim: int
    exact: bool

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.sigmoid or self.softmax):
            return x.float().to(x.dtype)  # MONAI's float32 round trip, elementwise: exact on the batch
        if self.exact:
            return _per_sample(self._sample, x)
        if self.sigmoid:
            return ops.sigmoid(x)
        return ops.softmax(x, _batch_dim(self.dim, x.ndim))

    def _sample(self, sample: torch.Tensor) -> torch.Tensor:
        """One sample's activation in float32 (MONAI's computation, before its cast back)."""
        y = sample.float()
        if not (self.sigmoid or self.softmax):
            return y
        return torch.sigmoid(y) if self.sigmoid else torch.softmax(y, dim=self.dim)


@dataclass(frozen=True)
class _Discrete:
    """``AsDiscrete(argmax, to_onehot, threshold, rounding, dim=dim, keepdim=keepdim, dtype=dtype)``."""

    argmax: bool
    to_onehot: int | None
    threshold: float | None
    rounding: bool
    dim: int
    keepdim: bool
    dtype: torch.dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.argmax and self.to_onehot is not None and self.keepdim:
            # x: [B, C, *spatial] → one-hot [B, to_onehot, *spatial]
            x = _argmax_one_hot(x, _batch_dim(self.dim, x.ndim), self.to_onehot, self.dtype)
        else:
            if self.argmax:
                x = _argmax(x, _batch_dim(self.dim, x.ndim), self.keepdim)
            if self.to_onehot is not None:
                x = _one_hot(x, self.to_onehot, self.dim, self.dtype)
        return self.finish(x)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """The steps after argmax / one-hot: threshold, rounding, the output dtype."""
        if self.threshold is not None and not self.rounding:
            return ops.threshold(x, self.threshold, dtype=self.dtype)
        if self.threshold is not None:
            x = x >= self.threshold
        if self.rounding:
            x = torch.round(x)  # a bool tensor raises here, as it does in MONAI
        return x.to(self.dtype)


@dataclass(frozen=True)
class _Chain:
    """An activation then a discretization of the same key, the activation's output never stored for the batch.

    Exact: one sample at a time, as MONAI (its memory, its bits). Otherwise fused where :mod:`hotloop.ops` has the
    chain.
    """

    activation: _Activation
    discrete: _Discrete

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation.exact or x.dtype in _HALF:  # half probabilities tie often: MONAI's bits only
            return self._per_sample(x)
        return self._fused(x)

    def _per_sample(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) == 0:
            return self.discrete(self.activation(x))
        first = self._sample(x[0])
        out = first.new_empty((len(x), *first.shape))
        out[0] = first
        del first  # not alive beside the next sample's temporaries
        for index in range(1, len(x)):
            out[index] = self._sample(x[index])
        return out

    def _sample(self, sample: torch.Tensor) -> torch.Tensor:
        activated = self.activation._sample(sample).to(sample.dtype)  # MONAI casts back to the input's dtype
        return self.discrete(activated.unsqueeze(0))[0]  # a batch of one: the discretization's batch dims hold

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        act, disc = self.activation, self.discrete
        if not x.is_floating_point():  # MONAI rounds the activation back to an integer dtype: no shortcut
            return disc(act(x))
        if act.softmax and disc.argmax and (disc.to_onehot is None or disc.keepdim):
            dim = _batch_dim(act.dim, x.ndim)
            if dim == _batch_dim(disc.dim, x.ndim):  # softmax is monotonic along its dim: argmax of the logits
                if disc.to_onehot is None:
                    return disc.finish(_argmax(x, dim, disc.keepdim))
                return disc.finish(_argmax_one_hot(x, dim, disc.to_onehot, disc.dtype))
        if act.sigmoid and not disc.argmax and disc.to_onehot is None and disc.threshold is not None:
            if not disc.rounding:
                return ops.sigmoid_threshold(x, disc.threshold, dtype=disc.dtype)
        return disc(act(x))


@dataclass(frozen=True)
class _Elementwise:
    """A ``Lambdad`` function that maps each element on its own."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    per_sample: bool

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.per_sample or len(x) == 0:
            return self.fn(x)
        return torch.stack([self.fn(sample) for sample in x])


def _keep(x: torch.Tensor) -> torch.Tensor:
    return x


# ---------------------------------------------------------------------------------------------------------------------
# steps on the batch dict
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    """One key of one MONAI map transform: MONAI's ``key_iterator`` decides whether it runs."""

    owner: str  # the MONAI transform's class name, for its KeyError
    key: Hashable
    allow_missing: bool

    def run(self, data: dict[Hashable, Any]) -> None:
        if self.key in data:
            self.apply(data)
        elif not self.allow_missing:
            raise KeyError(
                f"Key `{self.key}` of transform `{self.owner}` was missing in the data and allow_missing_keys==False."
            )

    def apply(self, data: dict[Hashable, Any]) -> None:
        raise NotImplementedError

    def touches(self, key: Hashable) -> bool:
        """Whether this step reads or writes ``key``."""
        return key == self.key


@dataclass(frozen=True)
class _Map(_Step):
    """``data[dest] = op(data[key])``; ``dest=None`` computes nothing (``Lambdad(overwrite=False)``)."""

    op: TensorFn
    dest: Hashable | None

    def apply(self, data: dict[Hashable, Any]) -> None:
        if self.dest is None:
            return
        value = data[self.key]
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"batch postprocessing ({self.owner}): {self.key!r} should hold a batched torch.Tensor, "
                f"got {type(value).__name__}"
            )
        data[self.dest] = self.op(value)

    def touches(self, key: Hashable) -> bool:
        return key in (self.key, self.dest)


@dataclass(frozen=True)
class _Copy(_Step):
    """``CopyItemsd``: ``data[new_key]`` = a copy of ``data[key]``, which must not exist yet."""

    new_key: Hashable

    def apply(self, data: dict[Hashable, Any]) -> None:
        if self.new_key in data:
            raise KeyError(f"Key {self.new_key} already exists in data.")
        data[self.new_key] = _copy_item(data[self.key])

    def touches(self, key: Hashable) -> bool:
        return key in (self.key, self.new_key)


def _copy_item(value: Any) -> Any:
    """``MetaObj.copy_items``: tensors cloned, lists and dicts shallow-copied, the rest deep-copied."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, dict)):
        return value.copy()
    return copy.deepcopy(value)


class BatchPostprocessing:
    """A MONAI postprocessing transform translated to batch-first tensors: call it on the batch dict.

    Made by :func:`batch_postprocessing`; not meant to be built directly.

    Args:
        steps: The per-key steps, in MONAI's order.
    """

    def __init__(self, steps: tuple[_Step, ...]) -> None:
        self.steps = steps

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Postprocesses a batch.

        Args:
            data: Batch-first values by key, the postprocessed keys holding tensors (``{"pred": [B, C, ...]}``).

        Returns:
            A new dict: ``data`` with the postprocessed keys replaced or added.

        Raises:
            TypeError: ``data`` is not a mapping, or a postprocessed key does not hold a tensor.
            KeyError: A key is missing and its transform does not allow it, as in MONAI.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"batch postprocessing expects a dict of batched tensors, got {type(data).__name__}")
        out = dict(data)
        for step in self.steps:
            step.run(out)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.steps)!r})"


# ---------------------------------------------------------------------------------------------------------------------
# translation of MONAI transforms
# ---------------------------------------------------------------------------------------------------------------------

_Translator = Callable[[Any, bool], "list[_Step] | None"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _compose(transform: Any, exact: bool) -> list[_Step] | None:
    if transform.unpack_items or transform.lazy is True:
        return None
    steps: list[_Step] = []
    for inner in transform.transforms:
        translated = _translate(inner, exact)
        if translated is None:
            return None
        steps += translated
    return steps


def _activationsd(transform: Any, exact: bool) -> list[_Step] | None:
    from monai.transforms import Activations

    converter = transform.converter
    if type(converter) is not Activations or converter.sigmoid or converter.softmax or converter.other is not None:
        return None
    dim = converter.kwargs.get("dim", 0)
    if not _is_int(dim):
        return None
    steps: list[_Step] = []
    for key, sigmoid, softmax, other in zip(transform.keys, transform.sigmoid, transform.softmax, transform.other):
        if other is not None or (sigmoid and softmax):  # MONAI raises for both; ``other`` is opaque
            return None
        op = _Activation(bool(sigmoid), bool(softmax), dim, exact)
        steps.append(_Map("Activationsd", key, transform.allow_missing_keys, op, key))
    return steps


def _discrete(converter: Any, argmax: Any, to_onehot: Any, threshold: Any, rounding: Any) -> _Discrete | None:
    """One key's ``AsDiscrete`` call, its ``None`` arguments taken from the converter as MONAI does."""
    argmax = converter.argmax if argmax is None else argmax
    to_onehot = converter.to_onehot if to_onehot is None else to_onehot
    threshold = converter.threshold if threshold is None else threshold
    rounding = converter.rounding if rounding is None else rounding
    kwargs = converter.kwargs
    dim, keepdim, dtype = kwargs.get("dim", 0), kwargs.get("keepdim", True), kwargs.get("dtype", torch.float)
    if not (_is_int(dim) and isinstance(keepdim, bool) and isinstance(dtype, torch.dtype)):
        return None
    if to_onehot is not None and not (_is_int(to_onehot) and to_onehot >= 1):
        return None
    if (threshold is not None and not _is_number(threshold)) or rounding not in (None, "torchrounding"):
        return None
    return _Discrete(bool(argmax), to_onehot, threshold, rounding is not None, dim, keepdim, dtype)


def _asdiscreted(transform: Any, exact: bool) -> list[_Step] | None:
    from monai.transforms import AsDiscrete

    if type(transform.converter) is not AsDiscrete:
        return None
    steps: list[_Step] = []
    arguments = zip(transform.keys, transform.argmax, transform.to_onehot, transform.threshold, transform.rounding)
    for key, argmax, to_onehot, threshold, rounding in arguments:
        op = _discrete(transform.converter, argmax, to_onehot, threshold, rounding)
        if op is None:
            return None
        steps.append(_Map("AsDiscreted", key, transform.allow_missing_keys, op, key))
    return steps


def _copyitemsd(transform: Any, exact: bool) -> list[_Step] | None:
    keys, names = transform.keys, transform.names
    return [
        _Copy("CopyItemsd", key, transform.allow_missing_keys, new_key)
        for i in range(transform.times)
        for key, new_key in zip(keys, names[i * len(keys) : (i + 1) * len(keys)])
    ]


def _identityd(transform: Any, exact: bool) -> list[_Step] | None:
    return [_Map("Identityd", key, transform.allow_missing_keys, _keep, key) for key in transform.keys]


def _lambda_destination(key: Hashable, overwrite: Any) -> Hashable | None:
    """Where ``Lambdad`` stores its result: ``key`` for ``True``, a named key for a string, nowhere otherwise."""
    if isinstance(overwrite, bool):
        return key if overwrite else None
    return overwrite if isinstance(overwrite, str) else None


def _lambdad(transform: Any, exact: bool) -> list[_Step] | None:
    from monai.transforms import Lambda

    if type(transform._lambd) is not Lambda:
        return None
    steps: list[_Step] = []
    for key, func, overwrite in zip(transform.keys, transform.func, transform.overwrite):
        if func not in _EXACT_ELEMENTWISE and func not in _ROUNDED_ELEMENTWISE:
            return None
        dest = _lambda_destination(key, overwrite)
        op = _Elementwise(func, per_sample=exact and func in _ROUNDED_ELEMENTWISE)
        steps.append(_Map("Lambdad", key, transform.allow_missing_keys, op, dest))
    return steps


@functools.cache
def _translators() -> dict[type, _Translator]:
    """MONAI's transform classes (exact types: a subclass may change ``__call__``) and their translators."""
    if not HAS_MONAI:
        return {}
    from monai import config
    from monai.transforms import Activationsd, AsDiscreted, Compose, CopyItemsd, Identityd, Lambdad

    if getattr(config, "USE_META_DICT", False):  # MONAI then adds ``*_meta_dict`` keys after every map transform
        return {}
    return {
        Compose: _compose,
        Activationsd: _activationsd,
        AsDiscreted: _asdiscreted,
        CopyItemsd: _copyitemsd,
        Identityd: _identityd,
        Lambdad: _lambdad,
    }


def _translate(transform: Any, exact: bool) -> list[_Step] | None:
    translator = _translators().get(type(transform))
    return None if translator is None else translator(transform, exact)


def _fuse(steps: list[_Step]) -> list[_Step]:
    """Merges each activation with the next step on its key when that step discretizes it (see :class:`_Chain`)."""
    steps = list(steps)
    index = 0
    while index < len(steps):
        step = steps[index]
        if isinstance(step, _Map) and isinstance(step.op, _Activation) and step.dest == step.key:
            later = next((j for j in range(index + 1, len(steps)) if steps[j].touches(step.key)), None)
            if later is not None and _fusable(step, steps[later]):
                fused = _Chain(step.op, steps[later].op)  # type: ignore[attr-defined]
                steps[index] = _Map(step.owner, step.key, step.allow_missing, fused, step.key)
                del steps[later]
        index += 1
    return steps


def _fusable(first: _Map, second: _Step) -> bool:
    # Same ``allow_missing``: a missing key then raises (or is skipped) at the first step, as in MONAI.
    return (
        isinstance(second, _Map)
        and isinstance(second.op, _Discrete)
        and second.key == first.key
        and second.dest == first.key
        and second.allow_missing == first.allow_missing
    )


def batch_postprocessing(
    postprocessing: Callable[..., Any] | None, *, exact: bool = True
) -> BatchPostprocessing | None:
    """Translates a MONAI ``postprocessing`` transform to one function on the batch-first output dict.

    The returned function gives, on ``{"pred": [B, C, ...], "label": [B, 1, ...], ...}``, what MONAI gives by
    ``decollate_batch``, ``postprocessing`` on each sample dict and stacking the samples (see the module docstring
    for what is translated and for ``exact``).

    Args:
        postprocessing: The ``postprocessing`` argument of a MONAI workflow: a ``Compose`` of dict transforms, one
            dict transform, or ``None`` (the returned function then copies the dict unchanged).
        exact: ``True`` for MONAI's values bit for bit; ``False`` to fuse activations with the discretizations after
            them (faster; the tolerance is in the module docstring).

    Returns:
        The batch function, or ``None`` when the transform (or one of its arguments) is not one this module can prove
        equivalent — always for a transform other than ``None`` when MONAI is not installed: the caller then runs
        MONAI's per-sample path.

    Raises:
        TypeError: ``exact`` is not a bool.

    Examples:
        >>> import torch
        >>> from monai.transforms import Activationsd, AsDiscreted, Compose
        >>> post = Compose([Activationsd("pred", softmax=True), AsDiscreted(("pred", "label"), argmax=(True, False),
        ...                 to_onehot=3)])
        >>> fn = batch_postprocessing(post)
        >>> out = fn({"pred": torch.randn(2, 3, 8, 8), "label": torch.randint(0, 3, (2, 1, 8, 8))})
        >>> out["pred"].shape, out["label"].dtype
        (torch.Size([2, 3, 8, 8]), torch.float32)
        >>> batch_postprocessing(lambda d: d) is None
        True
    """
    if not isinstance(exact, bool):
        raise TypeError(f"exact should be a bool, got {type(exact).__name__}")
    if postprocessing is None:
        return BatchPostprocessing(())
    steps = _translate(postprocessing, exact)
    if steps is None:
        return None
    return BatchPostprocessing(tuple(_fuse(steps)))


# ---------------------------------------------------------------------------------------------------------------------
# the workflows' MODEL_COMPLETED handler
# ---------------------------------------------------------------------------------------------------------------------

#: ``postprocessing_mode`` of the workflows: the fused batch path, the exact batch path, or MONAI's own per-sample path.
POSTPROCESSING_MODES = ("fused", "exact", "per_sample")


class Postprocess:
    """A workflow's one ``MODEL_COMPLETED`` handler: postprocessing and decollation, as MONAI's two handlers do them.

    With ``decollate``, ``state.batch`` and ``state.output`` become per-sample lists (MONAI's ``Decollated``); the
    ``postprocessing`` transform then runs on each sample — or, where :func:`batch_postprocessing` translates it and
    ``mode`` is not ``"per_sample"``, once on the batch before decollation (``"fused"``: the fused translation, within
    the tolerance of the module docstring; ``"exact"``: MONAI's values bit for bit), which gives the same per-sample
    results, MetaTensor metadata included. A translation that reads a key only the batch holds switches the workflow
    to the per-sample path for good, with one warning. Without ``decollate`` the transform runs on the batch dicts as
    MONAI runs it. The handler holds no engine.

    Args:
        mode: one of :data:`POSTPROCESSING_MODES`.
        meta_type: MONAI's ``MetaTensor`` class, or None without MONAI.

    Raises:
        ValueError: ``mode`` is not one of :data:`POSTPROCESSING_MODES`.
    """

    def __init__(self, mode: str, meta_type: type | None) -> None:
        if mode not in POSTPROCESSING_MODES:
            raise ValueError(f"postprocessing_mode should be one of {POSTPROCESSING_MODES}, got {mode!r}")
        self.mode = mode
        self.meta_type = meta_type
        self.decollate = False
        self.transform: Callable[..., Any] | None = None
        self._batch: Callable[[dict], dict] | None = None
        self._translated = False

    def __call__(self, engine: Any) -> None:
        state = engine.state
        batch_post = self._batch_level()
        if batch_post is not None and isinstance(state.output, dict) and self._on_batch(state, batch_post):
            per_sample = None
        else:
            per_sample = self.transform
        if self.decollate:
            if isinstance(state.batch, (list, dict)):
                state.batch = decollate_batch(state.batch, detach=True)
            if isinstance(state.output, (list, dict)):
                state.output = decollate_batch(state.output, detach=True)
        if per_sample is not None:
            _apply_per_sample(state, per_sample)

    def _batch_level(self) -> Callable[[dict], dict] | None:
        """The batch-level translation, made on the first iteration (when ``decollate`` is final), or None."""
        if not self._translated:
            self._translated = True
            # Only where MONAI applies the transform per sample (after decollation) may the batch take its place.
            if self.decollate and self.transform is not None and self.mode != "per_sample":
                self._batch = batch_postprocessing(self.transform, exact=self.mode == "exact")
        return self._batch

    def _on_batch(self, state: Any, post: Callable[[dict], dict]) -> bool:
        """Run the batch-level postprocessing on ``state.output`` (plain tensors in, metadata put back after)."""
        output = state.output
        meta_type = self.meta_type
        # Detached, as MONAI's decollation (``detach=True``) hands them to its per-sample postprocessing.
        plain = {k: _detached(v, meta_type) for k, v in output.items()}
        try:
            result = post(plain)
        except KeyError as error:
            # The translation reads a key that only the batch holds: MONAI's per-sample path sees batch and output
            # merged. Switch this workflow to that path for good.
            warnings.warn(
                f"hotloop: batch-level postprocessing needs key {error} that is not in the output; "
                "using MONAI's per-sample postprocessing from now on",
                stacklevel=2,
            )
            self._batch = None
            return False
        for k, v in result.items():
            template = output.get(k)
            if meta_type is not None and isinstance(template, meta_type) and isinstance(v, torch.Tensor):
                v = _monai.like(v, template)  # the metadata MONAI's per-sample MetaTensors would carry
            output[k] = v
        return True


def _detached(value: Any, meta_type: type | None) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    if meta_type is not None and isinstance(value, meta_type):
        value = value.as_tensor()  # type: ignore[attr-defined]
    return value.detach()


def _apply_per_sample(state: Any, transform: Callable[..., Any]) -> None:
    """MONAI's postprocessing handler: the transform on each sample (or on the batch dicts without decollation)."""
    if not isinstance(state.batch, list) or not isinstance(state.output, list):
        state.batch, state.output = engine_apply_transform(batch=state.batch, output=state.output, transform=transform)
    else:
        for i, (b, o) in enumerate(zip(state.batch, state.output)):
            state.batch[i], state.output[i] = engine_apply_transform(b, o, transform)
